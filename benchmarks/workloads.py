"""Task functions and workload definitions, shared by ``run.py`` (the driver) and ``bench_job.py``
(one run).

The task functions live in this importable module, not in the job script, so that every system
pickles them by reference (``workloads.fitness_sum``) and resolves them the same way on its workers.

Each workload's ``run`` receives ``pmap(fn, items) -> list`` (the system's map with its default
chunk size) and the system's workaround for a callable its pickler refuses (used by W5 only), and
returns a dict of metrics that always holds ``correct``: the results compared with values computed
serially in the master.  Timings use ``time.perf_counter()`` around the map call(s) only; data
generation and the serial reference computation are outside the timed region.

A workload may also have an ``engine`` part (W3), run after ``run`` on the systems that have
evocluster's engine: it receives the ``concurrent.futures.Executor`` the engine is handed
(``evocluster.get_executor()``) and returns its metrics the same way.
"""

from __future__ import annotations

import functools
import heapq
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import procstat

MIB = 1 << 20
#: W2c's workers: one per core of this machine (the benchmark's runs all happen here)
CORES = os.cpu_count() or 2

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


def w3_draw(mean_s: float, sigma: float) -> float:
    """W3 engine rows: a lognormal duration of mean ``mean_s`` drawn from the evaluation's own
    stream (``evocluster.rng()``), so it is fixed by the task key, whichever worker runs it."""
    import evocluster

    mu = math.log(mean_s) - sigma**2 / 2  # so that the mean is mean_s
    return float(evocluster.rng().lognormal(mu, sigma))


def w3_fitness(x: Any, mean_s: float, sigma: float) -> float:
    """W3 engine rows: sleep a lognormal time (:func:`w3_draw`, the first thing drawn), then
    return the sphere function ``sum(x**2)``."""
    time.sleep(w3_draw(mean_s, sigma))
    return float((x * x).sum())


def w3_engine_call(key: tuple[int, int], seed: int, mean_s: float, sigma: float) -> float:
    """W3, for the peers: the call the engine's generational variant sends for task ``key``,
    ``evocluster.rng.call(w3_fitness, seed, key, genome)`` (the genome: ten ones), so that a
    peer's worker does the engine's work per evaluation too: seed the task's streams, make its
    generator, draw the duration, sleep.  Returns the fitness, 10.0."""
    import numpy as np

    from evocluster import rng as erng

    return float(erng.call(w3_fitness, seed, key, np.ones(10), mean_s, sigma)[0])


def w3_warm(x: Any) -> float:
    """W3 engine rows, untimed: the worker imports numpy, ``numpy.random`` (numpy loads it on
    first use, ~11 ms: the first ``evocluster.rng()`` of each worker would pay it inside the
    first engine variant timed) and ``evocluster.rng``; the sleep spreads these tasks over all
    workers."""
    import numpy.random  # noqa: F401

    import evocluster.rng  # noqa: F401

    time.sleep(0.05)
    return float(x.sum())


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
    w2c_tasks: int = 400  # W2c: W2 on one worker per core (2 s of sleeps per worker on 2 cores)
    w3_generations: int = 20  # map calls (barriers); the engine rows: population = w3_per_gen
    w3_per_gen: int = 100
    w3_mean_s: float = 0.010  # lognormal sleeps: this mean, sigma of the log, seed
    w3_sigma: float = 1.0
    w3_seed: int = 12345
    w4_rows: int = 500
    w4_row_bytes: int = MIB
    w5_tasks: int = 200
    w5_bytes: int = 50 * MIB
    w5_cap_s: float = 40.0  # per map call: a slower one is reported as "> cap", not waited for
    w6_idle_s: float = 5.0
    w7_per_worker: int = 20  # W7: tasks per worker rank, whatever the number of ranks


FULL = Sizes()
#: ``--quick``: a smoke test of the whole matrix; its figures are not comparable to full runs.
QUICK = Sizes(
    w1_tasks=2_000,
    w2_tasks=320,
    w2c_tasks=80,
    w3_generations=4,
    w3_per_gen=80,
    w4_rows=50,
    w5_bytes=MIB,
    w6_idle_s=1.0,
    w7_per_worker=5,
)


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
    return _sleeps(pmap, workers, sz.w2_tasks, sz.w2_sleep_s)


