"""Task functions and workload definitions, shared by ``run.py`` (the driver) and ``bench_job.py``
(one run).

The task functions live in this importable module, not in the job script, so that every system
pickles them by reference (``workloads.fitness_sum``) and resolves them the same way on its workers.

Each workload's ``run`` receives ``pmap(fn, items) -> list`` (the system's map with its default
chunk size) and the system's workaround for a callable its pickler refuses (used by W5 only), and
returns a dict of metrics that always holds ``correct``: the results compared with values computed
serially in the master.  Timings use ``time.perf_counter()`` around the map call(s) only; data
generation and the serial reference computation are outside the timed region.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import procstat

MIB = 1 << 20

Fn = Callable[[Any], Any]


class PMap(Protocol):
    """``pmap(fn, items)``: the system's ordered map with its default chunk size.  With a
    ``timeout`` (seconds) it raises the system's ``TimeoutError`` (see :func:`timeouts`) when the
    results are not all back in time, and the pool then no longer waits for the tasks not yet
    started when it closes."""

    def __call__(self, fn: Fn, items: list[Any], timeout: float | None = None) -> list[Any]: ...


def timeouts() -> tuple[type[Exception], ...]:
    """What a ``pmap`` with a timeout raises (distinct classes before Python 3.11); imported
    here, not at the top, so that importing this module does not add to every run's start-up."""
    import concurrent.futures
    import multiprocessing

    return (TimeoutError, concurrent.futures.TimeoutError, multiprocessing.TimeoutError)


#: How a system's users send a callable its pickler refuses (W5): returns what they map instead.
Workaround = Callable[[Fn], Fn]


# ------------------------------------------------------------------------------ task functions
def noop(x: Any) -> Any:
    return x


def fitness_sum(individual: list[float]) -> float:
    """W1: about a microsecond of work."""
    return sum(individual)


def sleep_task(seconds: float) -> float:
    """W2: a fitness that takes a fixed time without using the CPU."""
    time.sleep(seconds)
    return seconds


def array_sum(row: Any) -> float:
    """W4: a 1 MiB numpy row in, one float out."""
    return float(row.sum())


def make_closure(big: Any) -> Fn:
    """W5: a lambda closing over a large array; pickle cannot send it by reference."""
    return lambda i: float(big[i]) + i


# ------------------------------------------------------------------------------ sizes
@dataclass(frozen=True)
class Sizes:
    w1_tasks: int = 20_000
    w1_len: int = 10
    w2_tasks: int = 2_000
    w2_sleep_s: float = 0.010
    w4_rows: int = 500
    w4_row_bytes: int = MIB
    w5_tasks: int = 200
    w5_bytes: int = 50 * MIB
    w5_cap_s: float = 40.0  # per map call: a slower one is reported as "> cap", not waited for
    w6_idle_s: float = 5.0


FULL = Sizes()
#: ``--quick``: a smoke test of the whole matrix; its figures are not comparable to full runs.
QUICK = Sizes(w1_tasks=2_000, w2_tasks=320, w4_rows=50, w5_bytes=MIB, w6_idle_s=1.0)


# ------------------------------------------------------------------------------ workloads
def _timed(
    pmap: PMap, fn: Fn, items: list[Any], timeout: float | None = None
) -> tuple[float, list[Any]]:
    t0 = time.perf_counter()
    out = pmap(fn, items) if timeout is None else pmap(fn, items, timeout=timeout)
    return time.perf_counter() - t0, out


def run_w1(pmap: PMap, workers: int, sz: Sizes, fix: Workaround | None) -> dict[str, Any]:
    rnd = random.Random(1)
    items = [[rnd.random() for _ in range(sz.w1_len)] for _ in range(sz.w1_tasks)]
    expect = [sum(x) for x in items]
    dt, out = _timed(pmap, fitness_sum, items)
    return {
        "map_s": dt,
        "n_tasks": sz.w1_tasks,
        "tasks_per_s": sz.w1_tasks / dt,
        "correct": out == expect,
    }


def run_w2(pmap: PMap, workers: int, sz: Sizes, fix: Workaround | None) -> dict[str, Any]:
    items = [sz.w2_sleep_s] * sz.w2_tasks
    dt, out = _timed(pmap, sleep_task, items)
    ideal_s = sz.w2_tasks * sz.w2_sleep_s / workers
    return {"map_s": dt, "ideal_s": ideal_s, "efficiency": ideal_s / dt, "correct": out == items}


