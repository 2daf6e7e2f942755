"""The engine's plain data: a loop's :class:`State` (everything it needs to go on) and the
:class:`Result` it returns, the operator signatures, and how a result's best member is chosen."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .. import pareto
from ..errors import Failure

Fitness = Callable[..., Any]
Select = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]
Crossover = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]
Mutate = Callable[[np.ndarray, np.random.Generator], np.ndarray]
Population = np.ndarray | Callable[[np.random.Generator], np.ndarray]
Log = Callable[[str], object] | None
CheckpointPath = str | os.PathLike[str] | Literal[False] | None


@dataclass
class State:
    """Everything a loop needs to go on, as plain data (arrays, numbers, dicts, lists).

    Attributes:
        algorithm: the loop that made it (``"generational"``, ``"nsga2"``, ...).
        seed: the run seed.
        generation: generations completed (0: the initial population is evaluated).
        genomes: the population, ``(n, d)``.
        fitness: raw objective values, ``(n, m)`` float64.
        weights: ``+1``/``-1`` per objective.
        rng: the master generator's ``bit_generator.state``.
        evaluations: evaluations so far.
        history: one statistics dict per generation (or report, in the steady-state loop).
        penalized: ``(n,)`` bool, which members' fitness is a penalty (their evaluation failed
            under ``on_error="penalize"`` or ``"retry:N"``): statistics leave them out.
        failures: every failure recorded so far, in order, as ``(task key, Failure)``
            (:class:`evocluster.errors.Failure`; its ``item`` is the last element of the key).
    """

    algorithm: str
    seed: int
    generation: int
    genomes: np.ndarray
    fitness: np.ndarray
    weights: tuple[float, ...]
    rng: dict[str, Any]
    evaluations: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    penalized: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    failures: list[tuple[tuple[int, ...], Failure]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.penalized) != len(self.genomes):  # not given: nobody penalized
            self.penalized = np.zeros(len(self.genomes), dtype=bool)

    @property
    def failed(self) -> int:
        """Evaluations so far whose failure was penalized (retried attempts not counted)."""
        return sum(1 for _, f in self.failures if f.action == "penalized")

    def digest(self) -> str:
        """SHA-256 of the population and its fitness (dtype, shape and bytes): equal digests mean
        bit-identical populations."""
        h = hashlib.sha256()
        for array in (self.genomes, self.fitness):
            a = np.ascontiguousarray(array)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())
        return h.hexdigest()

    def to_dict(self) -> dict[str, Any]:
        """The state as a dict of plain values (arrays copied)."""
        return {
            "algorithm": self.algorithm,
            "seed": self.seed,
            "generation": self.generation,
            "genomes": self.genomes.copy(),
            "fitness": self.fitness.copy(),
            "weights": list(self.weights),
            "rng": copy_plain(self.rng),
            "evaluations": self.evaluations,
            "history": copy_plain(self.history),
            "penalized": self.penalized.copy(),
            "failures": list(self.failures),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> State:
        """Rebuild a state written by :meth:`to_dict`.

        Raises:
            ValueError: a field is missing or has the wrong shape.
        """
        try:
            state = cls(
                algorithm=str(d["algorithm"]),
                seed=int(d["seed"]),
                generation=int(d["generation"]),
                genomes=np.array(d["genomes"]),
                fitness=np.array(d["fitness"], dtype=np.float64),
                weights=tuple(float(w) for w in d["weights"]),
                rng=copy_plain(d["rng"]),
                evaluations=int(d["evaluations"]),
                history=copy_plain(d["history"]),
                # (states written before failure policies existed have neither)
                penalized=np.array(d.get("penalized", ()), dtype=bool).reshape(-1),
                failures=[(tuple(k), Failure(*f)) for k, f in d.get("failures", ())],
            )
        except KeyError as e:
            raise ValueError(f"not an engine state: field {e.args[0]!r} is missing") from e
        if state.genomes.ndim != 2 or state.fitness.shape != (
            len(state.genomes),
            len(state.weights),
        ):
            raise ValueError(
                f"not a consistent engine state: genomes {state.genomes.shape}, fitness "
                f"{state.fitness.shape}, {len(state.weights)} objective(s)"
            )
        return state


Resume = State | bool | str | os.PathLike[str] | None
Report = Callable[[State], dict[str, Any]] | None


def copy_plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: copy_plain(v) for k, v in x.items()}
    if isinstance(x, list):
        return [copy_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.copy()
    return x


@dataclass
class Result:
    """What a loop returns: its final :class:`State` and the best individual found.

    Attributes:
        state: the final state (``state.genomes``, ``state.fitness``, ``state.history``).
        best: the best genome of the final population (``nsga2``: of its first front, the
            first one); ``ask_tell``: the best evaluated.
        best_fitness: its raw objective values.

    Failures (``on_error="penalize"`` or ``"retry:N"``): :attr:`failures` lists every one of the
    whole run (a resumed run's too), :attr:`failure_keys` their task keys, :attr:`failed` counts
    the evaluations that ended with the penalty.
    """

    state: State
    best: np.ndarray
    best_fitness: np.ndarray

    @property
    def population(self) -> np.ndarray:
        return self.state.genomes

    @property
    def fitness(self) -> np.ndarray:
        return self.state.fitness

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.state.history

    @property
    def failures(self) -> list[Failure]:
        """Every failure recorded in the run, in order (retried attempts and penalized
        evaluations: see each record's ``action``)."""
        return [f for _, f in self.state.failures]

    @property
    def failure_keys(self) -> list[tuple[int, ...]]:
        """The task key of each of :attr:`failures` (``(generation, index)``, ...)."""
        return [k for k, _ in self.state.failures]

    @property
    def failed(self) -> int:
        """How many evaluations of the run failed and were given the penalty."""
        return self.state.failed

    def digest(self) -> str:
        """See :meth:`State.digest`."""
        return self.state.digest()

    def summary(self) -> dict[str, Any]:
        """Plain-data summary (JSON-ready): best fitness, population digest, generations,
        evaluations, and the last statistics row."""
        return {
            "algorithm": self.state.algorithm,
            "seed": self.state.seed,
            "best_fitness": self.best_fitness.tolist(),
            "population_sha256": self.digest(),
            "generations": self.state.generation,
            "evaluations": self.state.evaluations,
            "failed": self.failed,
            "last": self.history[-1] if self.history else None,
        }


def initial_genomes(population: Population, gen: np.random.Generator) -> np.ndarray:
    """The initial genomes: ``population`` itself, or what it makes from ``gen``, as a 2-D
    numpy array of at least 2 individuals (a list of lists, or any array-like, is taken).

    Raises:
        ValueError: not a 2-D array of at least 2 individuals.
    """
    made = population(gen) if callable(population) else population
    try:
        genomes = np.asarray(made) if callable(population) else np.array(made)
    except ValueError as e:  # ragged: rows of different lengths
        raise ValueError(
            f"the population must be a 2-D array (individuals x genes), got a "
            f"{type(made).__name__} numpy cannot make one array of ({e})"
        ) from None
    if genomes.ndim != 2 or len(genomes) < 2 or genomes.dtype == object:
        what = f"shape {genomes.shape}" + (" of objects" if genomes.dtype == object else "")
        raise ValueError(
            "the population must be a 2-D array (individuals x genes) of at least 2 "
            f"individuals, got {what}"
            + ("" if isinstance(made, np.ndarray) else f" (from a {type(made).__name__})")
        )
    return genomes


def checked_weights(weights: Sequence[float] | np.ndarray) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if not len(w) or not np.all(np.isfinite(w)) or np.any(w == 0):
        raise ValueError(f"weights must be non-zero numbers, one per objective, got {weights!r}")
    return w


def scalar_scores(fitness: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return np.asarray(fitness[:, 0] * weights[0])


def finite_scores(scores: np.ndarray, penalized: np.ndarray) -> np.ndarray:
    """``scores`` (larger better) for the Pareto machinery, which takes finite values only: an
    infinite penalty becomes, per objective, one less than the lowest score of the members that
    did not fail (0 if none did), so every penalized member is dominated by every other."""
    wrong = penalized[:, None] & ~np.isfinite(scores)
    if not wrong.any():
        return scores
    good = scores[~penalized]
    floor = good.min(axis=0) - 1.0 if len(good) else np.zeros(scores.shape[1])
    return np.where(wrong, floor, scores)


def result_of(state: State, w: np.ndarray) -> Result:
    """The result of a loop ending with ``state``; ``best`` among the members that did not
    fail (all of them if every one did)."""
    ok = np.flatnonzero(~state.penalized)
    if not len(ok):
        ok = np.arange(len(state.genomes))
    if len(w) == 1:
        i = int(ok[np.argmax(state.fitness[ok, 0] * w[0])])
    else:
        scores = finite_scores(state.fitness[ok] * w, state.penalized[ok])
        i = int(ok[pareto.non_dominated_fronts(scores)[0][0]])
    return Result(state, state.genomes[i].copy(), state.fitness[i].copy())
