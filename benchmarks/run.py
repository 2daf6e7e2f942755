"""Run the benchmark matrix (systems x workloads x repetitions) and print a markdown report.

    python benchmarks/run.py [--reps R] [--only W1,W2,...] [--systems a,b] [--quick]
                             [--out results.jsonl] [--md report.md]

Each run is its own process tree, launched as that system's users launch a job (see
``systems.py``), with a per-run time limit; ``bench_job.py`` is the job.  Runs are interleaved
repetition by repetition (and the system order rotates) so that the load of this shared machine
drifts over every system alike.  Ratios compare each system with mpi4py.futures measured in the
same invocation; a variant (evocluster with ``--isolate``, ``--eval-timeout``, ``--quiet`` or
``--log``: W1, W2 and W2c only) also with the same system without the option.  Progress goes to
stderr, the report to stdout.  See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import procstat  # noqa: E402
import scale  # noqa: E402
import systems  # noqa: E402
import workloads  # noqa: E402

JOB = "benchmarks/bench_job.py"  # relative to REPO, the cwd of every run


@dataclass(frozen=True)
class Column:
    workload: str
    key: str
    label: str
    higher_is_better: bool | None  # None: a text column (W5's native attempt), no ratio
    ref_key: str | None = None  # the reference's figure the ratio divides by (default: key)
    engine: bool = False  # a figure of evocluster's engine: n/a on the other systems


COLUMNS = [
    Column("W1", "tasks_per_s", "W1 tasks/s, map only", True),
    Column("W1", "tasks_per_s_incl", "W1 tasks/s incl. start-up", True),
    Column("W2", "efficiency", "W2 efficiency", True),
    Column("W2c", "efficiency", "W2c efficiency, 1 worker/core", True),
    Column("W3", "efficiency", "W3 generational eff.", True),
    Column("W3", "eff_engine_draws", "W3 gen. eff., engine's draws", True),
    Column("W3", "eff_engine_calls", "W3 gen. eff., engine's calls", True),
    Column("W3", "async_util", "W3 async util.", True, "efficiency", engine=True),
    Column("W3", "det_util", "W3 async deterministic util.", True, "efficiency", engine=True),
    Column("W3", "gen_util", "W3 engine generational util.", True, "eff_engine_calls", engine=True),
    Column("W4", "MiB_per_s", "W4 MiB/s", True),
    Column("W5", "native", "W5 lambda, native", None),
    Column("W5", "map_s", "W5 lambda map s (workaround if native fails)", False),
    Column("W6", "worker_cpu_s", "W6 worker CPU-s per {idle:g} s idle", False),
    Column("S2", "startup_s", "start-up s, W=2", False),
    Column("S16", "startup_s", "start-up s, W=16", False),
]


# ------------------------------------------------------------------------------ machine
def _loadavg() -> list[float]:
    with open("/proc/loadavg") as fh:
        return [float(x) for x in fh.read().split()[:3]]


_VERSIONS = r"""
import json, multiprocessing, platform, sys
v = {"python": platform.python_version(), "platform": platform.platform()}
for name in ("numpy", "mpi4py", "cloudpickle", "evocluster"):
    try:
        v[name] = __import__(name).__version__
    except Exception as e:
        v[name] = f"n/a ({type(e).__name__})"
try:
    import mpi4py
    mpi4py.rc.initialize = False  # MPI_Get_library_version may be called before MPI_Init
    from mpi4py import MPI
    v["MPI library"] = " ".join(MPI.Get_library_version().split()[:4])
except Exception as e:
    v["MPI library"] = f"n/a ({type(e).__name__})"