def run_w2c(pmap: PMap, workers: int, sz: Sizes, fix: Workaround | None) -> dict[str, Any]:
    """W2c: W2's 10 ms sleeps on one worker per core, the machine not oversubscribed: what
    isolation costs where its child processes do not compete with 15 other workers for 2 cores
    (issue 14's restated target)."""
    return _sleeps(pmap, workers, sz.w2c_tasks, sz.w2_sleep_s)


def _sleeps(pmap: PMap, workers: int, tasks: int, sleep_s: float) -> dict[str, Any]:
    items = [sleep_s] * tasks
    dt, out = _timed(pmap, sleep_task, items)
    ideal_s = tasks * sleep_s / workers
    return {"map_s": dt, "ideal_s": ideal_s, "efficiency": ideal_s / dt, "correct": out == items}


def w3_sleeps(sz: Sizes) -> list[float]:
    """W3's durations for the map loop: ``numpy.random.default_rng(seed).lognormal(mu, sigma, n)``
    with ``mu = log(mean) - sigma**2 / 2`` (mean 10 ms), as the peers were measured."""
    import numpy as np

    mu = math.log(sz.w3_mean_s) - sz.w3_sigma**2 / 2
    n = sz.w3_generations * sz.w3_per_gen
    return [float(x) for x in np.random.default_rng(sz.w3_seed).lognormal(mu, sz.w3_sigma, n)]


def w3_engine_draws(sz: Sizes) -> list[float]:
    """The durations the engine's generational variant evaluates (:func:`run_w3_engine`):
    offspring ``i`` of generation ``g`` sleeps ``w3_draw`` under task key ``(g, i)``.  Mapping
    them too puts the peers and the engine on exactly the same evaluations."""
    from evocluster import rng as erng

    return [
        erng.call(w3_draw, sz.w3_seed, (g, i), sz.w3_mean_s, sz.w3_sigma)[0]
        for g in range(sz.w3_generations)
        for i in range(sz.w3_per_gen)
    ]


def _greedy_makespan(durations: list[float], workers: int) -> float:
    """The wall time of a zero-overhead pool that hands each task, in order, to the first free
    worker (greedy list scheduling)."""
    free = [0.0] * workers
    for d in durations:
        heapq.heappush(free, heapq.heappop(free) + d)
    return max(free)


def _w3_maps(
    pmap: PMap,
    workers: int,
    sleeps: list[float],
    per: int,
    call: tuple[Callable[[Any], Any], list[Any], Any] | None = None,
) -> dict[str, Any]:
    """Map, ``per`` at a time, ``sleep_task`` over ``sleeps``, or ``call = (fn, args, value)``:
    ``fn`` over ``args`` (whose durations are ``sleeps``), each expected to return ``value``."""
    gens = [sleeps[i : i + per] for i in range(0, len(sleeps), per)]
    ok = True
    t0 = time.perf_counter()
    for n, g in enumerate(gens):
        if call is None:
            ok = pmap(sleep_task, g) == g and ok
        else:
            fn, args, value = call
            ok = pmap(fn, args[n * per : (n + 1) * per]) == [value] * len(g) and ok
    dt = time.perf_counter() - t0
    ideal_s = sum(sleeps) / workers
    greedy_s = sum(_greedy_makespan(g, workers) for g in gens)  # the barrier's own cost
    return {
        "map_s": dt,
        "ideal_s": ideal_s,
        "greedy_s": greedy_s,
        "efficiency": ideal_s / dt,
        "eff_vs_greedy": greedy_s / dt,
        "eff_ceiling": ideal_s / greedy_s,  # what a zero-overhead pool would reach
        "correct": ok,
    }


