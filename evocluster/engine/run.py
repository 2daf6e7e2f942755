"""What the loops share: the start of a run (a new state or a resumed one), the checks of their
arguments, and the driver of the generational loops (:func:`run_generations`), whose variation
and evaluation steps are here too."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..rng import master as _master_rng
from .checkpointing import Checkpointing
from .evaluation import Evaluator
from .settings import RunSettings
from .state import (
    Crossover,
    Mutate,
    Population,
    Report,
    Result,
    State,
    checked_weights,
    initial_genomes,
    result_of,
)
from .statistics import add_row

Step = Callable[[State, np.random.Generator, Evaluator], int]


def start(
    name: str,
    population: Population,
    seed: int,
    weights: np.ndarray,
    resume: State | None,
    single_objective: bool = True,
) -> tuple[State, np.random.Generator, np.ndarray | None]:
    """The state to begin from, the master generator, and genomes still to evaluate (if new)."""
    if single_objective and len(weights) != 1:
        raise ValueError(
            f"{name}() optimises one objective (weights has {len(weights)}): use nsga2() for "
            "several"
        )
    if resume is not None:
        if resume.algorithm != name:
            raise ValueError(f"cannot resume {name}() from a {resume.algorithm}() state")
        if resume.seed != seed:
            raise ValueError(
                f"resume state was made with seed {resume.seed}, this call has seed {seed}"
            )
        gen = np.random.Generator(np.random.PCG64())
        gen.bit_generator.state = resume.rng
        state = State(**resume.to_dict() | {"weights": tuple(resume.weights)})
        # no fitness is NaN: NaN means not evaluated -- a state saved (or kept by an
        # EvaluationError) before its initial population was evaluated; evaluate it now
        return state, gen, (state.genomes if np.isnan(state.fitness).any() else None)
    check_whole("seed", seed, 0)
    gen = _master_rng(int(seed))
    genomes = initial_genomes(population, gen)
    state = State(
        algorithm=name,
        seed=int(seed),
        generation=0,
        genomes=genomes,
        fitness=np.full((len(genomes), len(weights)), np.nan),
        weights=tuple(float(w) for w in weights),
        rng=dict(gen.bit_generator.state),
    )
    return state, gen, genomes


def check_whole(name: str, value: Any, low: int) -> None:
    """``value`` must be a whole number (an ``int`` or numpy integer, not a bool) >= ``low``.

    Raises:
        ValueError: naming the argument and the value.
    """
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def check_counts(**counts: Any) -> None:
    """Each of ``counts`` (``generations``, ``seed``, ``evaluations``...) must be an integer
    >= 0: ``generations=2.5``, ``-1`` or ``seed=True`` are refused, naming the argument.

    Raises:
        ValueError: the first that is not.
    """
    for name, value in counts.items():
        check_whole(name, value, 0)


@dataclass(frozen=True)
class Generations:
    """What a generational loop adds to its :class:`RunSettings`: its name, its ``step``
    (make the next generation into the state, return the evaluations it needed), how many
    generations, the ``probabilities`` to check (name -> value), ``check(size)`` once the
    population size is known, whether it optimises one objective, and the ``settings`` its
    checkpoint records (see :meth:`Checkpointing.identify`)."""

    name: str
    step: Step
    generations: int
    probabilities: dict[str, float]
    settings: dict[str, Any]
    check: Callable[[int], None] | None = None
    single_objective: bool = True


def begin(
    loop: Generations, run: RunSettings, population: Population, checkpointing: Checkpointing
) -> tuple[State, np.random.Generator, Evaluator]:
    """The start every generational loop shares, in this order: check the weights, the
    probabilities and, once the population size is known, ``loop.check(size)``; resume
    (``resume=State`` or the checkpoint's) or begin a new state, which is checkpointed at once;
    on a state not yet evaluated, evaluate the initial population and write its statistics
    row.  Returns the state, the master generator and the evaluator (``evaluator.weights``: the
    checked weights)."""
    w = checked_weights(run.weights)
    for option, p in loop.probabilities.items():
        check_probability(option, p)
    state, rng, fresh = start(
        loop.name, population, run.seed, w, checkpointing.start_state(), loop.single_objective
    )
    if loop.check is not None:
        loop.check(len(state.genomes))
    evaluator = Evaluator(run, checkpointing.waits)
    # the loops change this state only once a step is complete
    checkpointing.track(lambda: (state, None))
    if fresh is not None:
        evaluate_initial(evaluator, state, rng, fresh, run.report)
    return state, rng, evaluator


def run_generations(loop: Generations, run: RunSettings, population: Population) -> Result:
    """The generational loops' driver: :func:`begin`, then ``loop.step(state, rng, evaluator)``
    until ``loop.generations``; checkpoints between generations, a stop by a signal at any
    wait."""
    checkpointing = Checkpointing(loop.name, run.seed, run.log, run.checkpoints)

    def check() -> None:
        settings = loop.settings | {"weights": run.weights}
        checkpointing.identify(run.fitness, settings, population, run.seed)
        checkpointing.reached(loop.generations)

    def generations() -> Result:
        state, rng, evaluator = begin(loop, run, population, checkpointing)
        while state.generation < loop.generations:
            checkpointing.safe_point(state.generation)
            t0 = time.perf_counter()
            evals = loop.step(state, rng, evaluator)
            advance(evaluator, state, rng, evals, t0, run.report)
        return result_of(state, evaluator.weights)

    return checkpointing.run(generations, check=check, until=loop.generations)


def evaluate_initial(
    evaluator: Evaluator,
    state: State,
    rng: np.random.Generator,
    genomes: np.ndarray,
    report: Report = None,
) -> None:
    """Generation 0: evaluate the initial ``genomes`` (task keys ``(0, i)``) into ``state``,
    keep the generator's state, write the first statistics row."""
    t0 = time.perf_counter()
    n = len(genomes)
    state.fitness, state.penalized = evaluator.evaluate(genomes, [(0, i) for i in range(n)], state)
    state.evaluations = n
    state.rng = dict(rng.bit_generator.state)
    add_row(evaluator, state, n, time.perf_counter() - t0, report(state) if report else None)


def check_probability(name: str, p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")


def check_elitism(elitism: int, n: int) -> None:
    if not 0 <= elitism < n:
        raise ValueError(f"elitism must be in [0, {n - 1}] for a population of {n}")


def check_lambda(name: str, plus: bool, lambda_: int, mu: int) -> None:
    if lambda_ < 1 or (not plus and lambda_ < mu):
        raise ValueError(f"lambda_ must be >= {1 if plus else mu} for {name}() with mu = {mu}")


def vary_pairs(
    genomes: np.ndarray,
    rng: np.random.Generator,
    crossover: Crossover,
    mutate: Mutate,
    cxpb: float,
    mutpb: float,
) -> tuple[np.ndarray, np.ndarray]:
    """DEAP's varAnd: cross consecutive pairs with ``cxpb``, mutate each with ``mutpb``.
    Returns the offspring and which of them changed (their fitness is unknown)."""
    off = genomes.copy()
    n = len(off)
    changed = np.zeros(n, dtype=bool)
    pairs = n // 2
    crossed = rng.random(pairs) < cxpb
    if crossed.any():
        first = np.arange(0, 2 * pairs, 2)[crossed]
        c1, c2 = crossover(off[first], off[first + 1], rng)
        off[first], off[first + 1] = c1, c2
        changed[first] = changed[first + 1] = True
    mutated = rng.random(n) < mutpb
    if mutated.any():
        off[mutated] = mutate(off[mutated], rng)
        changed |= mutated
    return off, changed


def evaluate_changed(
    evaluator: Evaluator,
    state: State,
    off: np.ndarray,
    off_fit: np.ndarray,
    off_bad: np.ndarray,
    changed: np.ndarray,
) -> int:
    """Evaluate the changed offspring of the next generation into ``off_fit`` (and which are
    penalized into ``off_bad``); return how many."""
    todo = np.flatnonzero(changed)
    g = state.generation + 1
    off_fit[todo], off_bad[todo] = evaluator.evaluate(off[todo], [(g, int(i)) for i in todo], state)
    return len(todo)


def advance(
    evaluator: Evaluator,
    state: State,
    rng: np.random.Generator,
    evals: int,
    t0: float,
    report: Report = None,
) -> None:
    """The population of ``state`` is the next generation's: count it, keep the generator's
    state (a checkpoint resumes from here), write its statistics row."""
    state.generation += 1
    state.evaluations += evals
    state.rng = dict(rng.bit_generator.state)
    add_row(evaluator, state, evals, time.perf_counter() - t0, report(state) if report else None)