v["mp start method"] = multiprocessing.get_start_method()
print(json.dumps(v))
"""


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "nproc": os.cpu_count(),
        "cpus usable": len(os.sched_getaffinity(0)),
    }
    try:
        with open("/proc/cpuinfo") as fh:
            models = [ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")]
        info["cpu"] = models[0] if models else "?"
    except OSError:
        info["cpu"] = "?"
    out = subprocess.run(
        [sys.executable, "-c", _VERSIONS], capture_output=True, text=True, cwd="/", check=False
    )
    info.update(json.loads(out.stdout) if out.returncode == 0 else {"versions": out.stderr[-300:]})
    if systems.openmpi_missing() is None:  # the -openmpi systems' interpreter and library
        out = subprocess.run(
            [systems.OPENMPI_PYTHON, "-c", _VERSIONS],
            capture_output=True,
            text=True,
            cwd="/",
            check=False,
        )
        if out.returncode == 0:
            theirs = json.loads(out.stdout)
            library = theirs["MPI library"].split(",")[0]
            info["system MPI"] = f"{library} (mpi4py {theirs['mpi4py']})"
    info["evocluster git"] = git_describe()
    info["byte-compiled"] = compile_bytecode()
    return info


def compile_bytecode() -> str:
    """Byte-compile evocluster and the benchmark scripts, as ``pip install`` does for an installed
    package: with an editable install and ``PYTHONDONTWRITEBYTECODE`` set, every rank of every run
    would otherwise compile evocluster's sources again (~30 ms of CPU per rank), while the peers
    load theirs compiled.  Existing ``.pyc`` files are read even where writing them is disabled."""
    out = subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(REPO / "evocluster"), str(HERE)],
        capture_output=True,
        text=True,
        check=False,
    )
    return "yes" if out.returncode == 0 else f"failed: {out.stderr[-200:]}"


def git_describe() -> str:
    """The repository's commit, ``-dirty`` if tracked files differ from it (what was measured)."""
    git = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    )
    return git.stdout.strip() or "?"


# ------------------------------------------------------------------------------ one run
def reap(tag: str) -> list[str]:
    """Kill, by pid, the processes of a finished run that are still alive; return their commands."""
    left = procstat.snapshot(tag)
    if left:
        time.sleep(0.5)  # a launcher's children may still be on their way out
        left = procstat.snapshot(tag)
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return [p.cmd[:120] for p in left.values()]


def run_one(
    system: str, wl: workloads.Workload, rep: int, quick: bool, tmp: Path
) -> dict[str, Any]:
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:10]}"
    out, log = tmp / f"{tag}.json", tmp / f"{tag}.log"
    job = [JOB, "--system", system, "--workload", wl.name, "--workers", str(wl.workers)]
    job += ["--out", str(out)] + (["--quick"] if quick else [])
    argv = systems.SYSTEMS[system].launch(sys.executable, job, wl.workers)
    env = dict(os.environ, BENCH_TAG=tag)
    load1 = _loadavg()[0]
    expired = threading.Event()

    def kill_tree(pid: int) -> None:  # the run's process group: launcher and all it started
        expired.set()
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)

    with open(log, "wb") as fh:
        env["BENCH_T_LAUNCH"] = repr(time.time())
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so that a timeout ends the tree
        )
        # a timer thread enforces the limit, so this thread can block in wait() (no polling)
        timer = threading.Timer(wl.timeout_s, kill_tree, (proc.pid,))
        timer.start()
        try:
            rc = proc.wait()
        except BaseException:  # Ctrl-C in the driver: do not leave the run behind
            kill_tree(proc.pid)
            proc.wait()
            reap(tag)
            raise
        finally:
            timer.cancel()
        timed_out = expired.is_set()
        wall = time.perf_counter() - t0
    leftovers = reap(tag)
    records = (
        [json.loads(ln) for ln in out.read_text().splitlines() if ln.strip()]
        if out.exists()
        else []
    )
    rec: dict[str, Any] = records[-1] if records else {"ok": False}
    if not records:
        why = f"timed out after {wl.timeout_s:g} s" if timed_out else f"no result (exit code {rc})"
        rec["error"] = why + "; output tail: " + log.read_text(errors="replace")[-800:].strip()
    elif timed_out:  # the job finished, but its launcher did not exit: a batch job would hang
        rec["ok"] = False
        rec["error"] = f"the job ended but its launcher was still running after {wl.timeout_s:g} s"
    if not rec.get("ok") and "traceback" not in rec:
        rec["output_tail"] = log.read_text(errors="replace")[-800:]
    rec.update(
        kind="run",
        system=system,
        workload=wl.name,
        workers=wl.workers,
        rep=rep,
        rc=rc,
        timed_out=timed_out,
        wall_s=wall,
        load1_before=load1,
        leftovers=leftovers,
        cmd=systems.describe_argv([x.replace(str(out.with_suffix("")), "RUN") for x in argv]),
    )
    runlog = Path(systems.RUN_LOG.format(run=out.with_suffix("")))
    if runlog.exists():  # a +log variant's: how many records the monitor wrote
        rec["log_records"] = len(runlog.read_text().splitlines())
    for f in (out, log, runlog):
        f.unlink(missing_ok=True)
    return rec


