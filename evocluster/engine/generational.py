"""The generational loops: :func:`generational` (a GA, DEAP's varAnd) and :func:`nsga2`
(multi-objective)."""

from __future__ import annotations

import concurrent.futures as cf
import functools
from collections.abc import Sequence

import numpy as np

from .. import operators, pareto
from .evaluation import Evaluator
from .run import (
    Generations,
    check_counts,
    check_elitism,
    check_whole,
    evaluate_changed,
    run_generations,
    vary_pairs,
)
from .settings import RunSettings
from .state import (
    CheckpointPath,
    Crossover,
    Fitness,
    Log,
    Mutate,
    Population,
    Report,
    Result,
    Resume,
    Select,
    State,
    finite_scores,
    scalar_scores,
)


def generational(
    fitness: Fitness,
    population: Population,
    *,
    executor: cf.Executor,
    generations: int,
    seed: int,
    crossover: Crossover,
    mutate: Mutate,
    select: Select = operators.tournament,
    cxpb: float = 0.9,
    mutpb: float = 0.2,
    elitism: int = 0,
    weights: Sequence[float] = (1.0,),
    log: Log = print,
    resume: Resume = None,
    checkpoint: CheckpointPath = None,
    checkpoint_every: float | None = None,
    checkpoint_every_generations: int | None = None,
    on_error: str | None = None,
    penalty: float | Sequence[float] | None = None,
) -> Result:
    """A generational GA: select ``n - elitism`` parents, vary them (DEAP's varAnd), evaluate
    the changed offspring, keep the ``elitism`` best of the old population.

    Args:
        fitness: ``fitness(genome) -> number`` (``genome``: a 1-D array).  It may draw random
            numbers from ``evocluster.rng()`` and Python's ``random``: both are seeded per task.
        population: initial genomes ``(n, d)``, or a function of the master generator making them.
        executor: where to evaluate (``evocluster.get_executor()``, any
            ``concurrent.futures.Executor``).
        generations: generations after the initial one.
        seed: the run seed (master generator and every task's streams).
        crossover, mutate, select: operators (module docstring).
        cxpb: probability that a pair is crossed; mutpb: that an offspring is mutated.
        elitism: how many of the best survive unchanged.
        weights: ``(1.0,)`` maximise (default) or ``(-1.0,)`` minimise.
        log: called with one line of statistics per generation (``None``: silent).
        resume: a :class:`State` from an earlier call with the same seed: go on from it; or
            ``True``: from the checkpoint at ``checkpoint`` (a path: from the checkpoint there);
            ``False``: afresh, even over an existing checkpoint.  Default: the launcher's
            ``--resume``; automatically when SLURM restarted the job
            (``SLURM_RESTART_COUNT`` > 0) and the checkpoint exists; otherwise afresh, and an
            existing checkpoint file is refused (``CheckpointError``, reason ``exists``).
        checkpoint: write the loop's whole state to this file (atomic, signed): when it starts,
            periodically, when it ends, and when SIGUSR1 or SIGTERM stops it (it then raises
            :class:`evocluster.checkpoint.Interrupted`, exit code 75).  Default: the
            launcher's ``--checkpoint``; ``False``: none, whatever the launcher says.
        checkpoint_every: seconds between periodic checkpoints (0: every generation);
            checkpoint_every_generations: generations between them.  Default: the launcher's,
            else every 60 s.
        on_error: what a failed evaluation (the fitness raised, returned something that is not
            one number per objective, or -- on evocluster's executors -- timed out or crashed
            its process) does: ``"raise"`` (end the loop with :class:`EvaluationError`),
            ``"penalize"`` (the individual gets ``penalty`` and the loop goes on) or
            ``"retry:N"`` (evaluated again up to N times -- on another worker, on evocluster's
            executors --, then penalized if ``penalty`` is given, else raised; a bad return
            value is not retried: the same task key draws the same numbers).  Default: the
            executor's own (evocluster's: the launcher's ``--on-error``/``--penalty``), else
            ``"raise"``.  Each generation's line shows ``failed N`` (and ``retried N``) when
            not zero; :attr:`Result.failures` holds every record.
        penalty: the fitness of a failed individual: a number, or one per objective.  Default:
            the worst, ``-inf`` where larger is better, ``+inf`` where smaller is.  Penalized
            members stay in the population (selection sees the penalty) but are left out of
            the statistics (min/mean/max/std are of the members that did not fail) and of
            ``Result.best`` while another member is there.

    Returns:
        :class:`Result`.

    Raises:
        ValueError: bad arguments (``generations`` and ``seed`` are integers >= 0);
        EvaluationError: an evaluation failed (with the last state);
        CheckpointError: the checkpoint cannot be resumed (another job's, fitness', population
        or settings; fewer generations than it holds) or written, or another run holds it;
        evocluster.checkpoint.Interrupted: a signal stopped the loop (checkpoint written).
    """

    check_counts(generations=generations, seed=seed)
    check_whole("elitism", elitism, 0)

    def step(state: State, rng: np.random.Generator, evaluator: Evaluator) -> int:
        w, n = evaluator.weights, len(state.genomes)
        scores = scalar_scores(state.fitness, w)
        parents = select(scores, n - elitism, rng)
        off, changed = vary_pairs(state.genomes[parents], rng, crossover, mutate, cxpb, mutpb)
        off_fit, off_bad = state.fitness[parents], state.penalized[parents]  # (copies)
        evals = evaluate_changed(evaluator, state, off, off_fit, off_bad, changed)
        elite = operators.truncation(scores, elitism) if elitism else np.empty(0, dtype=np.int64)
        state.genomes = np.concatenate([state.genomes[elite], off])
        state.fitness = np.concatenate([state.fitness[elite], off_fit])
        state.penalized = np.concatenate([state.penalized[elite], off_bad])
        return evals

    run = RunSettings.of(locals())
    loop = Generations(
        "generational",
        step,
        generations,
        probabilities={"cxpb": cxpb, "mutpb": mutpb},
        settings={
            "select": select, "crossover": crossover, "mutate": mutate, "cxpb": cxpb,
            "mutpb": mutpb, "elitism": elitism,
        },
        check=functools.partial(check_elitism, elitism),
    )  # fmt: skip
    return run_generations(loop, run, population)


