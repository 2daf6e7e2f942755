"""``python -m evocluster report LOG [-o PNG] [--run N]``: what a run log says, after the run.

The summary (stdout) has a few lines per run of the log (a requeued job appends a run): when,
the backend, workers and hosts, duration, evaluations and their rate, failures, checkpoints,
each engine loop's generations and best fitness, the exit code (or that the run was cut short),
and the workers' mean utilisation with the least and most busy worker.

With ``-o PNG`` it draws one run (the last, or ``--run N``) with matplotlib (Agg, imported only
then; the ``plot`` extra): above, the convergence (best and mean fitness of each generation; for
a run of plain maps, the evaluations done over time), and below, on the same time axis, a lane
per worker shaded by the fraction of each log interval it spent in the fitness, failures marked
on the lane of the worker that had them.  More than :data:`MAX_LANES` workers are drawn as lanes
of hosts or of groups of workers (the title says which).

Busy seconds reach the log when a result comes home, so an evaluation longer than the log's
interval would read as an idle interval and then one busier than possible: the busy time that
does not fit an interval is carried back to the intervals before it (``_fractions``).

Errors the user can act on (no file, not a run log, a newer schema, an empty file, matplotlib
missing) are one line, ``evocluster: report: ...``, and exit code 2.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._progress import duration
from ._runlog import Run, RunLogError, read

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["MAX_LANES", "Timeline", "main", "summary", "timeline"]

#: at most this many lanes in the picture: more workers are drawn per host or in groups
MAX_LANES = 64

#: the picture's resolution (dots per inch): a 10-inch-wide figure is 1000 pixels
DPI = 100

PLOT_EXTRA = "pip install 'evocluster[plot]'"


class ReportError(Exception):
    """What the user can act on: said in one line, exit code 2."""


# ---------------------------------------------------------------------------- the timeline
@dataclass
class Lane:
    """One lane of the picture: a worker, or the workers of a host or a group."""

    label: str
    members: list[int]  # indices into Pool.workers


@dataclass
class Pool:
    """One pool's workers, from its ``workers`` records: a time edge per record (the first
    interval starts at the log's tick before the pool's first record) and, per worker, the
    fraction of each interval it was busy (NaN before it first answered)."""

    number: int
    backend: str
    names: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    edges: list[float] = field(default_factory=list)  # len(busy[i]) + 1
    cumulative: list[list[float | None]] = field(default_factory=list)  # per record, per worker
    busy: list[list[float]] = field(default_factory=list)  # per worker, per interval
    lanes: list[Lane] = field(default_factory=list)

    def utilisation(self, worker: int) -> float | None:
        """The worker's busy seconds over the time since its first interval began."""
        fractions = self.busy[worker]
        spans = [
            (f, self.edges[k + 1] - self.edges[k])
            for k, f in enumerate(fractions)
            if not math.isnan(f)
        ]
        total = sum(dt for _, dt in spans)
        return sum(f * dt for f, dt in spans) / total if total > 0 else None


@dataclass
class Timeline:
    """The workers of one run: its pools, how they are laned, and where its failures are."""

    pools: list[Pool]
    grouping: str  # "" (a lane per worker), or how lanes are made: "per host", "of 32 workers"
    failures: list[tuple[float, int, int | None]]  # time, pool index, lane (None: unmatched)

    @property
    def workers(self) -> int:
        return sum(len(p.names) for p in self.pools)


def _fractions(edges: list[float], cumulative: list[float | None]) -> list[float]:
    """Per interval, the fraction of it one worker was busy, from its cumulative busy seconds
    (None before its first result).  Busy time that does not fit an interval (an evaluation
    longer than it, counted when it ended) is carried back to the intervals before it."""
    n = len(cumulative)
    deltas: list[float] = []
    previous = 0.0
    for value in cumulative:
        if value is None:
            deltas.append(math.nan)
            continue
        deltas.append(max(0.0, value - previous))
        previous = value
    out = [math.nan] * n
    carry = 0.0
    for k in range(n - 1, -1, -1):
        if math.isnan(deltas[k]):
            continue
        span = max(edges[k + 1] - edges[k], 1e-9)
        busy = deltas[k] + carry
        carry = max(0.0, busy - span)
        out[k] = min(busy, span) / span
    return out


