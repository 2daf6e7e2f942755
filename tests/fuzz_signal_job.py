"""The job tests/test_fuzz_signals.py signals and kills at random points.

    python -m evocluster --backend local --workers 2 tests/fuzz_signal_job.py map
    mpiexec -n 3 python -m evocluster --checkpoint run.ckpt tests/fuzz_signal_job.py engine

It writes its pid to ``master.pid`` (in its working directory) as soon as it starts, then:

* ``map``: maps of short sleeps for about ``--seconds`` of work, then prints ``RESULT ok`` if
  every value is the builtin map's, or under ``--on-error penalize`` the penalty (-1) exactly for
  the items recorded as failed (a worker's isolated child killed under it), else ``RESULT wrong``;
* ``engine``: a generational loop (the launcher's ``--checkpoint`` reaches it), large enough that
  its checkpoints take a while to write; prints ``DIGEST <digest> <evaluations>`` (and writes
  it to ``loop.done`` first).
"""

from __future__ import annotations

import argparse
import functools
import os
import time
from typing import Any

import numpy as np

import evocluster
from evocluster import engine
from evocluster import operators as ops


def slow_square(x: int) -> int:
    time.sleep(0.01)
    return x * x


def fitness(genome: Any) -> float:
    time.sleep(0.002)
    return float(np.sum(genome * genome)) + 1e-3 * evocluster.rng().random()


def loop(executor: Any, gens: int, pop: int, genes: int, seed: int) -> Any:
    """The engine run; the test computes its reference on a serial executor in its own process."""
    return engine.generational(
        fitness,
        functools.partial(ops.random_reals, pop, genes, low=-2.0, high=2.0),
        executor=executor,
        generations=gens,
        seed=seed,
        crossover=functools.partial(ops.blend, alpha=0.3),
        mutate=functools.partial(ops.gaussian, sigma=0.3, p=0.2),
        elitism=1,
        weights=(-1.0,),
        log=lambda *a, **k: None,
    )


def maps(seconds: float) -> str:
    ex = evocluster.get_executor()
    items = list(range(40))
    rounds = max(1, round(seconds * max(1, ex.n_workers) / (0.01 * len(items))))
    failed = 0
    for _ in range(rounds):
        got = list(ex.map(slow_square, items))
        penalized = sorted(i for i, v in enumerate(got) if v == -1)
        if any(v not in (x * x, -1) for x, v in zip(items, got, strict=True)):
            return f"RESULT wrong {got}"
        failed += len(penalized)
    recorded = sum(1 for f in ex.failures if f.action == "penalized")
    return (
        "RESULT ok"
        if recorded == failed
        else f"RESULT wrong: {failed} penalties, {recorded} records"
    )


if __name__ == "__main__":
    with open("master.pid", "w") as fh:
        fh.write(f"{os.getpid()}\n")
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["map", "engine"])
    p.add_argument("--seconds", type=float, default=1.5)
    p.add_argument("--gens", type=int, default=8)
    p.add_argument("--pop", type=int, default=24)
    p.add_argument("--genes", type=int, default=20000)
    p.add_argument("--seed", type=int, default=5)
    args = p.parse_args()
    if args.mode == "map":
        print(maps(args.seconds), flush=True)
    else:
        r = loop(evocluster.get_executor(), args.gens, args.pop, args.genes, args.seed)
        with open("loop.done", "w") as fh:  # the loop has ended (mpiexec may lose what follows)
            fh.write(f"DIGEST {r.digest()} {r.state.evaluations}\n")
        print(f"DIGEST {r.digest()} {r.state.evaluations}", flush=True)