def run_w4(pmap: PMap, workers: int, sz: Sizes, fix: Workaround | None) -> dict[str, Any]:
    import numpy as np

    base = np.random.default_rng(4).random((sz.w4_rows, sz.w4_row_bytes // 8))
    items = list(base)  # distinct 1 MiB rows (views of one block)
    expect = [float(r.sum()) for r in items]
    # untimed warm-up, the same for every system: the workers import numpy here, so the timed
    # map measures moving arrays, not a module import (which is 60 % of a cold run's time)
    pmap(array_sum, [np.zeros(8)] * (2 * workers))
    dt, out = _timed(pmap, array_sum, items)
    ok = len(out) == len(expect) and all(
        isinstance(a, float) and abs(a - b) <= 1e-9 * abs(b)
        for a, b in zip(out, expect, strict=True)
    )
    mib = sz.w4_rows * sz.w4_row_bytes / MIB
    return {"map_s": dt, "MiB_per_s": mib / dt, "correct": ok}


def run_w5(pmap: PMap, workers: int, sz: Sizes, fix: Workaround | None) -> dict[str, Any]:
    """Map a lambda over a 50 MiB array natively; if that fails, the way the system's users work
    around it (``fix``).  ``map_s`` is the map call that worked; each call is capped."""
    import numpy as np

    fn = make_closure(np.random.default_rng(5).random(sz.w5_bytes // 8))
    items = list(range(sz.w5_tasks))
    expect = [fn(i) for i in items]
    pmap(array_sum, [np.zeros(8)] * (2 * workers))  # untimed: the workers import numpy (see W4)
    rec: dict[str, Any] = {"native": "OK", "cap_s": sz.w5_cap_s}
    capped = timeouts()
    try:
        dt, out = _timed(pmap, fn, items, sz.w5_cap_s)
    except capped:
        return {**rec, "capped": True, "correct": True}
    except Exception as e:
        rec.update(native=f"FAIL ({type(e).__name__})", native_error=str(e)[:300])
        if fix is None:
            raise
        try:
            dt, out = _timed(pmap, fix(fn), items, sz.w5_cap_s)
        except capped:
            return {**rec, "capped": True, "correct": True}
    return {**rec, "map_s": dt, "correct": out == expect}


def run_w6(pmap: PMap, workers: int, sz: Sizes, fix: Workaround | None) -> dict[str, Any]:
    tag = os.environ.get("BENCH_TAG", "")
    if not tag:
        raise RuntimeError("W6 needs BENCH_TAG in the environment (set by run.py)")
    items = list(range(4 * workers))  # 32 no-ops for 8 workers
    warm_ok = pmap(noop, items) == items
    before = procstat.snapshot(tag)
    t0 = time.perf_counter()
    time.sleep(sz.w6_idle_s)
    idle_s = time.perf_counter() - t0
    after = procstat.snapshot(tag)
    split = procstat.cpu_split(before, after, master_pid=os.getpid())
    after_ok = pmap(noop, items) == items  # the pool still works after idling
    return {
        "idle_s": idle_s,
        "worker_cpu_s": split["worker"],
        "master_cpu_s": split["master"],
        "infra_cpu_s": split["infra"],
        "n_worker_procs": split["n_worker"],
        "procs": split["procs"],
        "correct": warm_ok and after_ok,
        **(
            {} if split["n_worker"] == workers else {"warning": f"{split['n_worker']} worker procs"}
        ),
    }


def run_startup(pmap: PMap, workers: int, sz: Sizes, fix: Workaround | None) -> dict[str, Any]:
    """S2 / S16: the start-up figure is the warm-up map every run does (see bench_job.py)."""
    return {"correct": True}


@dataclass(frozen=True)
class Workload:
    name: str
    workers: int
    run: Callable[[PMap, int, Sizes, Workaround | None], dict[str, Any]]
    metric: str  # the headline key of the record
    higher_is_better: bool
    timeout_s: float  # per-run cap, start-up included
    label: str  # column title


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in [
        Workload("W1", 2, run_w1, "tasks_per_s", True, 120, "W1 tasks/s (map)"),
        Workload("W2", 16, run_w2, "efficiency", True, 90, "W2 efficiency"),
        Workload("W4", 2, run_w4, "MiB_per_s", True, 120, "W4 MiB/s"),
        # two capped map calls (native, workaround) and start-up
        Workload("W5", 2, run_w5, "map_s", False, 2 * FULL.w5_cap_s + 30, "W5 lambda map (s)"),
        Workload("W6", 8, run_w6, "worker_cpu_s", False, 60, "W6 worker CPU-s idle"),
        Workload("S2", 2, run_startup, "startup_s", False, 60, "start-up W=2 (s)"),
        Workload("S16", 16, run_startup, "startup_s", False, 60, "start-up W=16 (s)"),
    ]
}