def _pools(run: Run) -> list[Pool]:
    pools: dict[int, Pool] = {}
    # the log's ticks: an interval record, then a workers record per pool; a pool's first
    # interval begins at the tick before the one of its first record (or at the run's start)
    ticks = [0.0, 0.0]
    for r in run.records:
        kind = r.get("record")
        if kind == "interval":
            ticks = [ticks[1], float(r.get("t") or 0.0)]
            continue
        if kind != "workers" or not isinstance(r.get("busy"), list):
            continue
        number = int(r.get("pool") or 0)
        pool = pools.get(number)
        t = float(r.get("t") or 0.0)
        if pool is None:
            pool = pools[number] = Pool(number, str(r.get("backend") or "?"))
            pool.edges.append(min(ticks[0], t))
        names, hosts = r.get("names"), r.get("hosts")
        if isinstance(names, list):
            pool.names = [str(n) for n in names]
            pool.hosts = [str(h or "?") for h in hosts] if isinstance(hosts, list) else []
        busy = [float(b) if isinstance(b, (int, float)) else None for b in r["busy"]]
        while len(pool.names) < len(busy):  # a record without names: label by position
            pool.names.append(f"worker {len(pool.names) + 1}")
        pool.edges.append(max(t, pool.edges[-1]))
        pool.cumulative.append(busy)
    for pool in pools.values():
        pool.hosts += ["?"] * (len(pool.names) - len(pool.hosts))
        for w in range(len(pool.names)):
            column = [row[w] if w < len(row) else None for row in pool.cumulative]
            pool.busy.append(_fractions(pool.edges, column))
    return [pools[k] for k in sorted(pools)]


def _lay_out(pools: list[Pool], budget: int) -> str:
    """Put the pools' workers in lanes: one each if they fit ``budget`` lanes in all; else one
    per host if the hosts do, else groups of consecutive workers.  Returns how (for titles)."""
    total = sum(len(p.names) for p in pools)
    if total <= budget:
        for p in pools:
            p.lanes = [Lane(p.names[w], [w]) for w in _in_order(p.names)]
        return ""
    hosts = sum(len(set(p.hosts)) for p in pools)
    if 1 < hosts <= budget:
        for p in pools:
            p.lanes = [
                Lane(f"{h} ({p.hosts.count(h)})", [w for w, x in enumerate(p.hosts) if x == h])
                for h in dict.fromkeys(p.hosts)
            ]
        return "per host"
    size = math.ceil(total / budget)
    for p in pools:
        order = _in_order(p.names)
        p.lanes = [
            Lane(
                f"{p.names[order[i]]} and {len(order[i : i + size]) - 1} more", order[i : i + size]
            )
            for i in range(0, len(order), size)
        ]
    return f"of {size} workers"


def _in_order(names: list[str]) -> list[int]:
    """The workers' indices in the order of their names, numbers as numbers (rank 2 before
    rank 10): the log lists them in the order they first answered."""
    return sorted(range(len(names)), key=lambda w: _natural(names[w]))


def _natural(name: str) -> list[tuple[int, str]]:
    return [(int(part), "") if part.isdigit() else (0, part) for part in re.split(r"(\d+)", name)]


def _worker_of(pools: list[Pool], label: str, t: float) -> tuple[int, int] | None:
    """(pool index, worker index) of a failure's ``worker`` label: a name the log gave, alone
    or followed by where it ran (``local worker 1 of 2 on host h (pid 7)``); of several pools,
    the latest one begun by ``t``."""
    found: list[tuple[int, int]] = []
    for i, pool in enumerate(pools):
        for w, name in enumerate(pool.names):
            if label == name or label.startswith(name + " "):
                found.append((i, w))
    if not found:
        return None
    begun = [f for f in found if pools[f[0]].edges[0] <= t]
    return (begun or found)[-1]


def timeline(run: Run, budget: int = MAX_LANES) -> Timeline:
    """The run's workers in at most ``budget`` lanes (some more if there are many pools) and
    its failures placed on them."""
    pools = _pools(run)
    grouping = _lay_out(pools, max(1, budget))
    failures: list[tuple[float, int, int | None]] = []
    for r in run.of("failure"):
        t = float(r.get("t") or 0.0)
        where = _worker_of(pools, str(r.get("worker") or ""), t)
        if where is None:
            failures.append((t, 0, None))
            continue
        pool, worker = where
        lane = next(i for i, lane in enumerate(pools[pool].lanes) if worker in lane.members)
        failures.append((t, pool, lane))
    return Timeline(pools, grouping, failures)


# ---------------------------------------------------------------------------- the summary
def _number(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.6g}"
    return str(x)


def _seconds(run: Run) -> float:
    end = run.ended
    if end is not None and isinstance(end.get("seconds"), (int, float)):
        return float(end["seconds"])
    return max((float(r.get("t") or 0.0) for r in [run.start, *run.records]), default=0.0)