# ------------------------------------------------------------------------------ report
def fmt(x: float | None) -> str:
    if x is None:
        return "-"
    a = abs(x)
    if a >= 1e6:
        return f"{x / 1e6:.3g}M"
    if a >= 1e4:
        return f"{x / 1e3:.3g}k"
    if a >= 100:
        return f"{x:.0f}"
    if a >= 0.995 or a == 0:
        return f"{x:.3g}" if a < 10 else f"{x:.1f}"
    return f"{x:.2f}" if a >= 0.1 else f"{x:.3f}"


def _runs(records: list[dict[str, Any]], system: str, wl: str) -> list[dict[str, Any]]:
    return [r for r in records if r["system"] == system and r["workload"] == wl]


def _figure(r: dict[str, Any], key: str) -> float | None:
    """``r[key]`` of a successful run; a map call stopped at its cap (W5) counts as infinite."""
    if not r.get("ok"):
        return None
    if r.get("capped") and key == "map_s":
        return math.inf
    v = r.get(key)
    return v if isinstance(v, (int, float)) else None


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    vals = [v for v in (_figure(r, key) for r in runs) if v is not None]
    return statistics.median(vals) if vals else None


def _fig(x: float | None, cap: float | None) -> str:
    """:func:`fmt`, with ``> cap s`` for a capped (infinite) figure."""
    return f"> {cap:g} s" if x == math.inf else fmt(x)


def _ratio(v: float | None, rv: float | None, cap: float | None) -> str:
    """`` (xR)`` with R = v / rv; against a capped figure only a bound is known."""
    if v is None or not rv or (v == math.inf and rv == math.inf):
        return ""
    if rv == math.inf:  # rv > cap
        return f" (x<{v / cap:.2g})" if cap else ""
    if v == math.inf:
        return f" (x>{cap / rv:.3g})" if cap else ""
    return f" (x{v / rv:.2f})"


def _cap(runs: list[dict[str, Any]]) -> float | None:
    return next((r["cap_s"] for r in runs if isinstance(r.get("cap_s"), (int, float))), None)


def _spread(runs: list[dict[str, Any]], key: str, cap: float | None = None) -> str:
    """``median [min-max]`` of ``key`` over the successful runs, ``-`` if none has it."""
    good = [v for v in (_figure(r, key) for r in runs) if v is not None]
    if not good:
        return "-"
    sep = " to " if max(good) == math.inf else "-"  # "[0.4 to > 40 s]"
    lo, mid, hi = (_fig(x, cap) for x in (min(good), statistics.median(good), max(good)))
    return f"{mid} [{lo}{sep}{hi}]"


