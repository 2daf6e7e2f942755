"""An expensive fitness with heavy-tailed durations: the asynchronous engine against the
generational loop.

Each evaluation sleeps for a lognormal time (mean ``--mean`` seconds, sigma ``--sigma``) drawn
from its own seeded stream (``evocluster.rng()``), then returns the sphere function of the
genome.  A generational loop waits, every generation, for its slowest evaluation while the other
workers idle; ``evocluster.engine.steady_state`` submits a new offspring as soon as any
evaluation returns, so no worker waits for another.

What it shows: worker utilisation (evaluation seconds / (workers x wall seconds)) of the two
loops on the same budget of evaluations, printed at the end.  With ``--deterministic`` the
asynchronous loop integrates results in submission order and its result depends only on
``--seed`` (and ``--in-flight``), not on the workers: the price is measured by the same figure.

Run it::

    mpiexec -n 17 python -m evocluster jobs/heavy_tail.py            # 16 workers
    python -m evocluster --workers 8 jobs/heavy_tail.py --deterministic
    python -m scoop -n 4 jobs/heavy_tail.py

Options: ``--seed``, ``--pop``, ``--evaluations``, ``--mean``, ``--sigma``, ``--dim``,
``--mode async|generational|both``, ``--deterministic``, ``--in-flight``, ``--json PATH``.
"""

import argparse
import functools
import json
import math
import time

import numpy as np

import evocluster
from evocluster import engine
from evocluster import operators as ops


def expensive_sphere(x, mean=0.01, sigma=1.0):
    """Sleep a lognormal time (this evaluation's own stream), then return sum(x**2)."""
    mu = math.log(mean) - sigma * sigma / 2.0  # so that the mean duration is `mean`
    time.sleep(evocluster.rng().lognormal(mu, sigma))
    return float(np.sum(np.asarray(x) ** 2))


def utilisation(result, workers):
    """Evaluation seconds / (workers x wall seconds) over the whole run."""
    rows = result.history
    wall = sum(r["seconds"] for r in rows)
    busy = sum(r["utilisation"] * r["seconds"] for r in rows)
    return busy / wall if wall else 0.0, wall


def run(mode, seed, pop, evaluations, mean, sigma, dim, deterministic, in_flight):
    """Run one loop; the budget counts evaluations after the initial population."""
    fitness = functools.partial(expensive_sphere, mean=mean, sigma=sigma)
    common = {
        "executor": evocluster.get_executor(),
        "seed": seed,
        "crossover": functools.partial(ops.blend, alpha=0.3),
        "mutate": functools.partial(ops.gaussian, sigma=0.3, p=0.3),
        "weights": (-1.0,),
        "log": None,
    }
    init = functools.partial(ops.random_reals, pop, dim, low=-5.0, high=5.0)
    if mode == "async":
        return engine.steady_state(
            fitness,
            init,
            evaluations=evaluations,
            deterministic=deterministic,
            in_flight=in_flight,
            **common,
        )
    return engine.generational(
        fitness,
        init,
        generations=max(1, evaluations // pop),
        cxpb=1.0,
        mutpb=1.0,  # every offspring is new: pop evaluations per generation
        elitism=0,
        **common,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Heavy-tailed fitness: async vs generational.")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default: 42)")
    parser.add_argument("--pop", type=int, default=100, help="population size (default: 100)")
    parser.add_argument("--evaluations", type=int, default=2000, help="after the initial pop")
    parser.add_argument("--mean", type=float, default=0.01, help="mean seconds (default: 0.01)")
    parser.add_argument("--sigma", type=float, default=1.0, help="lognormal sigma (default: 1)")
    parser.add_argument("--dim", type=int, default=10, help="genes (default: 10)")
    parser.add_argument("--mode", choices=("async", "generational", "both"), default="both")
    parser.add_argument("--deterministic", action="store_true", help="async: submission order")
    parser.add_argument("--in-flight", type=int, default=None, help="async: evaluations in flight")
    parser.add_argument("--json", metavar="PATH", help="write a JSON summary to PATH")
    args = parser.parse_args()

    executor = evocluster.get_executor()
    summary = {"backend": executor.backend, "n_workers": executor.n_workers}
    modes = ("async", "generational") if args.mode == "both" else (args.mode,)
    for mode in modes:
        result = run(
            mode, args.seed, args.pop, args.evaluations, args.mean, args.sigma, args.dim,
            args.deterministic, args.in_flight,
        )  # fmt: skip
        util, wall = utilisation(result, executor.n_workers)
        print(
            f"{mode:>12}: best {result.best_fitness[0]:.6g}  {result.state.evaluations} evals in "
            f"{wall:.2f} s  utilisation {util:.3f}  population sha256 {result.digest()}"
        )
        summary[mode] = result.summary() | {"utilisation": util, "wall": wall}
    print(f"evaluated by backend {executor.backend} with {executor.n_workers} worker(s)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(summary, fh, indent=2)