def _figure(run: Run, name: str) -> Any:
    """``name`` (evaluations, failed, retried) from the end record, else the last interval."""
    for record in (run.ended, run.last("interval")):
        if record is not None and record.get(name) is not None:
            return record[name]
    return None


def _hosts(run: Run, tl: Timeline) -> dict[str, int]:
    end = run.ended
    if end is not None and isinstance(end.get("hosts"), dict) and end["hosts"]:
        return {str(k): int(v) for k, v in end["hosts"].items()}
    hosts: dict[str, int] = {}
    for pool in tl.pools:
        for h in pool.hosts:
            hosts[h] = hosts.get(h, 0) + 1
    return hosts


def _loops(run: Run) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Each engine loop (its ``loop`` record) with its generation rows."""
    out: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    for r in run.records:
        kind = r.get("record")
        if kind == "loop":
            out.append((r, []))
        elif kind == "generation":
            if not out:
                out.append(({"loop": "?"}, []))
            out[-1][1].append(r)
    return out


def _loop_line(loop: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    text = f"  loop {loop.get('loop') or '?'}"
    if loop.get("seed") is not None:
        text += f" (seed {loop['seed']})"
    if not rows:
        return text + ": no generation"
    first, last = rows[0].get("generation"), rows[-1].get("generation")
    text += f": generations {first}-{last}"
    if loop.get("generations"):
        text += f" of {loop['generations']}"
    best = last_best(rows)
    if best is not None:
        text += f", best {_number(best)}"
    return text


def last_best(rows: list[dict[str, Any]]) -> float | None:
    """The last row's best fitness (single objective), or None."""
    best = rows[-1].get("best") if rows else None
    return float(best) if isinstance(best, (int, float)) else None


def _utilisation_line(tl: Timeline) -> str | None:
    per = [
        (u, pool.names[w])
        for pool in tl.pools
        for w in range(len(pool.names))
        if (u := pool.utilisation(w)) is not None
    ]
    if not per:
        return None
    mean = sum(u for u, _ in per) / len(per)
    low, high = min(per), max(per)
    return (
        f"  utilisation: mean {100 * mean:.0f}% of {len(per)} workers, least busy {low[1]} "
        f"({100 * low[0]:.0f}%), most busy {high[1]} ({100 * high[0]:.0f}%)"
    )


def describe(run: Run, number: int) -> list[str]:
    """The summary's lines for one run (``number`` counts from 1)."""
    start = run.start
    tl = timeline(run)
    backend = start.get("backend") or ", ".join(sorted({p.backend for p in tl.pools})) or "?"
    workers = start.get("workers")
    if not isinstance(workers, int):
        workers = max((len(p.names) for p in tl.pools), default=0)
    hosts = _hosts(run, tl)
    shown = ", ".join(f"{h} ({n})" for h, n in list(hosts.items())[:4])
    if len(hosts) > 4:
        shown += f" and {len(hosts) - 4} more"
    job = Path(str(start.get("job"))).name if start.get("job") else None
    lines = [
        f"run {number}: {start.get('time') or '?'}"
        + (f", {job}" if job else "")
        + f", backend {backend}, {workers} workers, "
        + (f"{len(hosts)} host(s): {shown}" if hosts else "hosts unknown")
    ]
    seconds = _seconds(run)
    evaluations = _figure(run, "evaluations")
    text = f"  duration {duration(seconds)} ({seconds:.1f} s)"
    if isinstance(evaluations, int):
        rate = evaluations / seconds if seconds > 0 else 0.0
        text += f", {evaluations} evaluations, {rate:.{0 if rate >= 100 else 1}f} evaluations/s"
    lines.append(text)
    failed, retried = _figure(run, "failed") or 0, _figure(run, "retried") or 0
    checkpoints = run.of("checkpoint")
    written = sum(1 for c in checkpoints if c.get("action") == "written")
    resumed = sum(1 for c in checkpoints if c.get("action") == "resumed")
    text = f"  failures {failed}" + (f" ({retried} evaluated again)" if retried else "")
    text += f", checkpoints {written} written" + (f", {resumed} resumed" if resumed else "")
    lines.append(text)
    lines += [_loop_line(loop, rows) for loop, rows in _loops(run)]
    end = run.ended
    if end is None:
        lines.append("  no end record: the run was cut short")
    elif end.get("exit_code") is None:
        lines.append("  exit code not logged (the job ran without the launcher)")
    else:
        lines.append(f"  exit code {end['exit_code']}")
    used = _utilisation_line(tl)
    if used is not None:
        lines.append(used)
    return lines


