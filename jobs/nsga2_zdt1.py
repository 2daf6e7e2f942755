"""NSGA-II on ZDT1: two objectives, 30 real variables, hypervolume reported every generation.

ZDT1 (Zitzler, Deb and Thiele 2000) has a convex Pareto front ``f2 = 1 - sqrt(f1)``; NSGA-II
(non-dominated sorting and crowding distance, ``evocluster.engine.nsga2``) should approach it.
Each generation's statistics line ends with the hypervolume of the population's first front with
respect to the reference point (1.1, 1.1); the true front's hypervolume is printed for comparison.

What it shows: multi-objective optimisation with evocluster's engine, SBX crossover and
polynomial mutation (``evocluster.operators``); the result depends only on ``--seed``.

Run it::

    mpiexec -n 5 python -m evocluster jobs/nsga2_zdt1.py
    python -m evocluster jobs/nsga2_zdt1.py --ngen 100
    python -m scoop -n 4 jobs/nsga2_zdt1.py

Options: ``--seed``, ``--ngen``, ``--pop``, ``--nvar``, ``--json PATH``.
"""

import argparse
import functools
import json

import evocluster
from evocluster import engine, pareto
from evocluster import operators as ops

REFERENCE = (1.1, 1.1)


def zdt1(x):
    """Both objectives of ZDT1 (minimised)."""
    return pareto.zdt1(x)


def front_hypervolume(state):
    """Hypervolume of the population's first front: added to each statistics row."""
    first = pareto.non_dominated_fronts(-state.fitness)[0]
    return {"hypervolume": pareto.hypervolume(state.fitness[first], REFERENCE)}


def main(seed=42, ngen=50, pop=100, nvar=30):
    """Run NSGA-II on the launcher's executor; return the engine's Result."""
    return engine.nsga2(
        zdt1,
        lambda rng: ops.random_reals(pop, nvar, rng, low=0.0, high=1.0),
        executor=evocluster.get_executor(),
        generations=ngen,
        seed=seed,
        weights=(-1.0, -1.0),
        crossover=functools.partial(ops.sbx, eta=20.0, low=0.0, high=1.0),
        mutate=functools.partial(ops.polynomial, eta=20.0, low=0.0, high=1.0, p=1.0 / nvar),
        cxpb=0.9,
        mutpb=1.0,
        report=front_hypervolume,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="NSGA-II on ZDT1 with evocluster's engine.")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default: 42)")
    parser.add_argument("--ngen", type=int, default=50, help="generations (default: 50)")
    parser.add_argument("--pop", type=int, default=100, help="population size (default: 100)")
    parser.add_argument("--nvar", type=int, default=30, help="variables (default: 30)")
    parser.add_argument("--json", metavar="PATH", help="write a JSON summary to PATH")
    args = parser.parse_args()

    result = main(args.seed, args.ngen, args.pop, args.nvar)
    executor = evocluster.get_executor()
    hv = result.history[-1]["hypervolume"]
    best_hv = pareto.hypervolume(pareto.zdt1_front(1000), REFERENCE)
    print(f"hypervolume {hv:.6f} (true front: {best_hv:.6f}; reference point {REFERENCE})")
    print(f"population sha256 {result.digest()}")
    print(f"evaluated by backend {executor.backend} with {executor.n_workers} worker(s)")
    if args.json:
        summary = result.summary() | {
            "hypervolume": hv,
            "true_front_hypervolume": best_hv,
            "backend": executor.backend,
            "n_workers": executor.n_workers,
        }
        with open(args.json, "w") as fh:
            json.dump(summary, fh, indent=2)