def run_w3(pmap: PMap, workers: int, sz: Sizes, fix: Workaround | None) -> dict[str, Any]:
    """A generational loop: one map call per generation, its return the barrier; first over
    :func:`w3_sleeps` (the list the peers were measured on), then over :func:`w3_engine_draws`
    (``eff_engine_draws``: the durations the engine's generational variant evaluates), then the
    engine's own calls (``eff_engine_calls``: :func:`w3_engine_call` for each of its task keys,
    the same durations with the same work per evaluation around them)."""
    rec = _w3_maps(pmap, workers, w3_sleeps(sz), sz.w3_per_gen)
    draws = w3_engine_draws(sz)
    same = _w3_maps(pmap, workers, draws, sz.w3_per_gen)
    keys = [(g, i) for g in range(sz.w3_generations) for i in range(sz.w3_per_gen)]
    fn = functools.partial(w3_engine_call, seed=sz.w3_seed, mean_s=sz.w3_mean_s, sigma=sz.w3_sigma)
    import numpy as np  # untimed: every worker imports numpy, numpy.random and evocluster.rng

    warm_ok = pmap(w3_warm, [np.ones(10)] * (2 * workers)) == [10.0] * (2 * workers)
    calls = _w3_maps(pmap, workers, draws, sz.w3_per_gen, (fn, keys, 10.0))
    rec["eff_engine_draws"] = same["efficiency"]
    rec["eff_engine_draws_vs_greedy"] = same["eff_vs_greedy"]
    rec["eff_engine_calls"] = calls["efficiency"]
    rec["correct"] = rec["correct"] and same["correct"] and calls["correct"] and warm_ok
    return rec