def summary(path: str, runs: list[Run], note: str, drawn: int | None = None) -> str:
    """The whole summary: the log, its note (a torn line skipped), each run's lines."""
    head = f"{path}: {len(runs)} run(s)"
    if drawn is not None:
        head += f"; the picture shows run {drawn}"
    lines = [head]
    if note:
        lines.append(f"{path}: {note}")
    for i, run in enumerate(runs, 1):
        lines += describe(run, i)
    return "\n".join(lines)


# ---------------------------------------------------------------------------- the picture
def _convergence(ax: Axes, run: Run) -> None:
    loops = [(loop, rows) for loop, rows in _loops(run) if rows]
    if loops:
        labelled = False
        for loop, rows in loops:
            t = [float(r.get("t") or 0.0) for r in rows]
            best = [r.get("best") for r in rows]
            what = "best"
            if all(b is None for b in best):  # several objectives: the first one's minimum
                best = [(r.get("min") or [None])[0] for r in rows]
                what = "min of objective 1"
            mean = [(r.get("mean") or [None])[0] for r in rows]
            for values, color, width, label in (
                (mean, "tab:orange", 1.2, "mean"),
                (best, "tab:blue", 1.8, what),
            ):
                ax.plot(
                    t,
                    _floats(values),
                    color=color,
                    marker=".",
                    ms=3,
                    lw=width,
                    label=None if labelled else label,
                )
            labelled = True
            if len(loops) > 1:
                ax.axvline(t[0], color="grey", lw=0.8, ls="--")
                ax.annotate(
                    f" {loop.get('loop') or '?'}",
                    (t[0], 1.0),
                    xycoords=("data", "axes fraction"),
                    va="top",
                    fontsize=8,
                    color="grey",
                )
        values = [v for _, rows in loops for v in _floats(_column(rows)) if not math.isnan(v)]
        if values and min(values) > 0 and max(values) > 100 * min(values):
            ax.set_yscale("log")  # orders of magnitude: the late generations stay visible
        ax.set_ylabel("fitness")
        ax.set_title("Convergence: best and mean fitness of each generation")
        ax.legend(loc="best", fontsize=8)
        return
    intervals = run.of("interval")
    if intervals:
        # from none at the start: a run shorter than --log-every has one interval, its last
        t = [float(run.start.get("t") or 0.0)] + [float(r.get("t") or 0.0) for r in intervals]
        evaluations = [0] + [r.get("evaluations") or 0 for r in intervals]
        ax.plot(t, evaluations, color="tab:blue", marker=".", ms=3, label="evaluations done")
        ax.set_ylim(bottom=0)
        ax.set_ylabel("evaluations")
        ax.set_title("Evaluations done (no engine loop: no generations)")
        ax.legend(loc="upper left", fontsize=8)
        return
    ax.set_title("No generation or interval records in this run")


def _column(rows: list[dict[str, Any]]) -> list[Any]:
    """The rows' means and bests (or first objective's minima): what the plot shows."""
    return [r.get("best") for r in rows] + [
        (r.get(k) or [None])[0] for r in rows for k in ("mean", "min")
    ]


def _floats(values: list[Any]) -> list[float]:
    return [float(v) if isinstance(v, (int, float)) else math.nan for v in values]


def _timeline(ax: Axes, tl: Timeline) -> Any:
    """Draw the lanes (top to bottom: pools in order, their lanes in order); return the image
    for the colour bar, or None when no worker was logged."""
    import numpy as np

    image: Any = None
    y = 0
    ticks: list[tuple[float, str]] = []
    bottoms: list[int] = []  # each pool's first lane
    for pool in tl.pools:
        bottoms.append(y)
        if not pool.lanes or len(pool.edges) < 2:
            continue
        grid = np.array(pool.busy, dtype=float)  # worker x interval
        rows = [_lane_mean(grid[lane.members]) for lane in pool.lanes]
        values = np.ma.masked_invalid(np.array(rows))
        lanes_y = np.arange(y, y + len(pool.lanes) + 1) - 0.5
        image = ax.pcolormesh(
            np.array(pool.edges), lanes_y, values, cmap=_cmap(), vmin=0.0, vmax=1.0, shading="flat"
        )
        prefix = f"pool {pool.number}: " if len(tl.pools) > 1 else ""
        ticks += [(y + i, prefix + lane.label) for i, lane in enumerate(pool.lanes)]
        y += len(pool.lanes)
    unmatched = [t for t, _, lane in tl.failures if lane is None]
    if unmatched:
        ticks.append((y, "worker not named"))
    placed = [(t, bottoms[p] + lane) for t, p, lane in tl.failures if lane is not None]
    points = placed + [(t, y) for t in unmatched]
    if points:
        ax.scatter(
            [p[0] for p in points],
            [p[1] for p in points],
            marker="x",
            color="red",
            s=22,
            linewidths=1.2,
            zorder=3,
            label=f"failure ({len(points)})",
        )
        ax.legend(loc="upper right", fontsize=8, framealpha=0.9)
    lanes = len(ticks)
    ax.set_ylim(lanes - 0.5 if lanes else 0.5, -0.5)  # the first lane on top
    step = max(1, math.ceil(lanes / 32))  # at most ~32 labels: readable at any lane count
    shown = ticks[::step]
    ax.set_yticks([p for p, _ in shown], [label for _, label in shown], fontsize=7)
    ax.set_xlabel("seconds since the run started")
    what = "a lane per worker" if not tl.grouping else f"lanes {tl.grouping}"
    count = tl.workers
    ax.set_title(
        f"Worker utilisation: {count} workers, {what}"
        + (", mean of each lane's workers" if tl.grouping else "")
        + "; dark = busy in the fitness, light = idle",
        fontsize=10,
    )
    if not ticks:
        ax.text(0.5, 0.5, "no workers record in this run", transform=ax.transAxes, ha="center")
    return image


