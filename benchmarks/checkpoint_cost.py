"""What checkpoints cost: the seconds to write and to load one, and a steady-state run's
utilisation with checkpoints against without.

    python benchmarks/checkpoint_cost.py                 # both parts, default sizes
    python benchmarks/checkpoint_cost.py --reps 5 --seconds 40

1. A checkpoint of a population of 10,000 individuals x 100 float64 genes with their fitnesses
   (what an engine loop stores: evocluster.engine.State, through evocluster.checkpoint.save,
   atomic and signed), written and loaded ``--reps`` times in a temporary directory on the same
   filesystem as the working directory: median and range, and the file's size.
2. ``engine.steady_state`` on a local pool of ``--workers`` workers, a fitness that sleeps
   ``--eval`` seconds, for ``--seconds`` of wall time, with ``checkpoint_every=10`` against without,
   run alternately ``--runs`` times each: utilisation = seconds the workers spent evaluating /
   (workers x wall time).  The target is a utilisation at most 1 % lower with checkpoints.

Speed is measured, not asserted: this prints, it never fails on a figure.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import evocluster
from evocluster import checkpoint, engine, operators


def sleeper(duration: float, genome: np.ndarray) -> float:
    """The benchmark's fitness: ``duration`` seconds of (sleeping) work."""
    time.sleep(duration)
    return float(genome.sum())


def _population(rng: np.random.Generator) -> np.ndarray:
    return operators.random_reals(64, 100, rng, low=0.0, high=1.0)


def _state(n: int, genes: int) -> engine.State:
    rng = np.random.default_rng(1)
    return engine.State(
        algorithm="steady_state",
        seed=1,
        generation=500,
        genomes=rng.random((n, genes)),
        fitness=rng.random((n, 1)),
        weights=(1.0,),
        rng=np.random.default_rng(2).bit_generator.state,
        evaluations=n * 500,
        history=[{"generation": g, "min": [0.0], "mean": [0.5], "max": [1.0]} for g in range(500)],
    )


def write_and_load(reps: int, n: int, genes: int) -> None:
    state = _state(n, genes)
    writes, loads = [], []
    with tempfile.TemporaryDirectory(dir=os.getcwd()) as tmp:
        path = Path(tmp) / "bench.ckpt"
        for _ in range(reps):
            t0 = time.perf_counter()
            checkpoint.save(path, {"state": state.to_dict()}, algorithm="bench", seed=1)
            writes.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            checkpoint.load(path, algorithm="bench", seed=1)
            loads.append(time.perf_counter() - t0)
        size = path.stat().st_size
    print(f"checkpoint of {n} x {genes} float64 genes: {size / 2**20:.1f} MiB on disk")
    for name, xs in (("write", writes), ("load", loads)):
        print(
            f"  {name}: median {statistics.median(xs):.3f} s  "
            f"[{min(xs):.3f} - {max(xs):.3f}] over {reps} reps"
        )


def _steady(workers: int, seconds: float, duration: float, every: float | None) -> float:
    """Utilisation of one steady-state run of about ``seconds``: evaluation seconds reported by
    the workers over workers x wall time, from the loop's own statistics rows."""
    evals = int(seconds * workers / duration)
    with (
        evocluster.Executor(backend="local", workers=workers) as ex,
        tempfile.TemporaryDirectory(dir=os.getcwd()) as tmp,
    ):
        result = engine.steady_state(
            functools.partial(sleeper, duration),
            _population,
            executor=ex,
            evaluations=evals,
            seed=3,
            crossover=operators.uniform,
            mutate=functools.partial(operators.gaussian, sigma=0.1),
            report_every=max(1, evals // 20),
            log=None,
            checkpoint=Path(tmp) / "steady.ckpt" if every is not None else None,
            checkpoint_every=every,
        )
    rows = result.history
    wall = sum(r["seconds"] for r in rows)
    return sum(r["utilisation"] * r["seconds"] for r in rows) / wall


def utilisation(runs: int, workers: int, seconds: float, duration: float) -> None:
    without, with_ = [], []
    for _ in range(runs):
        without.append(_steady(workers, seconds, duration, None))
        with_.append(_steady(workers, seconds, duration, 10.0))
    a, b = statistics.median(without), statistics.median(with_)
    print(
        f"steady_state, {workers} local workers, {duration * 1e3:.0f} ms evaluations, "
        f"~{seconds:.0f} s per run, {runs} runs each (alternating):"
    )
    print(f"  utilisation without checkpoints: median {a:.4f}  {[round(x, 4) for x in without]}")
    print(f"  utilisation, checkpoint every 10 s: median {b:.4f}  {[round(x, 4) for x in with_]}")
    print(f"  with / without: {b / a:.4f}  ({(1 - b / a) * 100:+.2f} % lower; target <= 1 %)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--genes", type=int, default=100)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--eval", type=float, default=0.02)
    p.add_argument("--only", choices=("io", "steady"), default=None)
    a = p.parse_args()
    print(f"load average before: {os.getloadavg()}")
    if a.only in (None, "io"):
        write_and_load(a.reps, a.n, a.genes)
    if a.only in (None, "steady"):
        utilisation(a.runs, a.workers, a.seconds, a.eval)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
