"""OneMax with evocluster's own engine: a generational GA on numpy bit strings.

The same problem as ``onemax.py`` (evolve bit strings towards all ones), without DEAP: the
population is one ``(pop, length)`` boolean array, the operators come from
``evocluster.operators``, and ``evocluster.engine.generational`` sends the changed offspring of
each generation to the workers.  Statistics are printed one line per generation.

What it shows: the engine's result depends only on ``--seed``.  The fitness also draws from
``evocluster.rng()`` (a tiny tie-breaking noise, seeded per evaluation), so the population hash is
identical under every backend and any number of workers only because each evaluation's random
stream travels with its task.

Run it::

    mpiexec -n 5 python -m evocluster jobs/onemax_builtin.py
    python -m evocluster jobs/onemax_builtin.py --ngen 20
    python -m scoop -n 4 jobs/onemax_builtin.py
    python jobs/onemax_builtin.py --json summary.json     # no launcher: a local pool

Options: ``--seed``, ``--ngen``, ``--pop``, ``--length``, ``--json PATH`` (summary: best fitness,
population sha256, backend, workers).
"""

import argparse
import functools
import json

import evocluster
from evocluster import engine
from evocluster import operators as ops


def onemax(genome):
    """Number of ones, plus a noise in [0, 1e-3) drawn from this evaluation's own stream."""
    return float(genome.sum()) + 1e-3 * evocluster.rng().random()


def main(seed=42, ngen=40, pop=200, length=100, **options):
    """Run the GA on the launcher's executor; return the engine's Result.  ``options`` go to the
    loop as they are (``checkpoint_every=0``, say)."""
    return engine.generational(
        onemax,
        lambda rng: ops.random_bits(pop, length, rng),
        executor=evocluster.get_executor(),
        generations=ngen,
        seed=seed,
        select=functools.partial(ops.tournament, size=3),
        crossover=ops.two_point,
        mutate=functools.partial(ops.bit_flip, p=1.0 / length),
        cxpb=0.7,
        mutpb=0.3,
        elitism=2,
        **options,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="OneMax with evocluster's engine.")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default: 42)")
    parser.add_argument("--ngen", type=int, default=40, help="generations (default: 40)")
    parser.add_argument("--pop", type=int, default=200, help="population size (default: 200)")
    parser.add_argument("--length", type=int, default=100, help="bits (default: 100)")
    parser.add_argument("--json", metavar="PATH", help="write a JSON summary to PATH")
    args = parser.parse_args()

    result = main(args.seed, args.ngen, args.pop, args.length)
    executor = evocluster.get_executor()
    print(f"best fitness {result.best_fitness[0]:.6f} ({int(result.best.sum())} ones)")
    print(f"population sha256 {result.digest()}")
    print(f"evaluated by backend {executor.backend} with {executor.n_workers} worker(s)")
    if args.json:
        summary = result.summary() | {
            "backend": executor.backend,
            "n_workers": executor.n_workers,
        }
        with open(args.json, "w") as fh:
            json.dump(summary, fh, indent=2)