def run_w3_engine(executor: Any, workers: int, sz: Sizes) -> dict[str, Any]:
    """W3 with evocluster's engine: the same number of evaluations (population ``w3_per_gen``,
    ``w3_generations * w3_per_gen`` in all) of :func:`w3_fitness`, whose durations follow the
    same lognormal law but are drawn per evaluation from ``evocluster.rng()``.

    Variants, in this order: ``async`` (``steady_state``, ``deterministic=False``, default
    ``in_flight``), ``det`` (``steady_state``, ``deterministic=True, in_flight=64``) and ``gen``
    (``generational``, ``cxpb = mutpb = 1``: every offspring evaluated, one barrier per
    generation).  ``<v>_util`` = sum of the durations / (workers x wall of the engine call); the
    sum is exact, re-derived on the master from each evaluation's task key with
    ``evocluster.rng.call(w3_draw, seed, key)``.  ``<v>_util_engine`` is the engine's own figure
    from its history rows (the time the workers spent in the fitness, sleeps' overshoot included);
    ``<v>_util_ceiling`` what a zero-overhead pool would reach (tasks in submission order to the
    first free worker, barriers kept): the lognormal tail alone keeps it below 1.
    """
    import numpy as np

    from evocluster import engine
    from evocluster import operators as ops
    from evocluster import rng as erng

    # untimed: each worker imports numpy and evocluster.rng now, not inside the first engine call
    warm = [executor.submit(w3_warm, np.ones(10)) for _ in range(2 * workers)]
    warm_ok = [f.result() for f in warm] == [10.0] * len(warm)
    n, total = sz.w3_per_gen, sz.w3_generations * sz.w3_per_gen
    fitness = functools.partial(w3_fitness, mean_s=sz.w3_mean_s, sigma=sz.w3_sigma)
    common: dict[str, Any] = {
        "executor": executor,
        "seed": sz.w3_seed,
        "crossover": functools.partial(ops.blend, alpha=0.3),
        "mutate": functools.partial(ops.gaussian, sigma=0.3, p=0.3),
        "weights": (-1.0,),
        "log": None,
    }
    population = functools.partial(ops.random_reals, n, 10, low=-5.0, high=5.0)
    # task keys (see evocluster.engine): (0, i) initial members, then steady_state's (1, k) for
    # offspring k, generational's (g, i) for offspring i of generation g
    initial = [(0, i) for i in range(n)]
    steady_keys = initial + [(1, k) for k in range(total - n)]
    gen_keys = [(g, i) for g in range(sz.w3_generations) for i in range(n)]
    steady = functools.partial(engine.steady_state, fitness, population, evaluations=total - n)
    generational = functools.partial(
        engine.generational, fitness, population, generations=sz.w3_generations - 1
    )
    # (name, engine call, its task keys in submission order, how many between barriers)
    variants: list[tuple[str, Callable[[], Any], list[tuple[int, int]], int]] = [
        ("async", lambda: steady(**common), steady_keys, total),
        ("det", lambda: steady(deterministic=True, in_flight=64, **common), steady_keys, total),
        ("gen", lambda: generational(cxpb=1.0, mutpb=1.0, **common), gen_keys, n),
    ]
    rec: dict[str, Any] = {}
    wrong = [] if warm_ok else ["warm-up"]
    durations: dict[tuple[int, int], float] = {}
    for name, call, keys, per in variants:
        t0 = time.perf_counter()
        res = call()
        wall = time.perf_counter() - t0
        for key in keys:  # not timed; the two steady-state runs share their keys
            if key not in durations:
                durations[key] = erng.call(w3_draw, sz.w3_seed, key, sz.w3_mean_s, sz.w3_sigma)[0]
        sleep_s = sum(durations[k] for k in keys)
        d = [durations[k] for k in keys]
        greedy_s = sum(_greedy_makespan(d[i : i + per], workers) for i in range(0, total, per))
        busy_s = sum(r["utilisation"] * r["seconds"] * workers for r in res.history)
        rec.update(
            {
                f"{name}_s": wall,
                f"{name}_sleep_s": sleep_s,
                f"{name}_util": sleep_s / (workers * wall),
                f"{name}_util_engine": busy_s / (workers * wall),
                # a zero-overhead pool taking the tasks in submission order (barriers kept)
                f"{name}_util_ceiling": sleep_s / (workers * greedy_s),
                f"{name}_best": float(res.best_fitness[0]),
            }
        )
        ok = (
            res.state.evaluations == total
            and sum(r["evals"] for r in res.history) == total
            and np.allclose(res.fitness[:, 0], (res.population**2).sum(axis=1), rtol=1e-12)
        )
        if not ok:
            wrong.append(name)
        if busy_s < 0.98 * sleep_s:  # each fitness sleeps at least its duration: keys changed?
            rec.setdefault("warning", f"{name}: the engine's own busy time < the exact sum")
        if name == "det":  # depends only on the seed and in_flight: equal on every system
            rec["det_digest"] = res.digest()[:16]
    return {**rec, "correct": not wrong, **({"wrong": ", ".join(wrong)} if wrong else {})}


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


def w7(sleep_s: float) -> Callable[[PMap, int, Sizes, Workaround | None], dict[str, Any]]:
    """W7 (scale): ``w7_per_worker`` sleeps of ``sleep_s`` per worker rank, one map call; besides
    the efficiency, the master's CPU seconds per task (``time.process_time()`` of rank 0, all its
    threads, over the map call), the worker ranks' together (``/proc``), and the resident memory
    of the worker ranks after it (``procstat.worker_memory``; the ``mpi4py-bare`` system gives a
    bare mpi4py rank's)."""

    def run(pmap: PMap, workers: int, sz: Sizes, fix: Workaround | None) -> dict[str, Any]:
        tasks = sz.w7_per_worker * workers
        tag = os.environ.get("BENCH_TAG", "-")
        before = procstat.snapshot(tag)
        cpu = time.process_time()
        rec = _sleeps(pmap, workers, tasks, sleep_s)
        cpu = time.process_time() - cpu
        # the worker ranks' CPU over the same call (utime + stime, clock ticks: coarse)
        split = procstat.cpu_split(before, procstat.snapshot(tag), os.getpid())
        rec.update(n_tasks=tasks, master_cpu_s=cpu, master_cpu_ms_per_task=1e3 * cpu / tasks)
        rec.update(
            workers_cpu_s=split["worker"], workers_cpu_ms_per_task=1e3 * split["worker"] / tasks
        )
        rec.update(procstat.worker_memory(tag, os.getpid()))
        if rec["n_rss"] != workers:
            rec["warning"] = f"{rec['n_rss']} worker processes measured of {workers}"
        return rec

    return run


