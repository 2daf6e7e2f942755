"""OneMax with DEAP, its fitness evaluated by evocluster.

OneMax evolves bit strings towards all ones: the fitness of an individual is its number of ones.
This is DEAP's classic example with one change, ``toolbox.register("map", evocluster.map)``, so
that every generation's evaluations run on evocluster's workers.

What it shows: the result does not depend on where the fitness is evaluated.  All randomness
(initialisation, selection, crossover, mutation) happens on the master, seeded with ``--seed``,
and the fitness is deterministic, so the best fitness and the hash of the final population are
identical under every backend and any number of workers.

Run it::

    mpiexec -n 4 python -m evocluster jobs/onemax.py          # MPI: rank 0 runs this, 3 workers
    python -m evocluster jobs/onemax.py                       # a local pool (os.cpu_count())
    python -m evocluster --backend local --workers 2 jobs/onemax.py
    python -m evocluster --backend serial jobs/onemax.py      # everything in one process
    python jobs/onemax.py --ngen 10 --json summary.json       # no launcher: a local pool

Options after the job file are the job's own: ``--seed``, ``--ngen``, ``--pop``, ``--length``,
``--json PATH`` (write a summary: best fitness, population hash, backend, workers, generations),
``--checkpoint PATH``: save the population, the generation and the random state there after every
generation, and at SIGUSR1 or SIGTERM (a batch system's warning) stop with exit code 75; run the
same command again to resume where it stopped, with the same final population as a run that was
never interrupted (on any backend, with any number of workers).  Without it, the run's own
checkpoint, if it has one: the launcher's ``--checkpoint PATH``, or ``submit --checkpoint PATH``.
"""

import argparse
import hashlib
import json
import random
import sys

import numpy
from deap import base, creator, tools

import evocluster

creator.create("FitnessMax", base.Fitness, weights=(1.0,))
creator.create("Individual", list, fitness=creator.FitnessMax)

toolbox = base.Toolbox()
toolbox.register("attr_bool", random.randint, 0, 1)


def eval_onemax(individual):
    """The fitness: the number of ones (a tuple, as DEAP expects)."""
    return (sum(individual),)


toolbox.register("evaluate", eval_onemax)
toolbox.register("mate", tools.cxTwoPoint)
toolbox.register("mutate", tools.mutFlipBit, indpb=0.05)
toolbox.register("select", tools.selTournament, tournsize=3)
toolbox.register("map", evocluster.map)  # evaluations run on evocluster's workers

CXPB, MUTPB = 0.5, 0.2  # probabilities of crossover and mutation


def population_hash(population):
    """sha256 of the population's bit lists, in order: equal hashes mean equal populations."""
    bits = [list(ind) for ind in population]
    return hashlib.sha256(json.dumps(bits).encode()).hexdigest()


def evaluate_invalid(population):
    """Evaluate the individuals without a valid fitness; return how many were evaluated."""
    invalid = [ind for ind in population if not ind.fitness.valid]
    fitnesses = toolbox.map(toolbox.evaluate, invalid)
    for ind, fit in zip(invalid, fitnesses, strict=True):
        ind.fitness.values = fit
    return len(invalid)


def report(gen, evals, population):
    """Print one line of statistics for a generation."""
    fits = numpy.array([ind.fitness.values[0] for ind in population])
    print(
        f"gen {gen:3d}  evals {evals:4d}  "
        f"min {fits.min():.2f}  avg {fits.mean():.2f}  max {fits.max():.2f}",
        flush=True,
    )


def main(seed=42, ngen=40, pop_size=300, length=100, checkpoint=None):
    """Run the GA; return the final population.  With ``checkpoint`` (a path), resume from it if
    it exists, save after every generation, and stop with exit code 75 when a signal asks to."""
    from evocluster.checkpoint import defaults  # the master's: workers never load it

    # no path given: the run's own, if it has one (`--checkpoint` of the launcher or of `submit`)
    checkpoint = checkpoint or defaults().path
    ckpt = evocluster.Checkpoint(checkpoint, seed=seed).watch_signals() if checkpoint else None
    toolbox.register("individual", tools.initRepeat, creator.Individual, toolbox.attr_bool, length)
    toolbox.register("population", tools.initRepeat, list, toolbox.individual)
    if ckpt is not None and ckpt.exists():
        state = ckpt.load()  # restores random's state too
        pop, start = state["population"], state["generation"] + 1
        print(f"resumed from {checkpoint} after generation {start - 1}", flush=True)
    else:
        random.seed(seed)
        pop, start = toolbox.population(n=pop_size), 1
        report(0, evaluate_invalid(pop), pop)

    for gen in range(start, ngen + 1):
        # select the next generation and clone it (locally: variation works in place)
        offspring = [toolbox.clone(ind) for ind in toolbox.select(pop, len(pop))]
        for child1, child2 in zip(offspring[::2], offspring[1::2], strict=False):
            if random.random() < CXPB:
                toolbox.mate(child1, child2)
                del child1.fitness.values
                del child2.fitness.values
        for mutant in offspring:
            if random.random() < MUTPB:
                toolbox.mutate(mutant)
                del mutant.fitness.values

        evals = evaluate_invalid(offspring)
        pop[:] = offspring
        report(gen, evals, pop)
        if ckpt is not None:
            ckpt.save({"population": pop, "generation": gen})
            if ckpt.stop_requested:
                print(f"checkpointed after generation {gen}: run again to resume", flush=True)
                sys.exit(evocluster.checkpoint.EXIT_TEMPFAIL)

    return pop


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="OneMax with DEAP, evaluated by evocluster.")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default: 42)")
    parser.add_argument("--ngen", type=int, default=40, help="generations (default: 40)")
    parser.add_argument("--pop", type=int, default=300, help="population size (default: 300)")
    parser.add_argument("--length", type=int, default=100, help="bits (default: 100)")
    parser.add_argument("--json", metavar="PATH", help="write a JSON summary to PATH")
    parser.add_argument("--checkpoint", metavar="PATH", help="save/resume the run there")
    args = parser.parse_args()

    # under a SLURM job array, seed + SLURM_ARRAY_TASK_ID: one run per task, each reproducible
    args.seed = evocluster.run_seed(args.seed)
    population = main(args.seed, args.ngen, args.pop, args.length, args.checkpoint)

    best = tools.selBest(population, 1)[0]
    digest = population_hash(population)
    executor = evocluster.get_executor()
    print(f"best fitness {best.fitness.values[0]:g}")
    print(f"population sha256 {digest}")
    print(f"evaluated by backend {executor.backend} with {executor.n_workers} worker(s)")
    if args.json:
        summary = {
            "best_fitness": best.fitness.values[0],
            "population_sha256": digest,
            "backend": executor.backend,
            "n_workers": executor.n_workers,
            "generations": args.ngen,
        }
        with open(args.json, "w") as fh:
            json.dump(summary, fh, indent=2)
