"""W7 (scale) in the report: a row per ``W7-<N>x<ms>ms`` workload that ran, the systems side by
side, against issue 24's targets.

    python benchmarks/run.py --only W7            # 64, 128 and 256 worker ranks x 100 and 10 ms
    python benchmarks/run.py --only W7-64x100ms,W7-128x10ms --reps 1

Figures are medians over the repetitions (the detail table gives their spread).
"""

from __future__ import annotations

import statistics
from typing import Any

import workloads

#: issue 24's targets: the efficiency of evocluster-mpi per workload ...
EFFICIENCY_TARGETS = {"W7-256x100ms": 0.97, "W7-128x10ms": 0.80}
#: ... and the resident memory of a worker rank over a bare mpi4py rank's, at the same N
RSS_TARGET_MIB = 8.0

EVO, REF, CHUNKS, BARE = workloads.W7_SYSTEMS


def _median(records: list[dict[str, Any]], system: str, wl: str, key: str) -> float | None:
    vals = [
        r[key]
        for r in records
        if r["system"] == system
        and r["workload"] == wl
        and r.get("ok")
        and isinstance(r.get(key), (int, float))
    ]
    return statistics.median(vals) if vals else None


def _cell(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _cells(records: list[dict[str, Any]], syss: list[str], wl: str, key: str, d: int = 2) -> str:
    return " / ".join(_cell(_median(records, s, wl, key), d) for s in syss)


def report(records: list[dict[str, Any]], syss: list[str], per_worker: int) -> list[str]:
    """The W7 section (nothing when no W7 workload ran)."""
    wls = [w for w in workloads.WORKLOADS if w.startswith("W7-")]
    wls = [w for w in wls if any(r["workload"] == w for r in records)]
    if not wls:
        return []
    runs = [s for s in (EVO, REF, CHUNKS) if s in syss]
    names = " / ".join(runs)
    lines = [
        "",
        "## W7: scale (real MPI ranks on this machine)",
        "",
        f"N worker ranks (`mpiexec -n N+1`), {per_worker} tasks per worker of "
        "`time.sleep(d)`, one map call.  Efficiency = (tasks x d / N) / map wall.  First result: "
        "launch to the first no-op's result; all ready: launch to the end of a map of 2 x N "
        "no-ops.  Master CPU: rank 0's `time.process_time()` (all its threads) over the map "
        "call, per task; workers' CPU: the worker ranks' together (`/proc`, clock ticks) over the "
        "same call, per task.  Worker RSS: median `VmRSS` of the worker ranks after the map, by "
        f"`/proc`; `{BARE}` is a rank that only imports mpi4py and waits (sleeping between tests "
        "of a non-blocking barrier), at the same N.  Each cell lists " + names + ".",
        "",
        f"| workload | efficiency ↑ | target | first result s ↓ | all ready s ↓ | master CPU ms "
        f"per task ↓ | workers' CPU ms per task ↓ | worker RSS MiB ({names} / {BARE}) | {EVO} "
        f"RSS - bare (<= {RSS_TARGET_MIB:g} MiB) | load1 before |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for w in wls:
        target = EFFICIENCY_TARGETS.get(w)
        eff = _median(records, EVO, w, "efficiency")
        if target is None:
            verdict = "-"
        elif eff is None:
            verdict = f">= {target:g}: no figure"
        else:
            verdict = f">= {target:g}: {'met' if eff >= target else 'NOT met'}"
        bare = _median(records, BARE, w, "worker_rss_mib")
        evo = _median(records, EVO, w, "worker_rss_mib")
        if bare is None or evo is None:
            over = "-"
        else:
            met = "met" if evo - bare <= RSS_TARGET_MIB else "NOT met"
            over = f"{evo - bare:+.1f} ({met})"
        loads = [r["load1_before"] for r in records if r["workload"] == w]
        rss = _cells(records, [*runs, BARE], w, "worker_rss_mib", 1)
        lines.append(
            f"| {w} | {_cells(records, runs, w, 'efficiency')} | {verdict} | "
            f"{_cells(records, runs, w, 'first_result_s', 1)} | "
            f"{_cells(records, runs, w, 'startup_s', 1)} | "
            f"{_cells(records, runs, w, 'master_cpu_ms_per_task', 3)} | "
            f"{_cells(records, runs, w, 'workers_cpu_ms_per_task', 3)} | {rss} | {over} | "
            f"{min(loads):.1f}-{max(loads):.1f} |"
        )
    return lines
