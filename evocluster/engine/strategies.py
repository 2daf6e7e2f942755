"""The evolution strategies: one loop, :func:`mu_lambda`, whose ``plus`` says where the next
population is chosen from; :func:`mu_plus_lambda` and :func:`mu_comma_lambda` are its two
forms."""

from __future__ import annotations

import concurrent.futures as cf
import functools
from collections.abc import Sequence

import numpy as np

from .. import operators
from .evaluation import Evaluator
from .run import (
    Generations,
    check_counts,
    check_lambda,
    check_whole,
    evaluate_changed,
    run_generations,
)
from .settings import RunSettings
from .state import (
    CheckpointPath,
    Crossover,
    Fitness,
    Log,
    Mutate,
    Population,
    Result,
    Resume,
    Select,
    State,
    scalar_scores,
)


def best(scores: np.ndarray, k: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """The ``k`` best (:func:`~evocluster.operators.truncation`) as a ``select``: the default
    survivor selection of the evolution strategies."""
    return operators.truncation(scores, k)


def var_or(
    genomes: np.ndarray,
    fitness: np.ndarray,
    penalized: np.ndarray,
    lam: int,
    rng: np.random.Generator,
    crossover: Crossover,
    mutate: Mutate,
    cxpb: float,
    mutpb: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """DEAP's varOr: each of ``lam`` offspring is a crossover child (``cxpb``), a mutant
    (``mutpb``) or a copy of a random parent.  Returns offspring, their known fitness, whether
    that is a penalty, and which changed (their fitness is unknown)."""
    if cxpb + mutpb > 1.0:
        raise ValueError(f"cxpb + mutpb must be <= 1 (DEAP's varOr), got {cxpb + mutpb}")
    n = len(genomes)
    op = rng.random(lam)
    first = rng.integers(0, n, lam)
    second = rng.integers(0, n, lam)
    off = genomes[first].copy()
    off_fit = fitness[first].copy()
    off_bad = penalized[first].copy()
    cx = op < cxpb
    mu = (op >= cxpb) & (op < cxpb + mutpb)
    if cx.any():
        off[cx] = crossover(genomes[first[cx]], genomes[second[cx]], rng)[0]
    if mu.any():
        off[mu] = mutate(off[mu], rng)
    return off, off_fit, off_bad, cx | mu


def mu_lambda(
    fitness: Fitness,
    population: Population,
    *,
    plus: bool,
    executor: cf.Executor,
    generations: int,
    seed: int,
    lambda_: int,
    crossover: Crossover,
    mutate: Mutate,
    select: Select | None = None,
    cxpb: float = 0.5,
    mutpb: float = 0.5,
    weights: Sequence[float] = (1.0,),
    log: Log = print,
    resume: Resume = None,
    checkpoint: CheckpointPath = None,
    checkpoint_every: float | None = None,
    checkpoint_every_generations: int | None = None,
    on_error: str | None = None,
    penalty: float | Sequence[float] | None = None,
) -> Result:
    """A (mu + lambda) evolution strategy (``plus=True``, :func:`mu_plus_lambda`) or a
    (mu, lambda) one (``plus=False``, :func:`mu_comma_lambda`): ``lambda_`` offspring by DEAP's
    varOr; the next population is chosen by ``select(scores, mu, rng)`` (default :func:`best`:
    the ``mu`` best) from parents and offspring (plus) or from the offspring only (comma,
    ``lambda_ >= mu``).  ``mu`` is the initial population's size.  Other arguments
    (checkpoints and failure policies too), return value and errors as :func:`generational`."""
    check_counts(generations=generations, seed=seed)
    check_whole("lambda_", lambda_, 1)
    name = "mu_plus_lambda" if plus else "mu_comma_lambda"
    choose = select or best

    def step(state: State, rng: np.random.Generator, evaluator: Evaluator) -> int:
        mu = len(state.genomes)
        off, off_fit, off_bad, changed = var_or(
            state.genomes, state.fitness, state.penalized, lambda_, rng, crossover, mutate, cxpb,
            mutpb,
        )  # fmt: skip
        evals = evaluate_changed(evaluator, state, off, off_fit, off_bad, changed)
        if plus:
            pool, pool_fit, pool_bad = (
                np.concatenate([state.genomes, off]),
                np.concatenate([state.fitness, off_fit]),
                np.concatenate([state.penalized, off_bad]),
            )
        else:
            pool, pool_fit, pool_bad = off, off_fit, off_bad
        keep = choose(scalar_scores(pool_fit, evaluator.weights), mu, rng)
        state.genomes, state.fitness, state.penalized = pool[keep], pool_fit[keep], pool_bad[keep]
        return evals

    run = RunSettings.of(locals())
    loop = Generations(
        name,
        step,
        generations,
        probabilities={"cxpb": cxpb, "mutpb": mutpb},
        settings={
            "lambda": lambda_, "select": choose, "crossover": crossover, "mutate": mutate,
            "cxpb": cxpb, "mutpb": mutpb,
        },
        check=functools.partial(check_lambda, name, plus, lambda_),
    )  # fmt: skip
    return run_generations(loop, run, population)


def mu_plus_lambda(
    fitness: Fitness,
    population: Population,
    *,
    executor: cf.Executor,
    generations: int,
    seed: int,
    lambda_: int,
    crossover: Crossover,
    mutate: Mutate,
    select: Select | None = None,
    cxpb: float = 0.5,
    mutpb: float = 0.5,
    weights: Sequence[float] = (1.0,),
    log: Log = print,
    resume: Resume = None,
    checkpoint: CheckpointPath = None,
    checkpoint_every: float | None = None,
    checkpoint_every_generations: int | None = None,
    on_error: str | None = None,
    penalty: float | Sequence[float] | None = None,
) -> Result:
    """(mu + lambda) evolution strategy: ``lambda_`` offspring by DEAP's varOr; the next
    population is chosen from parents and offspring by ``select(scores, mu, rng)`` (default
    :func:`best`: the ``mu`` best).  ``mu`` is the initial population's size.  Other
    arguments (checkpoints and failure policies too), return value and errors as
    :func:`generational`."""
    return mu_lambda(**locals(), plus=True)


def mu_comma_lambda(
    fitness: Fitness,
    population: Population,
    *,
    executor: cf.Executor,
    generations: int,
    seed: int,
    lambda_: int,
    crossover: Crossover,
    mutate: Mutate,
    select: Select | None = None,
    cxpb: float = 0.5,
    mutpb: float = 0.5,
    weights: Sequence[float] = (1.0,),
    log: Log = print,
    resume: Resume = None,
    checkpoint: CheckpointPath = None,
    checkpoint_every: float | None = None,
    checkpoint_every_generations: int | None = None,
    on_error: str | None = None,
    penalty: float | Sequence[float] | None = None,
) -> Result:
    """(mu, lambda) evolution strategy: as :func:`mu_plus_lambda`, but the next population is
    chosen from the offspring only (``lambda_ >= mu``)."""
    return mu_lambda(**locals(), plus=False)
