"""Microbenchmark of evocluster's serialisation layer: its per-call cost against plain pickle.

    python benchmarks/serialization.py [--repeat N]

In one process, no workers: each cell is ``timeit`` of one call, the best of N rounds (the rounds
visit every cell in turn, so that the load of a shared machine drifts over all of them alike).
Ratios are to ``pickle.dumps(obj, protocol=5)`` of the same object; a markdown report goes to
stdout.  This file is run as the job's ``__main__`` would be: its module-level names are declared
importable on the workers exactly as evocluster's launcher does (``set_worker_main_names``).
"""

from __future__ import annotations

import argparse
import os
import pickle
import platform
import random
import shlex
import subprocess
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from deap import base, creator

from evocluster import _jobfile as jobfile
from evocluster import _serialization as serialization
from evocluster._serialization import FunctionTable, dumps, dumps_args, serialize_callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import workloads  # noqa: E402 - an imported module, as a fitness in a package would be

# DEAP's usual set-up, at module level of the job
creator.create("FitnessMax", base.Fitness, weights=(1.0,))
creator.create("Individual", list, fitness=creator.FitnessMax)


class JobIndividual(list[int]):
    """An individual class of the job's own (no DEAP): defined in ``__main__``."""

    fitness: tuple[float, ...] = ()


def evaluate(individual: list[float]) -> float:
    """A fitness defined at module level of the job file (``__main__``)."""
    return sum(individual)


def payloads() -> dict[str, Any]:
    rnd = random.Random(7)
    floats = [[rnd.random() for _ in range(10)] for _ in range(2_500)]
    people = []
    for _ in range(300):
        ind = creator.Individual(rnd.randint(0, 1) for _ in range(100))
        ind.fitness.values = (float(sum(ind)),)
        people.append(ind)
    own = []
    for ind in people:
        mine = JobIndividual(ind)
        mine.fitness = ind.fitness.values
        own.append(mine)
    rng = np.random.default_rng(7)
    arrays = [rng.random(100) for _ in range(1_000)]
    chunk = floats[:10]
    return {
        "(a) 2,500 lists of 10 floats": floats,
        "(b) 300 DEAP individuals (100 bits + fitness)": people,
        "(b') the same, a list subclass defined in the job (`__main__`), not DEAP": own,
        "(c) 1,000 numpy arrays of 100 floats": arrays,
        "(d) chunk record `(fn, 10 lists of 10 floats)`, fn in an imported module": (
            workloads.fitness_sum,
            chunk,
        ),
        "(d') the same, fn at module level of the job (`__main__`)": (evaluate, chunk),
    }


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "`workloads.fitness_sum` (imported module)": workloads.fitness_sum,
    "`evaluate` (module level of the job, `__main__`)": evaluate,
}


def slow_path(obj: Any) -> bool:
    """Whether ``dumps_args`` leaves the C pickler's output for its per-object pickler (pickle
    refused something, or the stream names ``__main__``; see ``dumps_args``)."""
    try:
        return b"__main__" in bytes(dumps(obj)[0])
    except Exception:
        return True


def measure(cells: dict[str, tuple[str, dict[str, Any]]], repeat: int) -> dict[str, float]:
    """Best seconds per call of each ``stmt`` (with its globals), rounds interleaved."""
    timers = {k: timeit.Timer(stmt, globals=g) for k, (stmt, g) in cells.items()}
    numbers = {k: t.autorange()[0] for k, t in timers.items()}  # about 0.2 s per measurement
    best = dict.fromkeys(cells, float("inf"))
    for _ in range(repeat):
        for k, t in timers.items():
            best[k] = min(best[k], t.timeit(numbers[k]) / numbers[k])
    return best


