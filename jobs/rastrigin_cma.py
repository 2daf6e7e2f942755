"""CMA-ES (the ``cma`` package) on the Rastrigin function, through evocluster's ask/tell adapter.

An external optimiser keeps its own loop state; ``evocluster.engine.ask_tell`` asks it for
candidates, evaluates them on the workers, and tells it their values, until ``es.stop()``.

What it shows: any optimiser with ``ask()`` / ``tell()`` is evaluated through the same executor.
CMA-ES is seeded with ``--seed``; the fitness is deterministic, so the final candidates' hash is
identical under every backend and any number of workers.

Run it (needs ``pip install cma``)::

    mpiexec -n 5 python -m evocluster jobs/rastrigin_cma.py
    python -m evocluster jobs/rastrigin_cma.py --dim 20
    python -m scoop -n 4 jobs/rastrigin_cma.py

Options: ``--seed`` (>= 1: the ``cma`` package takes 0 as "seed from the clock"), ``--dim``,
``--popsize``, ``--iterations``, ``--json PATH``.
"""

import argparse
import json

import numpy as np

import evocluster
from evocluster import engine


def rastrigin(x):
    """Rastrigin's function (minimum 0 at the origin, many local minima)."""
    x = np.asarray(x)
    return float(10.0 * len(x) + np.sum(x * x - 10.0 * np.cos(2.0 * np.pi * x)))


def main(seed=42, dim=10, popsize=16, iterations=100):
    """Run CMA-ES on the launcher's executor; return the engine's Result."""
    import cma  # the optimiser runs on the master only: workers never import it

    if seed < 1:
        raise SystemExit("--seed must be >= 1 (cma takes 0 as 'seed from the clock')")
    es = cma.CMAEvolutionStrategy(
        dim * [2.5], 1.5, {"seed": seed, "popsize": popsize, "verbose": -9}
    )
    return engine.ask_tell(
        es, rastrigin, executor=evocluster.get_executor(), seed=seed, iterations=iterations
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="CMA-ES on Rastrigin via evocluster.")
    parser.add_argument("--seed", type=int, default=42, help="random seed >= 1 (default: 42)")
    parser.add_argument("--dim", type=int, default=10, help="dimensions (default: 10)")
    parser.add_argument("--popsize", type=int, default=16, help="candidates per iteration")
    parser.add_argument("--iterations", type=int, default=100, help="at most (default: 100)")
    parser.add_argument("--json", metavar="PATH", help="write a JSON summary to PATH")
    args = parser.parse_args()

    result = main(args.seed, args.dim, args.popsize, args.iterations)
    executor = evocluster.get_executor()
    print(f"best rastrigin {result.best_fitness[0]:.6g} after {result.state.evaluations} evals")
    print(f"population sha256 {result.digest()}")
    print(f"evaluated by backend {executor.backend} with {executor.n_workers} worker(s)")
    if args.json:
        summary = result.summary() | {
            "backend": executor.backend,
            "n_workers": executor.n_workers,
        }
        with open(args.json, "w") as fh:
            json.dump(summary, fh, indent=2)