def nsga2(
    fitness: Fitness,
    population: Population,
    *,
    executor: cf.Executor,
    generations: int,
    seed: int,
    crossover: Crossover,
    mutate: Mutate,
    weights: Sequence[float],
    cxpb: float = 0.9,
    mutpb: float = 1.0,
    log: Log = print,
    resume: Resume = None,
    report: Report = None,
    checkpoint: CheckpointPath = None,
    checkpoint_every: float | None = None,
    checkpoint_every_generations: int | None = None,
    on_error: str | None = None,
    penalty: float | Sequence[float] | None = None,
) -> Result:
    """NSGA-II (Deb et al. 2002): parents by crowded binary tournament, offspring by varAnd,
    the next population chosen from parents and offspring by non-dominated sorting and crowding
    distance.

    Args:
        weights: one per objective, ``-1`` minimise, ``+1`` maximise.
        report: optional ``report(state) -> dict`` whose items are added to each generation's
            statistics (e.g. the hypervolume).
        penalty: as :func:`generational` (a single number only with one objective: the worst
            differs with each objective's direction).
        Others (checkpoints, ``on_error`` too): as :func:`generational`.

    Returns:
        :class:`Result`; ``best`` is a member of the first front.

    An objective may be ``+inf`` or ``-inf`` (an infeasible individual, say): it sorts as the
    best or worst value there is, and the crowding distance measures the other members on the
    finite values.
    """
    check_counts(generations=generations, seed=seed)

    def step(state: State, rng: np.random.Generator, evaluator: Evaluator) -> int:
        w, n = evaluator.weights, len(state.genomes)
        scores = finite_scores(state.fitness * w, state.penalized)
        parents = pareto.crowded_tournament(scores, n, rng)
        off, changed = vary_pairs(state.genomes[parents], rng, crossover, mutate, cxpb, mutpb)
        off_fit, off_bad = state.fitness[parents], state.penalized[parents]  # (copies)
        evals = evaluate_changed(evaluator, state, off, off_fit, off_bad, changed)
        pool = np.concatenate([state.genomes, off])
        pool_fit = np.concatenate([state.fitness, off_fit])
        pool_bad = np.concatenate([state.penalized, off_bad])
        keep = pareto.nsga2_select(finite_scores(pool_fit * w, pool_bad), n)
        state.genomes, state.fitness, state.penalized = pool[keep], pool_fit[keep], pool_bad[keep]
        return evals

    run = RunSettings.of(locals())
    loop = Generations(
        "nsga2",
        step,
        generations,
        probabilities={"cxpb": cxpb, "mutpb": mutpb},
        settings={"crossover": crossover, "mutate": mutate, "cxpb": cxpb, "mutpb": mutpb},
        single_objective=False,
    )
    return run_generations(loop, run, population)