def cell(seconds: float, ref: float) -> str:
    us = seconds * 1e6
    return (
        f"{us:.3g} µs (x{seconds / ref:.2f})"
        if us < 1000
        else f"{us:.0f} µs (x{seconds / ref:.2f})"
    )


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=7, help="rounds; the best is kept (default 7)")
    a = p.parse_args(argv)
    # what evocluster does for a job started as `python job.py` (executor._open_pool)
    serialization.set_worker_main_names(jobfile.module_level_names(jobfile.spec_for_current_main()))
    objs = payloads()
    for obj in objs.values():  # the policies must produce what plain pickle would load back
        for policy in ("upgrade", "strict"):
            frames = dumps_args(obj, policy)
            again = pickle.dumps(serialization.loads(frames))
            assert again == pickle.dumps(pickle.loads(pickle.dumps(obj))), (policy, obj)
    cells: dict[str, tuple[str, dict[str, Any]]] = {}
    for name, obj in objs.items():
        g = {"obj": obj, "pickle": pickle, "dumps": dumps, "dumps_args": dumps_args}
        cells[name + "|pickle"] = ("pickle.dumps(obj, protocol=5)", g)
        cells[name + "|dumps"] = ("dumps(obj)", g)
        cells[name + "|upgrade"] = ("dumps_args(obj, 'upgrade')", g)
        cells[name + "|strict"] = ("dumps_args(obj, 'strict')", g)
    for name, fn in FUNCTIONS.items():
        warm = FunctionTable()
        warm.lookup(fn, "upgrade")
        g = {"fn": fn, "pickle": pickle, "FunctionTable": FunctionTable, "warm": warm}
        g["serialize_callable"] = serialize_callable
        cells[name + "|pickle"] = ("pickle.dumps(fn, protocol=5)", g)
        cells[name + "|serialize"] = ("serialize_callable(fn, 'upgrade')", g)
        cells[name + "|cold"] = ("FunctionTable().lookup(fn, 'upgrade')", g)
        cells[name + "|warm"] = ("warm.lookup(fn, 'upgrade')", g)
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    best = measure(cells, a.repeat)
    elapsed = time.perf_counter() - t0
    git = subprocess.run(
        ["git", "-C", str(HERE.parent), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    import cloudpickle
    import deap

    out = [
        "# evocluster serialisation microbenchmark",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {elapsed:.0f} s; best of {a.repeat} "
        "rounds, each `timeit` of about 0.2 s",
        f"- command: `{shlex.join(['python', 'benchmarks/serialization.py', *argv])}`",
        f"- python {platform.python_version()}, numpy {np.__version__}, cloudpickle "
        f"{cloudpickle.__version__}, deap {deap.__version__}, evocluster git {git or '?'}; "
        f"nproc {os.cpu_count()}",
        "- load average: start "
        + " ".join(f"{x:.2f}" for x in load_start)
        + ", end "
        + " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "",
        "Arguments: per call, `(xR)` = time / `pickle.dumps(obj, protocol=5)`.  `dumps` is "
        "evocluster's plain serialiser (protocol 5, array data out of band); `upgrade` and "
        "`strict` are `dumps_args(obj, policy)`, which the scheduler calls for every chunk.",
        "",
        "| payload | pickle.dumps | dumps | dumps_args upgrade | dumps_args strict "
        "| per-object pass |",
        "|---|---|---|---|---|---|",
    ]
    for name, obj in objs.items():
        ref = best[name + "|pickle"]
        row = [cell(best[f"{name}|{k}"], ref) for k in ("pickle", "dumps", "upgrade", "strict")]
        out.append(f"| {name} | " + " | ".join(row) + f" | {'yes' if slow_path(obj) else 'no'} |")
    out += [
        "",
        "Callables: `(xR)` = time / `pickle.dumps(fn, protocol=5)`.  A new `FunctionTable` "
        "serialises and digests `fn` (what the first `map` of a callable pays); a table that has "
        "seen `fn` returns the cached key (every later `map`).",
        "",
        "| module-level function | pickle.dumps(fn) | serialize_callable(fn, 'upgrade') "
        "| FunctionTable().lookup(fn, 'upgrade') | lookup, table has seen fn |",
        "|---|---|---|---|---|",
    ]
    for name in FUNCTIONS:
        ref = best[name + "|pickle"]
        row = [cell(best[f"{name}|{k}"], ref) for k in ("pickle", "serialize", "cold", "warm")]
        out.append(f"| {name} | " + " | ".join(row) + " |")
    out += [
        "",
        "Target: upgrade's overhead on a plain module-level function within 5 % of pickle.",
        "",
    ]
    for name in FUNCTIONS:
        for k, what in (("cold", "FunctionTable().lookup"), ("warm", "warm lookup")):
            r = best[f"{name}|{k}"] / best[name + "|pickle"]
            out.append(f"- {name}, {what}: x{r:.2f} ({'met' if r <= 1.05 else 'NOT met'})")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