def _lane_mean(grid: Any) -> Any:
    """Per interval, the mean busy fraction of a lane's workers that had begun (NaN if none:
    ``nanmean`` says so with a warning)."""
    import numpy as np

    known = ~np.isnan(grid)
    counts = known.sum(axis=0)
    sums = np.where(known, grid, 0.0).sum(axis=0)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _cmap() -> Any:
    from matplotlib import colormaps

    cmap = colormaps["Blues"].copy()
    cmap.set_bad("white")  # before a worker's first result
    return cmap


def draw(run: Run, number: int, runs: int, out: str) -> None:
    """Write the picture of ``run`` (number ``number`` of ``runs``) to ``out`` as PNG."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ReportError(f"-o needs matplotlib, which is not installed: {PLOT_EXTRA}") from None
    tl = timeline(run)
    lanes = sum(len(p.lanes) for p in tl.pools) + any(lane is None for *_, lane in tl.failures)
    lane_inches = min(7.0, max(1.6, 0.2 * lanes))
    fig = Figure(figsize=(10, 3.2 + lane_inches + 0.9), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3.2, lane_inches])
    _convergence(top, run)
    top.grid(True, alpha=0.3)
    image = _timeline(bottom, tl)
    if image is not None:
        bar = fig.colorbar(image, ax=bottom, fraction=0.03, pad=0.01)
        bar.set_label("busy fraction", fontsize=8)
    start = run.start
    job = Path(str(start.get("job"))).name if start.get("job") else "job"
    backend = start.get("backend") or ", ".join(sorted({p.backend for p in tl.pools})) or "?"
    fig.suptitle(
        f"evocluster run {number} of {runs}: {job}, backend {backend}, {duration(_seconds(run))}"
        + ("" if run.ended else " (cut short: no end record)"),
        fontsize=12,
    )
    try:
        fig.savefig(out, dpi=DPI, format="png")
    except OSError as e:
        raise ReportError(f"cannot write {out}: {e.strerror or e}") from None


# ---------------------------------------------------------------------------- the command
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m evocluster report",
        description="Summarise a run log (--log) and, with -o, draw its convergence and the "
        "workers' utilisation to a PNG (needs matplotlib: " + PLOT_EXTRA + ").",
    )
    parser.add_argument("log", metavar="LOG", help="the run log (JSON Lines)")
    parser.add_argument("-o", "--output", metavar="PNG", help="write the picture there")
    parser.add_argument(
        "--run", type=int, metavar="N", help="the run to draw (from 1; default: the last)"
    )
    return parser


def main(argv: list[str]) -> int:
    """``report LOG [-o PNG] [--run N]``; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        runs, note = _read(args.log)
        drawn = len(runs) if args.run is None else args.run
        if not 1 <= drawn <= len(runs):
            raise ReportError(f"--run {args.run}: {args.log} holds run(s) 1 to {len(runs)}")
        if args.output:
            draw(runs[drawn - 1], drawn, len(runs), args.output)
    except ReportError as e:
        print(f"evocluster: report: {e}", file=sys.stderr)
        return 2
    print(summary(args.log, runs, note, drawn if args.output else None))
    if args.output:
        print(f"picture of run {drawn}: {args.output}")
    return 0


def _read(path: str) -> tuple[list[Run], str]:
    if not os.path.exists(path):
        raise ReportError(f"no such file: {path}")
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise ReportError(f"{path} is empty: no run was logged (was --log given to the run?)")
    try:
        return read(path)
    except RunLogError as e:
        raise ReportError(str(e)) from None