@dataclass(frozen=True)
class Workload:
    name: str
    workers: int
    run: Callable[[PMap, int, Sizes, Workaround | None], dict[str, Any]]
    metric: str  # the headline key of the record
    higher_is_better: bool
    timeout_s: float  # per-run cap, start-up included
    label: str  # column title
    #: run after ``run`` on the systems that have evocluster's engine: ``engine(executor, workers,
    #: sizes) -> metrics`` (``correct`` included), merged into the same record
    engine: Callable[[Any, int, Sizes], dict[str, Any]] | None = None
    details: tuple[str, ...] = ()  # further figures the report's detail table summarises
    #: the systems it runs on (None: all); run.py skips the others
    systems: tuple[str, ...] | None = None
    #: part of a run without ``--only`` (W7 is not: it takes long, ``--only W7`` runs it)
    default: bool = True
    #: the job first maps one no-op and records when its result came (``first_result_s``),
    #: before the warm-up (whose end is ``startup_s``: every worker has answered)
    first_result: bool = False

    def runs_on(self, system: str) -> bool:
        return self.systems is None or system in self.systems


#: W7's systems: evocluster over MPI, mpi4py.futures with its default chunk size (1) and with its
#: best one here (tasks / workers: one chunk per worker), and a bare mpi4py rank (memory only)
W7_SYSTEMS = ("evocluster-mpi", "mpi4py.futures", "mpi4py.futures+chunks", "mpi4py-bare")
#: W7's figures, for the report's detail table
W7_DETAILS = (
    "first_result_s",
    "master_cpu_ms_per_task",
    "workers_cpu_ms_per_task",
    "worker_rss_mib",
    "worker_rss_anon_mib",
    "worker_rss_max_mib",
)


def _w7_workloads() -> list[Workload]:
    """W7-<N>x<ms>ms: N worker ranks (N+1 with the master), sleeps of that many milliseconds.
    The time limit grows with N: 256 ranks on 2 cores take minutes to start."""
    return [
        Workload(
            f"W7-{n}x{ms}ms",
            n,
            w7(ms / 1e3),
            "efficiency",
            True,
            {64: 240, 128: 420, 256: 900}[n],
            f"W7 {n} x {ms} ms efficiency",
            details=W7_DETAILS,
            systems=W7_SYSTEMS,
            default=False,
            first_result=True,
        )
        for n in (64, 128, 256)
        for ms in (100, 10)
    ]


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in [
        Workload("W1", 2, run_w1, "tasks_per_s", True, 120, "W1 tasks/s (map)"),
        Workload("W2", 16, run_w2, "efficiency", True, 90, "W2 efficiency"),
        Workload("W2c", CORES, run_w2c, "efficiency", True, 90, "W2c efficiency (1 worker/core)"),
        Workload(
            "W3",
            16,
            run_w3,
            "efficiency",
            True,
            120,
            "W3 generational eff.",
            engine=run_w3_engine,
            details=(
                "eff_vs_greedy",
                "eff_engine_draws",
                "eff_engine_calls",
                *(f"{v}_util{e}" for v in ("async", "det", "gen") for e in ("", "_engine")),
            ),
        ),
        Workload("W4", 2, run_w4, "MiB_per_s", True, 120, "W4 MiB/s"),
        # two capped map calls (native, workaround) and start-up
        Workload("W5", 2, run_w5, "map_s", False, 2 * FULL.w5_cap_s + 30, "W5 lambda map (s)"),
        Workload("W6", 8, run_w6, "worker_cpu_s", False, 60, "W6 worker CPU-s idle"),
        Workload("S2", 2, run_startup, "startup_s", False, 60, "start-up W=2 (s)"),
        Workload("S16", 16, run_startup, "startup_s", False, 60, "start-up W=16 (s)"),
        *_w7_workloads(),
    ]
}