def _notes(r: dict[str, Any]) -> list[str]:
    notes = []
    if r.get("rc"):
        notes.append(f"rep {r['rep']}: exit code {r['rc']}")
    if r.get("leftovers"):
        notes.append(f"rep {r['rep']}: {len(r['leftovers'])} processes left behind")
    if r.get("warning"):
        notes.append(f"rep {r['rep']}: {r['warning']}")
    if r.get("native_error"):
        notes.append(f"rep {r['rep']}: native {r['native']}: {r['native_error'][:80]}")
    if r.get("capped"):
        notes.append(f"rep {r['rep']}: stopped at the {r['cap_s']:g} s cap, results not checked")
    return notes


#: issue 14's target: W2 efficiency with isolation; and as restated (benchmarks/RESULTS.md,
#: 2026-12-02): W2c (one worker per core) with isolation over W2c without
ISOLATION_TARGET = 0.95


#: issue 22's target: the progress display and the run log cost at most this fraction of W2's time
MONITOR_TARGET = 0.01


def variant_costs(records: list[dict[str, Any]], syss: list[str], cols: list[Column]) -> list[str]:
    """The cost of a launcher option: each variant's figures (medians) over those of the same
    system without it, measured in this same invocation; nothing when no variant ran."""
    pairs = [
        (s, base)
        for s in syss
        if (base := systems.SYSTEMS[s].baseline) is not None
        and any(r["system"] == s for r in records)
    ]
    cols = [c for c in cols if c.higher_is_better is not None and not c.engine]
    cols = [c for c in cols if any(_runs(records, s, c.workload) for s, _ in pairs)]
    if not pairs or not cols:
        return []
    ran = {s.rsplit("+", 1)[1] for s, _ in pairs}
    lines = [
        "",
        "## Cost of the launcher's options (variants)",
        "",
        "`value (xC)`: C = value / the same system without the option (its row above), in this "
        "same invocation (medians over the repetitions): the figure with the option over the "
        "figure without.  "
        + "; ".join(f"`+{v}`: {x.what}" for v, x in systems.VARIANTS.items() if v in ran)
        + ".",
        "",
        "| system | without | "
        + " | ".join(c.label + {True: " ↑", False: " ↓"}[c.higher_is_better] for c in cols)
        + " |",
    ]
    lines.append("|---|---|" + "---|" * len(cols))
    for s, base in pairs:
        cells = []
        for c in cols:
            runs = _runs(records, s, c.workload)
            bad = [r for r in runs if not r.get("ok")]
            if not runs:
                cells.append("-")
            elif bad:
                cells.append(f"FAIL ({len(bad)}/{len(runs)})")
            else:
                v, bv = _median(runs, c.key), _median(_runs(records, base, c.workload), c.key)
                cells.append(fmt(v) + _ratio(v, bv, None))
        without = base if base in syss else f"{base} (not run)"
        lines.append(f"| {s} | {without} | " + " | ".join(cells) + " |")
    iso = [(s, _median(_runs(records, s, "W2"), "efficiency")) for s, _ in pairs]
    iso = [(s, e) for s, e in iso if s.endswith("+isolate") and e is not None]
    if iso:
        lines += [
            "",
            f"Target (issue 14): W2 efficiency with isolation >= {ISOLATION_TARGET:g}: "
            + "; ".join(
                f"{s} {fmt(e)}, {'met' if e >= ISOLATION_TARGET else 'NOT met'}" for s, e in iso
            )
            + ".",
        ]
    per_core = [
        (
            s,
            _median(_runs(records, s, "W2c"), "efficiency"),
            _median(_runs(records, b, "W2c"), "efficiency"),
        )
        for s, b in pairs
        if s.endswith("+isolate")
    ]
    per_core = [(s, e, b) for s, e, b in per_core if e is not None and b]
    monitor = [
        (s, _median(_runs(records, s, "W2"), "map_s"), _median(_runs(records, b, "W2"), "map_s"))
        for s, b in pairs
        if s.endswith(("+quiet", "+log"))
    ]
    monitor = [(s, m, b) for s, m, b in monitor if m is not None and b]
    if monitor:
        lines += [
            "",
            f"Issue 22 (the progress display and the run log cost <= {MONITOR_TARGET:.0%} of W2's "
            "wall time): W2 map wall with the option / without - 1, medians: "
            + "; ".join(f"{s} {m / b - 1:+.1%}" for s, m, b in monitor)
            + " (the runs' spread: the detail table).",
        ]
    if per_core:
        lines += [
            "",
            f"Restated target: W2c (one worker per core) with isolation >= {ISOLATION_TARGET:g} "
            "x without: "
            + "; ".join(
                f"{s} x{e / b:.3f}, {'met' if e / b >= ISOLATION_TARGET else 'NOT met'}"
                for s, e, b in per_core
            )
            + ".",
        ]
    return lines


def read_previous(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """The ``meta`` line and the ``run`` records of a results file (``--out`` of an earlier
    invocation), or None if there is none to read."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    meta: dict[str, Any] = {}
    runs: list[dict[str, Any]] = []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:  # a run cut short: its last line torn
            continue
        if rec.get("kind") == "meta":
            meta = rec
        elif rec.get("kind") == "run":
            runs.append(rec)
    return (meta, runs) if runs else None


def _good(runs: list[dict[str, Any]], key: str) -> list[float]:
    vals = [_figure(r, key) for r in runs]
    return [v for v in vals if v is not None and math.isfinite(v)]


def regressions(
    records: list[dict[str, Any]], meta: dict[str, Any], previous: Any
) -> tuple[list[str], list[str]]:
    """Each figure of this invocation against the previous recorded one (same system, workload and
    figure, same sizes): the report's section, and the figures that fell by more than their noise.

    The noise of a figure is the larger of the two spreads of its repetitions (max - min, this run
    and the previous one): a median that moved the wrong way by more than that is flagged.  With
    a single repetition on both sides nothing measures the noise, and any fall is flagged (with
    that said)."""
    if previous is None:
        return [], []
    pmeta, prev = previous
    title = ["", "## Against the previous run", ""]
    if bool(pmeta.get("quick")) != bool(meta["quick"]):
        return [*title, "(not compared: one of the two is --quick)"], []
    git = pmeta.get("machine", {}).get("evocluster git")
    lines = [
        *title,
        f"Previous: {pmeta.get('started', '?')}, git {git}, load at its start "
        f"{' '.join(map(str, pmeta.get('load_start', [])))}.  Noise: the larger spread (max - min) "
        "of the repetitions of the two runs; **FELL**: the median moved the wrong way by more than "
        "that.",
        "",
        "| system | figure | now median [min-max] | previous median [min-max] | change | flag |",
        "|---|---|---|---|---|---|",
    ]
    flagged: list[str] = []
    idle = (workloads.QUICK if meta["quick"] else workloads.FULL).w6_idle_s
    for s in meta["systems"]:
        for c in COLUMNS:
            if c.higher_is_better is None or c.workload not in meta["workloads"]:
                continue
            label = c.label.format(idle=idle)
            now, before = (
                _good(_runs(records, s, c.workload), c.key),
                _good(_runs(prev, s, c.workload), c.key),
            )
            if not now or not before:
                continue
            m_now, m_before = statistics.median(now), statistics.median(before)
            noise = max(max(now) - min(now), max(before) - min(before))
            fall = (m_before - m_now) if c.higher_is_better else (m_now - m_before)
            change = (m_now - m_before) / m_before if m_before else 0.0
            flag = ""
            if fall > noise:
                flag = "**FELL**" + (" (1 rep each: noise unknown)" if noise == 0 else "")
                flagged.append(
                    f"{s} {label}: {fmt(m_now)} against {fmt(m_before)} "
                    f"({change:+.0%}, noise {fmt(noise)})"
                )
            lines.append(
                f"| {s} | {label} | {fmt(m_now)} [{fmt(min(now))}-"
                f"{fmt(max(now))}] | {fmt(m_before)} [{fmt(min(before))}-{fmt(max(before))}] "
                f"| {change:+.0%} | {flag} |"
            )
    return lines, flagged


def main_table(
    records: list[dict[str, Any]], meta: dict[str, Any], syss: list[str], cols: list[Column]
) -> list[str]:
    """The main table: a row per system that ran one of its workloads, its medians and their
    ratio to the reference; nothing without a column (``--only W7``: W7 has its own table)."""
    if not cols:
        return []
    idle = (workloads.QUICK if meta["quick"] else workloads.FULL).w6_idle_s
    ref = systems.REFERENCE
    shown = {c.workload for c in cols}
    lines = [""]
    lines.append(
        "| system | chunksize | "
        + " | ".join(
            c.label.format(idle=idle) + {True: " ↑", False: " ↓", None: ""}[c.higher_is_better]
            for c in cols
        )
        + " |"
    )
    lines.append("|---|---|" + "---|" * len(cols))
    for s in [s for s in syss if any(r["system"] == s and r["workload"] in shown for r in records)]:
        cells = []
        for c in cols:
            runs = _runs(records, s, c.workload)
            bad = [r for r in runs if not r.get("ok")]
            if c.engine and systems.SYSTEMS[s].executor is None:
                cells.append("n/a")
            elif not runs:
                cells.append("-")
            elif bad:
                cells.append(f"FAIL ({len(bad)}/{len(runs)})")
            elif c.higher_is_better is None:
                cells.append(", ".join(sorted({str(r.get(c.key)) for r in runs})))
            else:
                v = _median(runs, c.key)
                own = systems.SYSTEMS[s].reference
                ref_runs = _runs(records, own if own in syss else ref, c.workload)
                cap = _cap(runs + ref_runs)
                rv = _median(ref_runs, c.ref_key or c.key)
                cells.append(_fig(v, cap) + _ratio(v, rv, cap))
        lines.append(f"| {s} | {systems.SYSTEMS[s].chunksize} | " + " | ".join(cells) + " |")
    return lines


def report(records: list[dict[str, Any]], meta: dict[str, Any], previous: Any = None) -> str:
    syss = meta["systems"]
    wls = meta["workloads"]
    ref = systems.REFERENCE
    loads = [r["load1_before"] for r in records]
    info = meta["machine"]
    lines = [
        "# evocluster benchmarks"
        + (" (QUICK: reduced sizes, not comparable)" if meta["quick"] else ""),
        "",
        f"- date: {meta['started']}; total {meta['elapsed_s']:.0f} s; "
        f"{meta['reps']} repetition(s), figures are medians",
        f"- command: `{meta['command']}` (cwd: repository root)",
        f"- machine: nproc {info.get('nproc')} ({info.get('cpus usable')} usable), "
        f"{info.get('cpu')}, {info.get('platform')}",
        f"- python {info.get('python')}, numpy {info.get('numpy')}, mpi4py {info.get('mpi4py')}, "
        f"MPI library {info.get('MPI library')}, multiprocessing start method "
        f"{info.get('mp start method')}, "
        + (
            f"system MPI for the -openmpi rows {info['system MPI']}, "
            if "system MPI" in info
            else ""
        )
        + f"evocluster {info.get('evocluster')} "
        f"(git {info.get('evocluster git')}"
        + (
            f" at the start, {meta['git_end']} at the end"
            if meta.get("git_end", info.get("evocluster git")) != info.get("evocluster git")
            else ""
        )
        + ")",
        f"- load average: start {' '.join(map(str, meta['load_start']))}, "
        f"end {' '.join(map(str, meta['load_end']))}; 1-min load before each run: "
        + (
            f"median {statistics.median(loads):.2f}, min {min(loads):.2f}, max {max(loads):.2f}"
            if loads
            else "-"
        ),
        "",
        f"`value (xR)`: R = value / {ref} (chunksize 1, its default) in this same invocation. "
        "↑ higher is better (R > 1: better than the reference); ↓ lower is better (R < 1: better).",
    ]
    on_own = sorted({systems.SYSTEMS[s].reference for s in syss} & set(syss) - {ref})
    if on_own:
        lines[-1] += " Rows on the system's Open MPI divide by " + ", ".join(on_own) + "."
    cols = [c for c in COLUMNS if c.workload in wls]
    if any(c.engine for c in cols):
        lines.append(
            "W3's util. columns are evocluster's engine (n/a elsewhere): the same quantity as "
            "W3 generational eff., sum of the durations / (16 x wall), so their R divides by the "
            f"W3 generational eff. of {ref}."
        )
    lines += main_table(records, meta, syss, cols)
    lines += variant_costs(records, syss, cols)
    sizes = workloads.QUICK if meta["quick"] else workloads.FULL
    lines += scale.report(records, syss, sizes.w7_per_worker)
    lines += regressions(records, meta, previous)[0]

    lines += [
        "",
        "## Detail: median [min-max] over the successful runs",
        "",
        "| workload | system | figure | ok/runs | map s | start-up s | launcher wall s | notes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for w in wls:
        key = workloads.WORKLOADS[w].metric
        for s in syss:
            runs = _runs(records, s, w)
            if not runs:
                continue
            good = [v for v in (_figure(r, key) for r in runs) if v is not None]
            cap = _cap(runs)
            fig = _spread(runs, key, cap)
            notes = [n for r in runs for n in _notes(r)]
            if w == "W6" and good:
                notes.insert(0, f"master CPU-s {fmt(_median(runs, 'master_cpu_s'))}")
            keys = [*workloads.WORKLOADS[w].details, "log_records"]
            details = [(k, _spread(runs, k)) for k in keys]
            notes[:0] = [f"{k} {v}" for k, v in details if v != "-"]
            digests = sorted({r["det_digest"] for r in runs if r.get("det_digest")})
            if digests:  # steady_state(deterministic=True): one population, whatever the system
                notes.append("det digest " + ", ".join(digests))
            lines.append(
                f"| {w} | {s} | {key} {fig} | {len(good)}/{len(runs)} | "
                f"{_fig(_median(runs, 'map_s'), cap)} | {fmt(_median(runs, 'startup_s'))} | "
                f"{fmt(_median(runs, 'wall_s'))} | {'; '.join(notes)} |"
            )
    failures = [r for r in records if not r.get("ok")]
    if failures:
        lines += ["", "## Failures", ""]
        for r in failures:
            err = " ".join(str(r.get("error")).split())[:400]
            lines.append(f"- {r['system']} / {r['workload']} rep {r['rep']}: `{err}`")
    lines += ["", "## Command lines (cwd = repository root)", "", "```"]
    for s in syss:
        first = next((r for r in records if r["system"] == s), None)
        if first is not None:
            lines.append(first["cmd"])
    lines += [
        "```",
        "",
        "Other workloads: `--workload WL --workers W` with `-n W+1` (MPI) or `--workers W` "
        "(evocluster local); W = 2 for W1, W4, W5 and S2, 16 for W2, W3 and S16, 8 for W6.  run.py "
        "sets BENCH_TAG and BENCH_T_LAUNCH in the environment; RUN.json (and a +log variant's "
        "RUN.runlog.jsonl) are per-run temporary files.",
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ main
def _pick(
    arg: str | None, known: list[str], what: str, default: list[str] | None = None
) -> list[str]:
    """The names ``arg`` lists (``default``, else all, without it); a name that is the prefix of
    others before a ``-`` stands for them all (``W7``: ``W7-64x100ms``, ``W7-64x10ms``...)."""
    if not arg:
        return known if default is None else default
    chosen = []
    for x in (x.strip() for x in arg.split(",") if x.strip()):
        group = [k for k in known if k.startswith(f"{x}-")]
        chosen += group if group and x not in known else [x]
    unknown = [x for x in chosen if x not in known]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)}; known: {', '.join(known)}")
    return [x for x in known if x in chosen]


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=None, help="repetitions (default 3; 1 with --quick)")
    p.add_argument("--only", help="workloads, comma-separated: " + ",".join(workloads.WORKLOADS))
    p.add_argument("--systems", help="systems, comma-separated: " + ",".join(systems.SYSTEMS))
    p.add_argument("--quick", action="store_true", help="reduced sizes: a smoke test, not figures")
    p.add_argument("--out", default=str(REPO / "results" / "benchmarks.jsonl"), help="raw records")
    p.add_argument("--md", help="also write the report to this file")
    p.add_argument(
        "--previous",
        help="results file to compare with (default: --out as the previous invocation left it)",
    )
    a = p.parse_args(argv)
    reps = a.reps if a.reps is not None else (1 if a.quick else 3)
    every = list(workloads.WORKLOADS)
    wls = _pick(a.only, every, "workload", [w for w in every if workloads.WORKLOADS[w].default])
    syss = _pick(a.systems, list(systems.SYSTEMS), "system")
    missing = {s: why for s in syss if (why := systems.SYSTEMS[s].missing())}
    if a.systems and missing:  # asked for by name: say why it cannot run
        raise SystemExit("; ".join(f"{s} cannot run here: {why}" for s, why in missing.items()))
    for s, why in missing.items():
        print(f"left out {s}: {why}", file=sys.stderr)
    syss = [s for s in syss if s not in missing]
    meta: dict[str, Any] = {
        "kind": "meta",
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": shlex.join(["python", "benchmarks/run.py", *argv]),
        "reps": reps,
        "quick": a.quick,
        "workloads": wls,
        "systems": syss,
        "machine": machine_info(),
        "load_start": _loadavg(),
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = read_previous(Path(a.previous) if a.previous else out)  # before it is replaced
    out.write_text(json.dumps(meta) + "\n")
    records: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="evobench-") as tmp:
        for rep in range(1, reps + 1):
            for w in wls:
                wl = workloads.WORKLOADS[w]
                k = (rep - 1) % len(syss)
                for s in syss[k:] + syss[:k]:
                    # a variant runs W1, W2 and W2c only; W7 runs on the MPI systems only
                    if not systems.SYSTEMS[s].runs(w) or not wl.runs_on(s):
                        continue
                    rec = run_one(s, wl, rep, a.quick, Path(tmp))
                    records.append(rec)
                    with out.open("a") as fh:
                        fh.write(json.dumps(rec, default=str) + "\n")
                    val = rec.get(wl.metric)
                    status = "ok" if rec.get("ok") else "FAIL " + str(rec.get("error"))[:150]
                    more = "".join(
                        f"{c.key}={fmt(rec[c.key])} "
                        for c in COLUMNS
                        if c.workload == w and c.engine and isinstance(rec.get(c.key), float)
                    )
                    print(
                        f"[{time.perf_counter() - t0:5.0f}s] rep {rep}/{reps} {w:<3} {s:<21} "
                        f"{wl.metric}={fmt(val) if isinstance(val, (int, float)) else '-'} {more}"
                        f"start-up={fmt(rec.get('startup_s'))} load={rec['load1_before']:.2f} "
                        f"{status} {' '.join(_notes(rec))}",
                        file=sys.stderr,
                        flush=True,
                    )
    meta.update(elapsed_s=time.perf_counter() - t0, load_end=_loadavg(), git_end=git_describe())
    with out.open("a") as fh:
        fh.write(
            json.dumps(
                {"kind": "end", **{k: meta[k] for k in ("elapsed_s", "load_end", "git_end")}}
            )
            + "\n"
        )
    text = report(records, meta, previous)
    print(text)
    for fell in regressions(records, meta, previous)[1]:
        print(f"FELL against the previous run: {fell}", file=sys.stderr)
    if a.md:
        Path(a.md).write_text(text)
    print(f"raw records: {out}", file=sys.stderr)
    return 0 if all(r.get("ok") for r in records) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
