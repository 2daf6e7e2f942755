"""The evolutionary loops that run on the master, driven by any ``concurrent.futures.Executor``.

The engine never sees a backend: it is handed an executor (evocluster's, on any backend, or the
stdlib's) and sends it only the individuals whose fitness is unknown.  Every evaluation is wrapped
by :func:`evocluster.rng.call` with the run seed and a stable task key, so a fitness that draws
random numbers (``evocluster.rng()``) gets the same numbers whichever worker runs it.  The master's
own randomness (selection, variation) is one generator seeded from the run seed.  Hence, given a
seed, the result does not depend on the backend or the number of workers -- with one exception,
the steady-state loop with ``deterministic=False`` (see :func:`steady_state`).

Loops::

    generational()   select -> vary -> evaluate the new -> replace (elitism optional)
    mu_plus_lambda() / mu_comma_lambda()   evolution strategies, DEAP's varOr variation
    nsga2()          generational, multi-objective: non-dominated sort + crowding distance
    steady_state()   asynchronous: each returned evaluation is inserted at once and a new
                     offspring submitted -- no generational barrier, every worker kept busy
    ask_tell()       an external optimiser (``cma.CMAEvolutionStrategy``, ...) evaluated here

Representation: a population is a 2-D numpy array of genomes, shape ``(n, d)``; fitness a 2-D
float array ``(n, m)`` of raw objective values; ``weights`` say which way each objective is better
(``+1`` maximise, ``-1`` minimise, as DEAP's).  The state between generations is plain data
(:class:`State`): numpy arrays, numbers and the generator's state dict, so a checkpoint restores a
run bit-identically (``resume=state``).

Checkpoints (every loop): ``checkpoint=PATH`` writes the loop's whole state there -- when it
starts, every ``checkpoint_every`` seconds (default 60) and/or ``checkpoint_every_generations``,
when it ends, and when SIGUSR1 or SIGTERM asks it to stop; ``resume=True`` (or a path) continues
from it.  The launcher's ``--checkpoint``, ``--checkpoint-every``,
``--checkpoint-every-generations`` and ``--resume`` are the defaults of these keywords
(:func:`evocluster.checkpoint.set_defaults`), so a job checkpoints with no change.  A stop
abandons the evaluations in flight (they are evaluated again after the restart, under the same
task keys), writes the last complete state and raises
:class:`evocluster.checkpoint.Interrupted`, a ``SystemExit`` with code 75.  A resumed run ends
bit-identical to an uninterrupted one, on any backend and number of workers -- except
``steady_state(deterministic=False)``, whose results never were independent of timing.  A
checkpoint path is held by one run at a time; a checkpoint records the job, the fitness and the
settings that shape the run, and resuming it with others, or asking for fewer generations than it
holds, is refused (:class:`~evocluster.checkpoint.CheckpointError`, naming what differs).

Operator signatures (see :mod:`evocluster.operators`; bind options with ``functools.partial``)::

    select(scores, k, rng) -> indices          scores: 1-D, larger is better
    crossover(a, b, rng) -> (child1, child2)   a, b: (pairs, d)
    mutate(x, rng) -> x'                       x: (n, d)
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import functools
import hashlib
import numbers
import os
import pickle
import queue
import random
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, NoReturn

import numpy as np

from . import checkpoint as _checkpoint
from . import operators, pareto
from .errors import EvaluationError, Failure
from .rng import call as _seeded_call
from .rng import master as _master_rng

__all__ = [
    "Result",
    "State",
    "ask_tell",
    "best",
    "generational",
    "mu_comma_lambda",
    "mu_plus_lambda",
    "nsga2",
    "steady_state",
]

Fitness = Callable[..., Any]
Select = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]
Crossover = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]
Mutate = Callable[[np.ndarray, np.random.Generator], np.ndarray]
Population = np.ndarray | Callable[[np.random.Generator], np.ndarray]
Log = Callable[[str], object] | None
CheckpointPath = str | os.PathLike[str] | Literal[False] | None

_STEADY_KEY = 1  # task keys of the steady-state loop's offspring: (1, offspring number)


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
            "rng": _copy_plain(self.rng),
            "evaluations": self.evaluations,
            "history": _copy_plain(self.history),
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
                rng=_copy_plain(d["rng"]),
                evaluations=int(d["evaluations"]),
                history=_copy_plain(d["history"]),
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


def _copy_plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _copy_plain(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_copy_plain(v) for v in x]
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


# ---------------------------------------------------------------------------- evaluation
def _n_workers(executor: cf.Executor) -> int:
    """How many evaluations the executor runs at once (evocluster: ``n_workers``; stdlib:
    ``_max_workers``)."""
    for name in ("n_workers", "_max_workers"):
        n = getattr(executor, name, None)
        if isinstance(n, int) and n > 0:
            return n
    return 1


#: What a failed evaluation comes back as from an evocluster executor's ``with_policy`` handle
#: (its ``penalty``, handed back as this very object on the master, never sent): no fitness can
#: return it, so a slot holding it is a failure, never a value.
_SENTINEL = object()

_REPR_MAX = 120  # characters of a bad value's repr quoted in a message


@dataclass(frozen=True)
class _Policy:
    """What a loop does with a failed evaluation (the fitness raised, timed out, crashed, or
    returned something that is not one number per objective).

    ``on_error`` is ``"raise"``, ``"penalize"`` or ``"retry:N"``; a failure that is not (or no
    longer) retried is penalized when ``fallback`` says so, with ``penalty`` (one value per
    objective), and raised otherwise.  ``follow``: ``on_error`` was not given and the executor's
    own policy applies unchanged (its failures are then not counted by the engine).
    """

    on_error: str = "raise"
    retries: int = 0
    fallback: str = "raise"
    penalty: np.ndarray | None = None
    follow: bool = False

    @property
    def tolerant(self) -> bool:
        return self.on_error != "raise" and not self.follow


def _policy(on_error: str | None, penalty: Any, weights: np.ndarray, executor: object) -> _Policy:
    """The loop's :class:`_Policy` from its keywords; ``on_error=None``: the executor's own
    options where it has them (evocluster's: the launcher's ``--on-error``/``--penalty``), else
    ``"raise"``.

    Raises:
        ValueError: an unknown ``on_error``, or a penalty that is not one number per objective
            (or given under ``"raise"``).
    """
    if on_error is None:
        # duck-typed: evocluster's Executor.options (the stdlib's executors have none)
        options = getattr(executor, "options", None)
        on_error = getattr(options, "on_error", None)
        if not isinstance(on_error, str) or on_error == "raise":
            return _Policy(follow=True)
        if penalty is None:
            penalty = getattr(options, "penalty", None)
    if not isinstance(on_error, str):
        raise ValueError(f"on_error must be 'raise', 'penalize' or 'retry:N', not {on_error!r}")
    retry = on_error.startswith("retry:")
    if on_error not in ("raise", "penalize") and not (retry and on_error[6:].isdigit()):
        raise ValueError(
            f"on_error must be 'raise', 'penalize' or 'retry:N' (N a whole number), not "
            f"{on_error!r}"
        )
    if on_error == "raise":
        if penalty is not None:
            raise ValueError(
                "penalty= is what a failed evaluation gets under on_error='penalize' or "
                "'retry:N': it has no use with on_error='raise'"
            )
        return _Policy()
    retries = int(on_error[6:]) if retry else 0
    if on_error == "penalize" or penalty is not None:
        return _Policy(on_error, retries, "penalize", _penalty(penalty, weights))
    return _Policy(on_error, retries, "raise")


def _penalty(penalty: Any, weights: np.ndarray) -> np.ndarray:
    """The penalty as one value per objective: by default the worst, ``-inf`` where larger is
    better and ``+inf`` where smaller is."""
    if penalty is None:
        return np.where(weights > 0, -np.inf, np.inf)
    m = len(weights)
    numbers_, _ = _numbers(penalty)
    if numbers_ is not None and len(numbers_) != m:  # numbers, but not one per objective
        k = len(numbers_)
        example = ""
        if isinstance(penalty, numbers.Real):  # the one value for each objective
            example = ", e.g. (" + ", ".join([_short_repr(penalty)] * m) + ")"
        raise ValueError(
            f"penalty {_short_repr(penalty)} gives {k} value{'s' if k != 1 else ''} where "
            f"there {'are' if m != 1 else 'is'} {m} objective{'s' if m != 1 else ''}: give one "
            f"per objective{example}"
        )
    value, why = _objectives(penalty, m)
    if value is None:
        raise ValueError(f"penalty must be {_EXPECTED.format(m=m)}, got {penalty!r}: {why}")
    return value


_EXPECTED = "a number, or one number per objective ({m})"
_TOO_LARGE = "too large for a float"  # (the start of the reason: a ValueError, as NaN's)


def _numbers(raw: Any) -> tuple[np.ndarray | None, str]:
    """``raw`` as a 1-D float array of the numbers it holds, or ``(None, why not)`` (see
    :func:`_objectives`)."""
    try:
        if isinstance(raw, bool | np.bool_):
            return None, "a bool is not a fitness (return float(flag) if 0/1 is meant)"
        if isinstance(raw, numbers.Real):
            return np.array([float(raw)]), ""
        if isinstance(raw, np.ndarray):
            if raw.dtype.kind not in "iuf" or raw.ndim > 1:
                what = "bool" if raw.dtype.kind == "b" else str(raw.dtype)
                return None, f"an array of {what}, shape {raw.shape}"
            return raw.astype(np.float64).reshape(-1), ""
        if isinstance(raw, list | tuple):
            odd = [
                x for x in raw if isinstance(x, bool | np.bool_) or not isinstance(x, numbers.Real)
            ]
            if odd:
                return None, f"a {type(raw).__name__} holding a {type(odd[0]).__name__}"
            return np.array([float(x) for x in raw], dtype=np.float64), ""
    except OverflowError:  # float(10**400): a bad value like any other, not a crash
        return None, f"{_TOO_LARGE} (floats end near 1.8e308; scale the objective down)"
    return None, f"a {type(raw).__module__}.{type(raw).__qualname__}, not a number"


def _objectives(raw: Any, m: int) -> tuple[np.ndarray | None, str]:
    """``raw`` as an ``(m,)`` float array, or ``(None, why not)``.

    Strict on purpose: a number (``int``, ``float``, numpy's integers and floats, any
    ``numbers.Real``), or a list, tuple or 0/1-D numeric array of ``m`` of them; no NaN, and
    none beyond what a float holds (an ``int`` such as ``10**400``).  Strings, bytes, ``None``,
    dicts, complex numbers and arrays of another shape are refused, and so are bools (Python's
    and numpy's), although numpy would take them as 1.0 and 0.0: a fitness that returns
    ``True``/``False`` nearly always returns a comparison or a feasibility flag where it meant a
    value, and the run would then optimise that flag without a word.  (Return ``float(flag)``
    when 0/1 is meant.)
    """
    v, why = _numbers(raw)
    if v is None:
        return None, why
    if len(v) != m:
        return None, f"{len(v)} numbers where there are {m} objective(s)"
    if np.isnan(v).any():
        return None, "NaN is not a number to compare (use +/-inf for an infeasible individual)"
    return v, ""


def _short_repr(x: Any) -> str:
    try:
        text = repr(x)
    except Exception as e:  # a user's object whose __repr__ fails: still name it
        text = f"<{type(x).__qualname__} whose repr raised {type(e).__name__}>"
    return text if len(text) <= _REPR_MAX else text[: _REPR_MAX - 3] + "..."


def _function_name(fn: Any) -> str:
    """``module.qualname`` of the fitness (through ``functools.partial``)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    module = getattr(fn, "__module__", None) or type(fn).__module__
    return f"{module}.{name}"


def _qualified(exc: BaseException) -> str:
    return f"{type(exc).__module__}.{type(exc).__qualname__}"


class _Guarded:
    """The evaluation shipped to an executor that has no failure policy of its own (the stdlib's
    thread and process pools) under ``on_error="penalize"`` or ``"retry:N"``: it runs where the
    fitness runs, catches an ``Exception`` there, evaluates again in place up to ``retries``
    times, and returns ``(ok, value, seconds, attempts)`` -- ``attempts``: one small picklable
    ``(error, message, seconds, worker)`` per failed attempt.  With ``raise_last`` (no penalty
    to fall back on) the last failure is raised as itself instead."""

    __slots__ = ("call", "raise_last", "retries")

    def __init__(self, call: Callable[..., Any], retries: int, raise_last: bool) -> None:
        self.call, self.retries, self.raise_last = call, retries, raise_last

    def __reduce__(self) -> tuple[type[_Guarded], tuple[Any, ...]]:
        return (type(self), (self.call, self.retries, self.raise_last))

    def __call__(
        self, key: tuple[int, ...], genome: np.ndarray
    ) -> tuple[bool, Any, float, tuple[tuple[str, str, float, str], ...]]:
        attempts: list[tuple[str, str, float, str]] = []
        for attempt in range(self.retries + 1):
            start = time.perf_counter()
            try:
                raw, seconds = self.call(key, genome)
            except Exception as e:
                if attempt == self.retries and self.raise_last:
                    raise
                where = f"pid {os.getpid()} ({threading.current_thread().name})"
                attempts.append((_qualified(e), str(e), time.perf_counter() - start, where))
                continue
            return True, raw, seconds, tuple(attempts)
        return False, None, 0.0, tuple(attempts)


Records = list[tuple[tuple[int, ...], Failure]]


class _Evaluator:
    """Sends individuals to the executor with their task keys; checks and collects fitness, and
    applies the loop's failure policy.

    Three ways, chosen once: ``"raise"`` (or the executor's own policy followed): the plain
    seeded call, a failure ends the loop with :class:`EvaluationError`.  Tolerant, on an
    evocluster executor (it has ``with_policy``): a handle on it whose penalty is
    :data:`_SENTINEL`, so timeouts and crashed processes are failures too, retried on another
    worker; the handle's ``failures`` give the records.  Tolerant, on any other executor: the
    call is wrapped by :class:`_Guarded`.  Every failure becomes a ``(task key, Failure)`` record
    in the state, whose ``penalized`` mask marks the members holding a penalty.
    """

    def __init__(
        self,
        executor: cf.Executor,
        fitness: Fitness,
        seed: int,
        weights: Sequence[float] | np.ndarray,
        log: Log,
        waiting: AbstractContextManager[Any] | None = None,
        on_error: str | None = None,
        penalty: Any = None,
    ) -> None:
        if not isinstance(executor, cf.Executor):
            raise TypeError(
                f"executor must be a concurrent.futures.Executor (e.g. evocluster.get_executor()),"
                f" got {type(executor).__name__}"
            )
        if not callable(fitness):
            raise TypeError(f"fitness must be callable, got {type(fitness).__name__}")
        self.executor = executor
        self.fitness = fitness
        self.name = _function_name(fitness)
        self.call = functools.partial(_seeded_call, fitness, seed)  # one object: shipped once
        self.weights = _weights(weights)
        self.policy = _policy(on_error, penalty, self.weights, executor)
        self.workers = _n_workers(executor)
        self.log = log
        self.busy = 0.0  # seconds of evaluation reported by the workers since the last report
        # around every wait for results: a checkpointing loop's signals may interrupt it there
        self.waiting = waiting if waiting is not None else contextlib.nullcontext()
        self.target: cf.Executor = executor  # where evaluations go...
        self.task: Callable[..., Any] = self.call  # ...and what they run
        self.handle: Any = None  # the with_policy handle, on an evocluster executor
        self.claimed = 0  # records of the handle's submits already given to a result
        self.lock = threading.Lock()  # guards claimed: submits are collected by one thread,
        # but a loop may be driven from several (no loop here is; cheap insurance)
        self.reported: tuple[int, int, int] | None = None  # (rows, failed, retried) in rows
        p = self.policy
        if p.tolerant and hasattr(executor, "with_policy"):
            # every failure comes back as _SENTINEL; under a "raise" fallback the loop raises
            # it itself (a penalty of None would mean the executor's own penalty)
            self.handle = executor.with_policy(on_error=p.on_error, penalty=_SENTINEL)
            self.target = self.handle
        elif p.tolerant:
            self.task = _Guarded(self.call, p.retries, raise_last=p.fallback == "raise")

    # ---------------------------------------------------------------- values
    def value(self, raw: Any, key: tuple[int, ...]) -> np.ndarray:
        """One fitness value as an ``(m,)`` float array, or a ``TypeError``/``ValueError``
        naming the fitness, the task and what came back."""
        v, why = _objectives(raw, len(self.weights))
        if v is None:
            value = why[:1].isdigit() or why.startswith(("NaN", _TOO_LARGE))
            kind = ValueError if value else TypeError
            raise kind(
                f"the fitness {self.name} returned {_short_repr(raw)} for task {key}: {why}; "
                f"it must return {_EXPECTED.format(m=len(self.weights))}"
            )
        return v

    def record(
        self,
        records: Records,
        key: tuple[int, ...],
        error: str,
        message: str,
        *,
        worker: str = "",
        attempt: int = 1,
        seconds: float = 0.0,
        action: str = "penalized",
    ) -> None:
        failure = Failure(key[-1], error, message, worker, attempt, seconds, action, self.name)
        records.append((key, failure))

    def outcome(
        self, result: Any, key: tuple[int, ...], records: Records
    ) -> tuple[np.ndarray, bool]:
        """What one evaluation's ``result`` (as the target returned it) makes: its fitness and
        whether it is a penalty.  A failure gets its record(s) in ``records`` (those of an
        evocluster handle are added by the caller); a failure the policy does not penalize
        raises."""
        p = self.policy
        if result is _SENTINEL:
            return self.penalize_or_raise(key, records)
        if isinstance(self.task, _Guarded):
            ok, result, seconds, attempts = result
            for i, (error, message, secs, where) in enumerate(attempts):
                action = "retried" if ok or i < len(attempts) - 1 else "penalized"
                self.busy += secs
                self.record(records, key, error, message, worker=where, attempt=i + 1,
                            seconds=secs, action=action)  # fmt: skip
            if not ok:
                assert p.penalty is not None  # _Guarded raises when there is no fallback
                return p.penalty, True
            result = (result, seconds)
        if not (isinstance(result, tuple) and len(result) == 2):  # an executor's own penalty
            result = (result, 0.0)  # (on_error=None, its options unknown): taken as a value
        raw, seconds = result
        self.busy += seconds
        if not p.tolerant or p.fallback == "raise":
            return self.value(raw, key), False
        try:
            return self.value(raw, key), False
        except (TypeError, ValueError) as e:  # a bad value is that evaluation's failure:
            assert p.penalty is not None  # penalized (not retried: the same task key draws
            self.record(records, key, _qualified(e), str(e), seconds=seconds)  # the same)
            return p.penalty, True

    def penalize_or_raise(self, key: tuple[int, ...], records: Records) -> tuple[np.ndarray, bool]:
        """A failure reported by an evocluster handle (``_SENTINEL``): the penalty, or -- with
        no penalty to fall back on -- an :class:`EvaluationFailed` naming it (the handle's
        record says what happened; the caller adds it to ``records`` first)."""
        p = self.policy
        if p.fallback == "penalize" and p.penalty is not None:
            return p.penalty, True
        last = next((f for k, f in reversed(records) if k == key), None)
        what = f"{last.error}: {last.message} ({last.worker})" if last else "it failed"
        raise RetriesExhausted(
            f"the fitness {self.name} failed for task {key} after {p.retries + 1} attempt(s): "
            f"{what}"
        )

    # ---------------------------------------------------------------- whole generations
    def evaluate(
        self, genomes: np.ndarray, keys: Sequence[tuple[int, ...]], state: State
    ) -> tuple[np.ndarray, np.ndarray]:
        """Fitness ``(k, m)`` of ``genomes`` (in order) and which of them are penalties; their
        failure records go into ``state.failures``.  A failure the policy does not penalize
        raises :class:`EvaluationError` carrying ``state`` (the last complete one)."""
        out = np.empty((len(genomes), len(self.weights)))
        bad = np.zeros(len(genomes), dtype=bool)
        if not len(genomes):
            return out, bad
        records: Records = []
        done = 0  # results in: the first one missing is the one that failed
        try:
            seen = len(self.handle.failures) if self.handle is not None else 0
            results = self.target.map(self.task, keys, list(genomes))
            slots: list[Any] = []
            try:
                with self.waiting:
                    for result in results:
                        slots.append(result)
                        if result is not _SENTINEL:
                            out[done], bad[done] = self.outcome(result, keys[done], records)
                        done += 1
            finally:  # abandoned (a stop, a failure): what has not started is cancelled now
                close = getattr(results, "close", None)
                if close is not None:
                    close()
            if self.handle is not None:  # the map is complete: its records are all in, in the
                # order they were settled: put them in the map's (any executor, same records)
                mine = sorted(self.handle.failures[seen:], key=lambda f: (f.item, f.attempt))
                for f in mine:
                    key = keys[f.item]
                    records.append((key, f._replace(item=key[-1], function=self.name)))
                self.unrecorded(slots, keys, records)
                for done, result in enumerate(slots):  # (done: names the one that raises)
                    if result is _SENTINEL:
                        out[done], bad[done] = self.penalize_or_raise(keys[done], records)
        except Exception as e:
            raise _failed(e, keys[min(done, len(keys) - 1)], state) from e
        state.failures.extend(records)
        return out, bad

    def unrecorded(
        self, slots: list[Any], keys: Sequence[tuple[int, ...]], records: Records
    ) -> None:
        """A record for each failed slot the handle has none for, so the counts stay exact
        (the executor may not have recorded it: a failure settled before its job was
        registered)."""
        final = {k for k, f in records if f.action != "retried"}
        for key, result in zip(keys, slots, strict=True):
            if result is _SENTINEL and key not in final:
                self.record(records, key, "", "the executor returned no record of this failure")

    # ---------------------------------------------------------------- one at a time
    def submit(self, genome: np.ndarray, key: tuple[int, ...]) -> cf.Future[Any]:
        return self.target.submit(self.task, key, genome)

    def collect(
        self, future: cf.Future[Any], key: tuple[int, ...], state: State
    ) -> tuple[np.ndarray, bool]:
        """The fitness of a submitted evaluation and whether it is a penalty (records into
        ``state.failures``); raises as :meth:`evaluate`."""
        records: Records = []
        try:
            with self.waiting:
                result = future.result()
            if result is _SENTINEL:
                records.extend(self.claim(future, key))
                self.unrecorded([result], [key], records)
            value = self.outcome(result, key, records)
        except Exception as e:
            raise _failed(e, key, state) from e
        state.failures.extend(records)
        return value

    def claim(self, future: cf.Future[Any], key: tuple[int, ...]) -> Records:
        """The handle's record of the failed submit ``future``: its own ``failures`` where the
        future carries them; otherwise the next final record (penalized or raised) not yet
        claimed, in the order the handle recorded them.  (A submit's record says ``index`` 0:
        when two fail together and are collected out of their order, their messages may be
        swapped; the count is always right.  Retried attempts of submits are not claimed.)"""
        own = getattr(future, "failures", None)
        if own is None:
            with self.lock:
                records = self.handle.failures
                at = self.claimed
                while at < len(records) and records[at].action == "retried":
                    at += 1
                own = records[at : at + 1]
                self.claimed = at + len(own)
        return [(key, f._replace(item=key[-1], function=self.name)) for f in own]

    # ---------------------------------------------------------------- statistics
    def unreported(self, state: State) -> tuple[int, int]:
        """Failures recorded in ``state`` but not yet in a statistics row: ``(penalized,
        retried)``.  Counted from the state alone (its history and records), so a resumed run's
        rows are an uninterrupted one's."""
        rows = len(state.history)
        if self.reported is None or self.reported[0] != rows:
            failed = sum(r.get("failed", 0) for r in state.history)
            retried = sum(r.get("retried", 0) for r in state.history)
            self.reported = (rows, failed, retried)
        penalized = sum(1 for _, f in state.failures if f.action == "penalized")
        retried = sum(1 for _, f in state.failures if f.action == "retried")
        return penalized - self.reported[1], retried - self.reported[2]


class RetriesExhausted(Exception):
    """A failure an evocluster handle reported after its retries, with no penalty to give
    (the cause of the loop's :class:`EvaluationError`; not exported)."""


def _failed(exc: Exception, key: tuple[int, ...], state: State) -> EvaluationError:
    fix = (
        "in a new run (the pool cannot be used any more)"
        if isinstance(exc, cf.BrokenExecutor)
        else "once the fitness is fixed"
    )
    return EvaluationError(
        f"evaluation {key} failed: {type(exc).__name__}: {exc}\nThe state after generation "
        f"{state.generation} ({state.evaluations} evaluations) is kept: pass the exception's "
        f".state as resume= {fix} to go on from there",
        state,
        key,
    )


def _weights(weights: Sequence[float] | np.ndarray) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if not len(w) or not np.all(np.isfinite(w)) or np.any(w == 0):
        raise ValueError(f"weights must be non-zero numbers, one per objective, got {weights!r}")
    return w


def _scalar_scores(fitness: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return np.asarray(fitness[:, 0] * weights[0])


def _start(
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
    _check_whole("seed", seed, 0)
    gen = _master_rng(int(seed))
    genomes = _initial(population, gen)
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


def _initial(population: Population, gen: np.random.Generator) -> np.ndarray:
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


def _check_whole(name: str, value: Any, low: int) -> None:
    """``value`` must be a whole number (an ``int`` or numpy integer, not a bool) >= ``low``.

    Raises:
        ValueError: naming the argument and the value.
    """
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _check_counts(**counts: Any) -> None:
    """Each of ``counts`` (``generations``, ``seed``, ``evaluations``...) must be an integer
    >= 0: ``generations=2.5``, ``-1`` or ``seed=True`` are refused, naming the argument.

    Raises:
        ValueError: the first that is not.
    """
    for name, value in counts.items():
        _check_whole(name, value, 0)


def _setting(value: Any) -> Any:
    """A loop's argument as a checkpoint records it, to be compared on resume: numbers as
    numbers, operators by qualified name (through ``functools.partial``), sequences as lists."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if callable(value):
        return _function_name(value)
    if isinstance(value, list | tuple | np.ndarray):
        return [_setting(v) for v in value]
    return f"{type(value).__module__}.{type(value).__qualname__}"


def _shape(genomes: np.ndarray) -> str:
    """``100 x 64 (bool)``: a population's size, genome shape and dtype, for a message."""
    return " x ".join(str(n) for n in genomes.shape) + f" ({genomes.dtype})"


def _stats(
    ev: _Evaluator,
    state: State,
    evals: int,
    wall: float,
    extra: dict[str, Any] | None = None,
    members: np.ndarray | None = None,
) -> None:
    """Append a statistics row for ``state`` to its history; log it on one line.

    The statistics (min, mean, max, std) are of the members that hold a fitness of their own --
    ``members`` (a mask, default all) less the penalized ones: a penalty (``-inf`` by default)
    would make them meaningless.  NaN when no member has one.  The row counts the evaluations
    ``failed`` (penalized) and ``retried`` since the last row, each only when not zero."""
    keep = ~state.penalized if members is None else members & ~state.penalized
    f = state.fitness[keep]
    nan = [float("nan")] * state.fitness.shape[1]
    empty = not len(f)
    with np.errstate(invalid="ignore"):  # an infeasible member's documented +/-inf: NaN, quietly
        mean = nan if empty else f.mean(axis=0).tolist()
        std = nan if empty else f.std(axis=0).tolist()
    row: dict[str, Any] = {
        "generation": state.generation,
        "evals": evals,
        "evaluations": state.evaluations,
        "min": nan if empty else f.min(axis=0).tolist(),
        "mean": mean,
        "max": nan if empty else f.max(axis=0).tolist(),
        "std": std,
        "seconds": wall,
        "evals_per_s": evals / wall if wall > 0 else 0.0,
        "utilisation": min(1.0, ev.busy / (ev.workers * wall)) if wall > 0 else 0.0,
    }
    if extra:
        row |= extra
    failed, retried = ev.unreported(state)
    if failed:
        row["failed"] = failed
    if retried:
        row["retried"] = retried
    ev.busy = 0.0
    state.history.append(row)
    if ev.log is not None:
        ev.log(_format(row))


def _format(row: dict[str, Any]) -> str:
    objectives = "  ".join(
        f"min {lo:.6g} mean {mu:.6g} max {hi:.6g} std {sd:.3g}"
        for lo, mu, hi, sd in zip(row["min"], row["mean"], row["max"], row["std"], strict=True)
    )
    extra = "".join(
        f"  {k} {v:.6g}" if isinstance(v, float) else f"  {k} {v}"
        for k, v in row.items()
        if k
        not in {
            "generation",
            "evals",
            "evaluations",
            "min",
            "mean",
            "max",
            "std",
            "seconds",
            "evals_per_s",
            "utilisation",
        }
    )
    return (
        f"gen {row['generation']:>4}  evals {row['evals']:>5} ({row['evaluations']})  {objectives}"
        f"  {row['evals_per_s']:.0f} evals/s  util {row['utilisation']:.2f}{extra}"
    )


# ---------------------------------------------------------------------------- checkpoints
class _Checkpointing:
    """One loop's checkpoints: where, how often, what it resumes from, and the signals that stop
    it.  Without a path (no ``checkpoint=``, no launcher ``--checkpoint``) it does nothing.

    The loop hands :meth:`track` a function returning its state now, ``(State or None,
    loop-specific plain data or None)``.  That must be a complete, consistent point whenever the
    loop can be stopped: at a :meth:`safe_point`, and inside ``waiting`` (while it waits for
    evaluations the signal may interrupt it there; nothing of the step in progress has been
    written into the state yet).
    """

    def __init__(
        self,
        name: str,
        seed: int,
        log: Log,
        *,
        path: CheckpointPath,
        every: float | None,
        every_generations: int | None,
        resume: Resume,
    ) -> None:
        self.name, self.seed, self.log = name, seed, log
        self.given = resume if isinstance(resume, State) else None  # resume=State: that state
        self.entry: dict[str, Any] | None = None  # what the checkpoint holds for this loop
        self.item = 0  # this loop's place among the loops of the job using the file
        self.signals: _checkpoint.StopSignals | None = None
        self.waiting: AbstractContextManager[Any] = contextlib.nullcontext()
        self.snapshot: Callable[[], tuple[State | None, Any]] | None = None
        self.saved_at, self.saved_generation = time.monotonic(), -1
        self.every: float | None = None
        self.every_generations: int | None = None
        self.identity: dict[str, Any] = {}  # what the entry records it belongs to (identify)
        launcher = _checkpoint.defaults()
        source = None  # resume=PATH: read there
        if isinstance(resume, str | os.PathLike):
            source, resume = Path(resume), True
        if path is False:
            self.path = None
        elif path is not None:
            self.path = Path(path)
        else:
            self.path = Path(launcher.path) if launcher.path else source
        if self.path is None:
            if resume is True:
                raise ValueError(
                    f"{name}(resume=...) continues a run from its checkpoint: give "
                    "checkpoint=PATH (or the launcher's --checkpoint PATH)"
                )
            return
        self._periods(
            launcher.every if every is None else every,
            launcher.every_generations if every_generations is None else every_generations,
        )
        mode: bool | None = None  # None: afresh, but never over an existing file
        if self.given is not None or resume is False:
            mode = False
        elif resume is True or launcher.resume:
            mode = True
        elif _checkpoint.slurm_restarted() and (source or self.path).exists():
            mode = True  # SLURM requeued the job: resume where it stopped
        self.read_from = source or self.path  # where the entry came from, for messages
        self.item, self.entry = _checkpoint.engine_slot(
            self.path, algorithm=name, seed=seed, resume=mode, source=source
        )
        self.signals = _checkpoint.StopSignals()
        self.waiting = self.signals.waiting

    def identify(
        self,
        fitness: Fitness,
        settings: dict[str, Any],
        population: Population | None = None,
        seed: int = 0,
    ) -> None:
        """Record what this loop's entry belongs to -- the job, the fitness's qualified name,
        the ``settings`` that shape the run -- and refuse an entry of the checkpoint that
        belongs to something else, naming what differs.  The population is compared by size,
        genome shape and dtype with the checkpoint's (``population`` called once, on a
        generator of its own, if it is a function: nothing of the run draws from it).

        What does not shape the run is not compared: the backend, the number of workers, the
        working directory (the job by its file's name), the checkpoint period, the statistics.
        An entry written before these were recorded is not checked.

        Raises:
            CheckpointError: ``mismatch``.
        """
        if self.path is None:
            return
        mine = {k: _setting(v) for k, v in settings.items()}
        ours: dict[str, Any] = {"job": _checkpoint.job_name(), "fitness": _function_name(fitness)}
        self.identity = ours | {"settings": mine}
        e = self.entry
        if e is None:
            return
        differ: list[tuple[str, Any, Any]] = [
            (name, e[name], ours[name])
            for name in ("job", "fitness")
            if e.get(name) is not None and ours[name] is not None and e[name] != ours[name]
        ]
        saved = e.get("settings") or {}
        differ += [(k, saved[k], v) for k, v in mine.items() if k in saved and saved[k] != v]
        state = e.get("state")
        if population is not None and state is not None:
            theirs = _shape(np.asarray(state["genomes"]))
            this = _shape(_initial(population, _master_rng(int(seed))))
            if theirs != this:
                differ.append(("population", theirs, this))
        if differ:
            raise _checkpoint.CheckpointError(
                "mismatch",
                self.read_from or self.path,
                f"loop {self.item + 1} of the run it holds is {self.name}() of "
                + ", ".join(f"{k} {_quote(a)}" for k, a, _ in differ)
                + "; this run's is of "
                + ", ".join(f"{k} {_quote(b)}" for k, _, b in differ)
                + ": resume it with the job and settings that wrote it, or start afresh "
                "with another checkpoint path (or resume=False)",
            )

    def reached(self, until: int, what: str = "generations", done: int | None = None) -> None:
        """Refuse to resume a run that has done more than ``until`` (``what=until`` asks for
        fewer generations, or evaluations, iterations, than it holds: ``done``, by default the
        generation of its state): continuing it to more is the feature, returning more than
        asked for without a word is not.

        Raises:
            CheckpointError: ``mismatch``; ValueError: the same for ``resume=State``.
        """
        if self.given is not None and self.given.generation > until:
            raise ValueError(
                f"resume= is a state at generation {self.given.generation}, and this call asks "
                f"for {what}={until}: ask for {self.given.generation} or more to go on from it"
            )
        state = self.entry.get("state") if self.entry is not None else None
        if done is None:
            done = state["generation"] if state is not None else 0
        if done > until:
            raise _checkpoint.CheckpointError(
                "mismatch",
                self.read_from or self.path or "",
                f"{self.name}() had done {done} {what} in it, and this call asks for "
                f"{what}={until}: ask for {done} or more to continue it (exactly {done}: its "
                "result as saved), or start afresh (resume=False, or another checkpoint path)",
            )

    def _periods(self, every: float | None, every_generations: int | None) -> None:
        _checkpoint.check_every(every, every_generations)
        if every is None and every_generations is None:
            every = _checkpoint.DEFAULT_EVERY
        self.every, self.every_generations = every, every_generations

    def __enter__(self) -> _Checkpointing:
        if self.signals is not None:
            self.signals.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.signals is not None:
            self.signals.__exit__(kind, exc, tb)

    def _say(self, message: str) -> None:
        if self.log is not None:
            self.log(message)

    def finished(self, until: int | None = None) -> Result | None:
        """The stored result, if the checkpoint says this loop had finished -- unless ``until``
        asks for more generations than it had: then it goes on from there."""
        e = self.entry
        if e is None or not e["finished"]:
            return None
        state = State.from_dict(e["state"])
        if until is not None and state.generation < until:
            self.entry = e | {"finished": False}
            return None
        self._say(
            f"{self.name}() had finished in {self.path} (generation {state.generation}, "
            f"{state.evaluations} evaluations): its result is returned, nothing is evaluated again"
        )
        return Result(state, np.asarray(e["best"]), np.asarray(e["best_fitness"]))

    def resumed(self) -> dict[str, Any] | None:
        """What the checkpoint holds for this loop, to go on from (``None``: start afresh)."""
        e = self.entry
        if e is None or e["finished"]:
            return None
        g = e["state"]["generation"] if e["state"] is not None else 0
        n = e["state"]["evaluations"] if e["state"] is not None else 0
        self._say(f"resumed {self.name}() from {self.path}: generation {g}, {n} evaluations")
        self.saved_generation = g
        return e

    def start_state(self) -> State | None:
        """The state a generational loop resumes from: ``resume=State``, or the checkpoint's."""
        if self.given is not None:
            return self.given
        e = self.resumed()
        return State.from_dict(e["state"]) if e is not None else None

    def track(self, snapshot: Callable[[], tuple[State | None, Any]]) -> None:
        """The loop's state from now on; written at once when the checkpoint has none yet."""
        self.snapshot = snapshot
        if self.path is not None and self.entry is None:
            self.save()

    def safe_point(self, generation: int) -> None:
        """Between generations: stop if a signal asked to; write a checkpoint when one is due."""
        if self.signals is None:
            return
        if self.signals.signal is not None:
            self.stop()
        gens, every = self.every_generations, self.every
        if (gens is not None and generation - self.saved_generation >= gens) or (
            every is not None and time.monotonic() - self.saved_at >= every
        ):
            self.save()

    def save(self, result: Result | None = None) -> None:
        """Write the loop's state now (``result``: its final one)."""
        assert self.snapshot is not None and self.path is not None
        state, data = self.snapshot()
        if result is not None:
            state = result.state
        entry: dict[str, Any] = {
            "algorithm": self.name,
            "seed": self.seed,
            "finished": result is not None,
            "state": None if state is None else state.to_dict(),
            "loop": data,
        }
        if result is not None:
            entry |= {"best": result.best.copy(), "best_fitness": result.best_fitness.copy()}
        entry |= self.identity
        generation = state.generation if state is not None else 0
        _checkpoint.write_engine_slot(
            self.path,
            self.item,
            entry,
            extra={
                "generation": generation,
                "evaluations": state.evaluations if state is not None else 0,
                "finished": result is not None,
                "job": self.identity.get("job"),
                "fitness": self.identity.get("fitness"),
            },
        )
        self.saved_at, self.saved_generation = time.monotonic(), generation

    def stop(self, cause: Exception | None = None, finished: Result | None = None) -> NoReturn:
        """Write the checkpoint (unless ``finished`` was just written), say so on stderr, and
        raise :class:`~evocluster.checkpoint.Interrupted` (exit code 75)."""
        assert self.signals is not None and self.signals.signal is not None
        assert self.snapshot is not None and self.path is not None
        if finished is None:
            self.save()
            state = self.snapshot()[0]
        else:
            state = finished.state
        if finished is not None:
            what = "as it finished (its result is saved)"
        elif state is None:
            what = "before its first iteration"
        elif np.isnan(state.fitness).any() and state.evaluations == 0:
            what = "before its initial population was evaluated"
        else:
            what = f"at generation {state.generation}, {state.evaluations} evaluations"
        if finished is None:
            what += " (the evaluations in flight are abandoned: they run again on resume)"
        name = signal.Signals(self.signals.signal).name
        message = (
            f"{name}: {self.name}() stopped {what}; its checkpoint is {self.path}. Exit code "
            f"{_checkpoint.EXIT_TEMPFAIL}: run the same command with --resume (resume=True) to "
            "go on (automatic when SLURM requeues the job)"
        )
        print(f"evocluster: {message}", file=sys.stderr, flush=True)
        _checkpoint.forget_engine_run(self.path)  # the job's run ends here; a resume is a new one
        raise _checkpoint.Interrupted(message, self.path, self.signals.signal, state) from cause

    def handle(self, exc: BaseException) -> None:
        """The loop is left by ``exc``: if that is the stop, checkpoint and raise
        :class:`~evocluster.checkpoint.Interrupted` instead; otherwise return (the caller
        re-raises).  A loop that fails before it has begun (bad arguments) gives its place in
        the checkpoint's run back."""
        if self.path is not None and self.snapshot is None:  # failed before it began: its
            _checkpoint.release_engine_slot(self.path, self.item)  # place is the next call's
        if self.signals is not None and self.snapshot is not None and self.signals.is_stop(exc):
            self.stop(exc if isinstance(exc, Exception) else None)

    def finish(self, result: Result) -> Result:
        """The loop has ended: write its final state; a signal received on the way still ends
        the process with 75 (the batch system asked it to stop), the result saved."""
        if self.path is None:
            return result
        self.save(result)
        if self.signals is not None and self.signals.signal is not None:
            self.stop(finished=result)
        return result


def _quote(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


def _checkpointing(
    name: str,
    seed: int,
    log: Log,
    resume: Resume,
    checkpoint: CheckpointPath,
    every: float | None,
    every_generations: int | None,
) -> _Checkpointing:
    return _Checkpointing(
        name,
        seed,
        log,
        path=checkpoint,
        every=every,
        every_generations=every_generations,
        resume=resume,
    )


def _begin(
    name: str,
    fitness: Fitness,
    population: Population,
    *,
    executor: cf.Executor,
    seed: int,
    weights: Sequence[float],
    log: Log,
    ck: _Checkpointing,
    probabilities: dict[str, float],
    check: Callable[[int], None] | None = None,
    single_objective: bool = True,
    report: Report = None,
    on_error: str | None = None,
    penalty: Any = None,
) -> tuple[State, np.random.Generator, _Evaluator]:
    """The start every generational loop shares, in this order: check the weights, the
    ``probabilities`` (name -> value) and, once the population size is known, ``check(size)``;
    resume (``resume=State`` or the checkpoint's) or begin a new state, which is checkpointed at
    once; on a state not yet evaluated, evaluate the initial population and write its statistics
    row.  Returns the state, the master generator and the evaluator (``ev.weights``: the checked
    weights)."""
    w = _weights(weights)
    for option, p in probabilities.items():
        _check_probability(option, p)
    state, rng, fresh = _start(name, population, seed, w, ck.start_state(), single_objective)
    if check is not None:
        check(len(state.genomes))
    ev = _Evaluator(executor, fitness, seed, w, log, ck.waiting, on_error, penalty)
    ck.track(lambda: (state, None))  # the loops change this state only once a step is complete
    if fresh is not None:
        _evaluate_initial(ev, state, rng, fresh, report)
    return state, rng, ev


Step = Callable[[State, np.random.Generator, _Evaluator], int]


def _generations(
    name: str,
    step: Step,
    fitness: Fitness,
    population: Population,
    *,
    executor: cf.Executor,
    generations: int,
    seed: int,
    weights: Sequence[float],
    log: Log,
    ck: _Checkpointing,
    probabilities: dict[str, float],
    check: Callable[[int], None] | None = None,
    single_objective: bool = True,
    report: Report = None,
    on_error: str | None = None,
    penalty: Any = None,
    settings: dict[str, Any] | None = None,
) -> Result:
    """The generational loops' driver: :func:`_begin`, then ``step(state, rng, ev)`` (make the
    next generation into ``state``, return the evaluations it needed) until ``generations``;
    checkpoints between generations, a stop by a signal at any wait.  ``settings``: what the
    checkpoint records of the loop's arguments (see :meth:`_Checkpointing.identify`)."""
    try:
        ck.identify(fitness, (settings or {}) | {"weights": weights}, population, seed)
        ck.reached(generations)
        done = ck.finished(generations)
    except BaseException as e:
        ck.handle(e)  # (gives its place in the checkpoint's run back)
        raise
    if done is not None:
        return done
    with ck:
        try:
            state, rng, ev = _begin(
                name,
                fitness,
                population,
                executor=executor,
                seed=seed,
                weights=weights,
                log=log,
                ck=ck,
                probabilities=probabilities,
                check=check,
                single_objective=single_objective,
                report=report,
                on_error=on_error,
                penalty=penalty,
            )
            while state.generation < generations:
                ck.safe_point(state.generation)
                t0 = time.perf_counter()
                evals = step(state, rng, ev)
                _advance(ev, state, rng, evals, t0, report)
            return ck.finish(_result(state, ev.weights))
        except BaseException as e:
            ck.handle(e)
            raise


def _evaluate_initial(
    ev: _Evaluator,
    state: State,
    rng: np.random.Generator,
    genomes: np.ndarray,
    report: Callable[[State], dict[str, Any]] | None = None,
) -> None:
    """Generation 0: evaluate the initial ``genomes`` (task keys ``(0, i)``) into ``state``,
    keep the generator's state, write the first statistics row."""
    t0 = time.perf_counter()
    n = len(genomes)
    state.fitness, state.penalized = ev.evaluate(genomes, [(0, i) for i in range(n)], state)
    state.evaluations = n
    state.rng = dict(rng.bit_generator.state)
    _stats(ev, state, n, time.perf_counter() - t0, report(state) if report else None)


def _check_probability(name: str, p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")


def _check_elitism(elitism: int, n: int) -> None:
    if not 0 <= elitism < n:
        raise ValueError(f"elitism must be in [0, {n - 1}] for a population of {n}")


def _check_lambda(name: str, plus: bool, lambda_: int, mu: int) -> None:
    if lambda_ < 1 or (not plus and lambda_ < mu):
        raise ValueError(f"lambda_ must be >= {1 if plus else mu} for {name}() with mu = {mu}")


def _vary_pairs(
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


def _evaluate_changed(
    ev: _Evaluator,
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
    off_fit[todo], off_bad[todo] = ev.evaluate(off[todo], [(g, int(i)) for i in todo], state)
    return len(todo)


def _advance(
    ev: _Evaluator,
    state: State,
    rng: np.random.Generator,
    evals: int,
    t0: float,
    report: Callable[[State], dict[str, Any]] | None = None,
) -> None:
    """The population of ``state`` is the next generation's: count it, keep the generator's
    state (a checkpoint resumes from here), write its statistics row."""
    state.generation += 1
    state.evaluations += evals
    state.rng = dict(rng.bit_generator.state)
    _stats(ev, state, evals, time.perf_counter() - t0, report(state) if report else None)


# ---------------------------------------------------------------------------- loops
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

    _check_counts(generations=generations, seed=seed)
    _check_whole("elitism", elitism, 0)

    def step(state: State, rng: np.random.Generator, ev: _Evaluator) -> int:
        w, n = ev.weights, len(state.genomes)
        scores = _scalar_scores(state.fitness, w)
        parents = select(scores, n - elitism, rng)
        off, changed = _vary_pairs(state.genomes[parents], rng, crossover, mutate, cxpb, mutpb)
        off_fit, off_bad = state.fitness[parents], state.penalized[parents]  # (copies)
        evals = _evaluate_changed(ev, state, off, off_fit, off_bad, changed)
        elite = operators.truncation(scores, elitism) if elitism else np.empty(0, dtype=np.int64)
        state.genomes = np.concatenate([state.genomes[elite], off])
        state.fitness = np.concatenate([state.fitness[elite], off_fit])
        state.penalized = np.concatenate([state.penalized[elite], off_bad])
        return evals

    ck = _checkpointing(
        "generational",
        seed,
        log,
        resume,
        checkpoint,
        checkpoint_every,
        checkpoint_every_generations,
    )
    return _generations(
        "generational",
        step,
        fitness,
        population,
        executor=executor,
        generations=generations,
        seed=seed,
        weights=weights,
        log=log,
        ck=ck,
        probabilities={"cxpb": cxpb, "mutpb": mutpb},
        check=functools.partial(_check_elitism, elitism),
        on_error=on_error,
        penalty=penalty,
        settings={
            "select": select, "crossover": crossover, "mutate": mutate, "cxpb": cxpb,
            "mutpb": mutpb, "elitism": elitism,
        },
    )  # fmt: skip


def best(scores: np.ndarray, k: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """The ``k`` best (:func:`~evocluster.operators.truncation`) as a ``select``: the default
    survivor selection of the evolution strategies."""
    return operators.truncation(scores, k)


def _var_or(
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


def _evolution_strategy(
    *,
    plus: bool,
    fitness: Fitness,
    population: Population,
    executor: cf.Executor,
    generations: int,
    seed: int,
    lambda_: int,
    crossover: Crossover,
    mutate: Mutate,
    select: Select,
    cxpb: float,
    mutpb: float,
    weights: Sequence[float],
    log: Log,
    ck: _Checkpointing,
    on_error: str | None,
    penalty: Any,
) -> Result:
    """:func:`mu_plus_lambda` (``plus``) and :func:`mu_comma_lambda`."""
    name = "mu_plus_lambda" if plus else "mu_comma_lambda"

    def step(state: State, rng: np.random.Generator, ev: _Evaluator) -> int:
        mu = len(state.genomes)
        off, off_fit, off_bad, changed = _var_or(
            state.genomes, state.fitness, state.penalized, lambda_, rng, crossover, mutate, cxpb,
            mutpb,
        )  # fmt: skip
        evals = _evaluate_changed(ev, state, off, off_fit, off_bad, changed)
        if plus:
            pool, pool_fit, pool_bad = (
                np.concatenate([state.genomes, off]),
                np.concatenate([state.fitness, off_fit]),
                np.concatenate([state.penalized, off_bad]),
            )
        else:
            pool, pool_fit, pool_bad = off, off_fit, off_bad
        keep = select(_scalar_scores(pool_fit, ev.weights), mu, rng)
        state.genomes, state.fitness, state.penalized = pool[keep], pool_fit[keep], pool_bad[keep]
        return evals

    return _generations(
        name,
        step,
        fitness,
        population,
        executor=executor,
        generations=generations,
        seed=seed,
        weights=weights,
        log=log,
        ck=ck,
        probabilities={"cxpb": cxpb, "mutpb": mutpb},
        check=functools.partial(_check_lambda, name, plus, lambda_),
        on_error=on_error,
        penalty=penalty,
        settings={
            "lambda": lambda_, "select": select, "crossover": crossover, "mutate": mutate,
            "cxpb": cxpb, "mutpb": mutpb,
        },
    )  # fmt: skip


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
    _check_counts(generations=generations, seed=seed)
    _check_whole("lambda_", lambda_, 1)
    return _evolution_strategy(
        plus=True,
        fitness=fitness,
        population=population,
        executor=executor,
        generations=generations,
        seed=seed,
        lambda_=lambda_,
        crossover=crossover,
        mutate=mutate,
        select=select or best,
        cxpb=cxpb,
        mutpb=mutpb,
        weights=weights,
        log=log,
        ck=_checkpointing(
            "mu_plus_lambda",
            seed,
            log,
            resume,
            checkpoint,
            checkpoint_every,
            checkpoint_every_generations,
        ),
        on_error=on_error,
        penalty=penalty,
    )


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
    _check_counts(generations=generations, seed=seed)
    _check_whole("lambda_", lambda_, 1)
    return _evolution_strategy(
        plus=False,
        fitness=fitness,
        population=population,
        executor=executor,
        generations=generations,
        seed=seed,
        lambda_=lambda_,
        crossover=crossover,
        mutate=mutate,
        select=select or best,
        cxpb=cxpb,
        mutpb=mutpb,
        weights=weights,
        log=log,
        ck=_checkpointing(
            "mu_comma_lambda",
            seed,
            log,
            resume,
            checkpoint,
            checkpoint_every,
            checkpoint_every_generations,
        ),
        on_error=on_error,
        penalty=penalty,
    )


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
    _check_counts(generations=generations, seed=seed)

    def step(state: State, rng: np.random.Generator, ev: _Evaluator) -> int:
        w, n = ev.weights, len(state.genomes)
        scores = _finite_scores(state.fitness * w, state.penalized)
        parents = pareto.crowded_tournament(scores, n, rng)
        off, changed = _vary_pairs(state.genomes[parents], rng, crossover, mutate, cxpb, mutpb)
        off_fit, off_bad = state.fitness[parents], state.penalized[parents]  # (copies)
        evals = _evaluate_changed(ev, state, off, off_fit, off_bad, changed)
        pool = np.concatenate([state.genomes, off])
        pool_fit = np.concatenate([state.fitness, off_fit])
        pool_bad = np.concatenate([state.penalized, off_bad])
        keep = pareto.nsga2_select(_finite_scores(pool_fit * w, pool_bad), n)
        state.genomes, state.fitness, state.penalized = pool[keep], pool_fit[keep], pool_bad[keep]
        return evals

    ck = _checkpointing(
        "nsga2", seed, log, resume, checkpoint, checkpoint_every, checkpoint_every_generations
    )
    return _generations(
        "nsga2",
        step,
        fitness,
        population,
        executor=executor,
        generations=generations,
        seed=seed,
        weights=weights,
        log=log,
        ck=ck,
        probabilities={"cxpb": cxpb, "mutpb": mutpb},
        single_objective=False,
        report=report,
        on_error=on_error,
        penalty=penalty,
        settings={"crossover": crossover, "mutate": mutate, "cxpb": cxpb, "mutpb": mutpb},
    )


def steady_state(
    fitness: Fitness,
    population: Population,
    *,
    executor: cf.Executor,
    evaluations: int,
    seed: int,
    crossover: Crossover,
    mutate: Mutate,
    select: Select = operators.tournament,
    cxpb: float = 0.9,
    weights: Sequence[float] = (1.0,),
    deterministic: bool = False,
    in_flight: int | None = None,
    report_every: int | None = None,
    log: Log = print,
    resume: bool | str | os.PathLike[str] | None = None,
    checkpoint: CheckpointPath = None,
    checkpoint_every: float | None = None,
    checkpoint_every_generations: int | None = None,
    on_error: str | None = None,
    penalty: float | Sequence[float] | None = None,
) -> Result:
    """An asynchronous steady-state EA: no generational barrier, not even the first one.

    ``in_flight`` evaluations are kept submitted.  The first ones are the initial population;
    once two members are evaluated, offspring follow (two parents by ``select`` among the
    evaluated members, crossed with ``cxpb``, then always mutated).  Whenever an evaluation
    returns, an initial member takes its place in the population, an offspring replaces the
    worst member if it is at least as good, and the next submission leaves at once.  A worker
    never waits for the slowest evaluation of a generation.

    ``deterministic=False`` (default) integrates results in the order they complete (the ones
    that complete together as one batch, whose offspring are made in one vectorised step): the
    best utilisation, but the run depends on timing.  ``deterministic=True`` integrates them in
    submission order, one at a time: submission ``s`` is made from the population after results
    ``0 .. s - in_flight``, whatever the workers do, so the result depends only on the seed and
    ``in_flight``.  The price: while the oldest evaluation runs, finished ones wait to be
    integrated, and a worker may idle.  Give ``in_flight`` 2-4 times the number of workers.

    Checkpoints (as :func:`generational`; "generations" are statistics rows) hold the
    individuals in flight too: on resume they are submitted again, in order, under their own
    task keys, so a deterministic run resumes bit-identically (with the same ``in_flight``).
    A non-deterministic one resumes correctly, but no more reproducibly than it ran.

    Args:
        evaluations: offspring evaluations after the initial population.
        in_flight: evaluations kept submitted.  Default: ``deterministic=False``: three times
            the executor's workers (on evocluster's pools each worker holds one running and one
            prefetched, and the master one more, sent at once to the worker that frees first:
            on W3, 16 workers, utilisation 0.84-0.85 with twice, 0.86-0.87 with three times);
            ``deterministic=True``: 64, independent of the workers (a number that depends on
            them would make the result depend on them).
        report_every: a statistics row every this many integrated results (default: the
            population size).  Rows carry ``generation`` = rows so far - 1 and ``in_flight``.
        resume: ``True`` or a path: go on from the checkpoint (not from a :class:`State`,
            which lacks the individuals in flight).
        on_error, penalty: as :func:`generational`; a failed initial member takes its place
            with the penalty, a failed offspring is discarded unless the worst member is no
            better.  On evocluster's executors a failure's record is matched to its
            evaluation by the order of failures (the count is exact; when two fail at once
            their messages may be swapped) and retried attempts are not recorded.
        Others: as :func:`generational`.

    Returns:
        :class:`Result` (its state cannot be passed as ``resume=``: evaluations in flight are
        not part of it; resume from a checkpoint).
    """
    w = _weights(weights)
    _check_probability("cxpb", cxpb)
    _check_counts(evaluations=evaluations, seed=seed)
    for name, value in (("in_flight", in_flight), ("report_every", report_every)):
        if value is not None:
            _check_whole(name, value, 1)
    if isinstance(resume, State):
        raise TypeError(
            "steady_state() resumes from a checkpoint (resume=True, or its path), not from a "
            "State: its individuals in flight are part of its state"
        )
    ck = _checkpointing(
        "steady_state",
        seed,
        log,
        resume,
        checkpoint,
        checkpoint_every,
        checkpoint_every_generations,
    )
    try:
        ck.identify(
            fitness,
            {
                "select": select, "crossover": crossover, "mutate": mutate, "cxpb": cxpb,
                "weights": weights, "deterministic": deterministic,
            },
            population,
            seed,
        )  # fmt: skip
        e = ck.entry
        if e is not None and e["state"] is not None and e["loop"] is not None:
            # offspring sent so far (the initial members come first): those in flight are
            # sent again on resume, and taken in
            ck.reached(
                evaluations, "evaluations", e["loop"]["submitted"] - len(e["state"]["genomes"])
            )
        done = ck.finished()
    except BaseException as e:
        ck.handle(e)  # (gives its place in the checkpoint's run back)
        raise
    if done is not None:
        return done
    with ck:
        try:
            entry = ck.resumed()
            state, rng, _ = _start(
                "steady_state",
                population,
                seed,
                w,
                State.from_dict(entry["state"]) if entry is not None else None,
            )
            ev = _Evaluator(executor, fitness, seed, w, log, ck.waiting, on_error, penalty)
            window = (
                in_flight if in_flight is not None else (64 if deterministic else 3 * ev.workers)
            )
            if window < 1:
                raise ValueError(f"in_flight must be >= 1, got {window}")
            loop = _SteadyState(
                ev,
                state,
                rng,
                evaluations=evaluations,
                select=select,
                crossover=crossover,
                mutate=mutate,
                cxpb=cxpb,
                deterministic=deterministic,
                window=window,
                every=report_every or len(state.genomes),
            )
            if entry is not None:
                loop.restore(entry["loop"])
            ck.track(loop.snapshot)
            return ck.finish(loop.run(ck))
        except BaseException as e:
            ck.handle(e)
            raise


class _SteadyState:
    """The loop of :func:`steady_state`: its whole state as attributes, one method per step.

    Submissions are numbered ``s = 0, 1, ...``: the first ``n`` are the initial members, in
    order, the rest offspring.  :meth:`key` is the one place a task key is made from ``s``, and
    :meth:`send` the one place an individual is submitted, so an individual sent again under its
    number gets the same random streams.  The individuals in flight are plain data
    (``in_flight``: submission -> genome); ``futures`` maps each running future back to its
    submission.  :meth:`snapshot` and :meth:`restore` are the checkpoint's view of it.
    """

    def __init__(
        self,
        ev: _Evaluator,
        state: State,
        rng: np.random.Generator,
        *,
        evaluations: int,
        select: Select,
        crossover: Crossover,
        mutate: Mutate,
        cxpb: float,
        deterministic: bool,
        window: int,
        every: int,
    ) -> None:
        self.ev, self.state, self.rng = ev, state, rng
        self.select, self.crossover, self.mutate, self.cxpb = select, crossover, mutate, cxpb
        self.deterministic = deterministic
        self.window = window  # evaluations kept submitted
        self.every = every  # a statistics row every this many results taken in
        self.n = len(state.genomes)
        self.total = self.n + evaluations  # submissions in the whole run
        self.initial = state.genomes.copy()  # sent first, in order
        self.scores = np.full(self.n, -np.inf)  # weighted fitness of the members: larger better
        self.known = np.zeros(self.n, dtype=bool)  # members evaluated so far
        self.submitted = 0  # submissions so far: the next one's number
        self.integrated = 0  # results taken in so far
        self.since = 0  # results taken in since the last statistics row
        self.t0 = time.perf_counter()  # when the current statistics row began
        self.in_flight: dict[int, np.ndarray] = {}  # submission -> genome, submitted not taken in
        self.futures: dict[cf.Future[Any], int] = {}  # -> submission, in submission order
        self.order: deque[cf.Future[Any]] = deque()  # submission order, for deterministic mode
        self.finished: queue.SimpleQueue[cf.Future[Any]] = queue.SimpleQueue()  # by callbacks

    _SAVED = ("initial", "scores", "known", "submitted", "integrated", "since", "in_flight")

    def snapshot(self) -> tuple[State, dict[str, Any]]:
        """The loop as plain data, at a point where no result is half taken in."""
        self.state.rng = dict(self.rng.bit_generator.state)
        data = {name: _copy_plain(getattr(self, name)) for name in self._SAVED}
        data["in_flight"] = {s: g.copy() for s, g in self.in_flight.items()}
        return self.state, data | {"window": self.window, "deterministic": self.deterministic}

    def restore(self, data: dict[str, Any]) -> None:
        """Take the counters, the members' scores and the individuals in flight of a snapshot
        (:meth:`run` submits those again, in order, under their own keys)."""
        if self.deterministic and (data["deterministic"], data["window"]) != (True, self.window):
            raise ValueError(
                f"the checkpoint was written by a run with deterministic={data['deterministic']}"
                f" and in_flight={data['window']}: resume a deterministic run with the same "
                "in_flight (its result depends on it)"
            )
        for name in self._SAVED:
            setattr(self, name, data[name])

    def key(self, s: int) -> tuple[int, int]:
        """The task key of submission ``s``: ``(0, s)`` for an initial member (as in every
        loop's generation 0), ``(_STEADY_KEY, s - n)`` for an offspring."""
        return (0, s) if s < self.n else (_STEADY_KEY, s - self.n)

    def run(self, ck: _Checkpointing) -> Result:
        """Submit (first, again, the individuals in flight of a restored run), take in what
        finishes, submit again, until ``total`` are taken in; whatever is still in flight when it
        fails or stops is cancelled."""
        try:
            for s in sorted(self.in_flight):
                self.send(s, self.in_flight[s])
            self.fill()
            while self.futures:
                ck.safe_point(self.state.generation)
                for f in self.next_finished():
                    self.take(f)
                self.fill()
        finally:
            for f in self.futures:
                f.cancel()
        self.state.generation -= 1  # rows are numbered from 0, as generations are elsewhere
        self.state.rng = dict(self.rng.bit_generator.state)
        return _result(self.state, self.ev.weights)

    def fill(self) -> None:
        """Fill the window: initial members first, then offspring once two are evaluated."""
        s = self.submitted
        room = min(self.window - len(self.futures), self.total - s)
        if room <= 0:  # (a restored run may have more in flight than its window now)
            return
        genomes = list(self.initial[s : s + room]) if s < self.n else []
        if len(genomes) < room and self.known.sum() >= 2:
            genomes.extend(self.offspring(room - len(genomes)))
        for genome in genomes:
            self.send(self.submitted, genome)
            self.submitted += 1

    def offspring(self, k: int) -> np.ndarray:
        """``k`` new genomes from the evaluated members, in one vectorised step."""
        members = np.flatnonzero(self.known) if not self.known.all() else None
        pool = self.scores if members is None else self.scores[members]
        picked = self.select(pool, 2 * k, self.rng)
        if members is not None:
            picked = members[picked]
        a, b = self.state.genomes[picked[0::2]], self.state.genomes[picked[1::2]]
        crossed = self.rng.random(k) < self.cxpb
        if crossed.any():
            a[crossed] = self.crossover(a[crossed], b[crossed], self.rng)[0]
        return np.asarray(self.mutate(a, self.rng))

    def send(self, s: int, genome: np.ndarray) -> None:
        """Submit ``genome`` as submission ``s``."""
        f = self.ev.submit(genome, self.key(s))
        self.futures[f] = s
        self.in_flight[s] = genome
        if self.deterministic:
            self.order.append(f)
        f.add_done_callback(self.finished.put)

    def next_finished(self) -> list[cf.Future[Any]]:
        """The futures to take in next, in submission order: deterministic, the oldest (waiting
        for it); otherwise every one finished by now (waiting for one if none is)."""
        if self.deterministic:
            return [self.order.popleft()]
        done = _drain(self.finished)
        if not done:  # nothing yet: block (under SCOOP, waiting drives it)
            with self.ev.waiting:
                done = list(cf.wait(self.futures, return_when=cf.FIRST_COMPLETED)[0])
        return sorted({f for f in done if f in self.futures}, key=self.futures.__getitem__)

    def take(self, f: cf.Future[Any]) -> None:
        """Take in a finished evaluation: its value into the population, the counts, and a
        statistics row when one is due."""
        s = self.futures[f]
        value, bad = self.ev.collect(f, self.key(s), self.state)  # a stop may interrupt it:
        del self.futures[f]  # nothing is changed before it returns, the individual stays in flight
        genome = self.in_flight.pop(s)
        self.replace(s, genome, value, bad)
        self.integrated += 1
        self.since += 1
        self.state.evaluations += 1
        if self.since == self.every or self.integrated == self.total:
            self.report()

    def replace(self, s: int, genome: np.ndarray, value: np.ndarray, bad: bool) -> None:
        """An initial member takes its own place; an offspring replaces the worst member if it
        is at least as good, and is discarded otherwise."""
        score = value[0] * self.ev.weights[0]
        if s < self.n:
            slot = s
        else:
            members = np.flatnonzero(self.known)
            slot = int(members[np.argmin(self.scores[members])])
            if score < self.scores[slot]:
                return  # worse than the worst: discarded
        self.state.genomes[slot], self.state.fitness[slot] = genome, value
        self.state.penalized[slot] = bad
        self.scores[slot] = score
        self.known[slot] = True

    def report(self) -> None:
        """A statistics row of the evaluated members since the last one, then a new period."""
        _stats(
            self.ev,
            self.state,
            self.since,
            time.perf_counter() - self.t0,
            {"in_flight": len(self.futures)},
            self.known,
        )
        self.state.generation += 1
        self.since, self.t0 = 0, time.perf_counter()


def _drain(q: queue.SimpleQueue[cf.Future[Any]]) -> list[cf.Future[Any]]:
    out = []
    while True:
        try:
            out.append(q.get_nowait())
        except queue.Empty:
            return out


def ask_tell(
    optimizer: Any,
    fitness: Fitness,
    *,
    executor: cf.Executor,
    seed: int,
    iterations: int | None = None,
    weights: Sequence[float] = (-1.0,),
    log: Log = print,
    resume: bool | str | os.PathLike[str] | None = None,
    checkpoint: CheckpointPath = None,
    checkpoint_every: float | None = None,
    checkpoint_every_generations: int | None = None,
    on_error: str | None = None,
    penalty: float | Sequence[float] | None = None,
) -> Result:
    """Evaluate an external ask/tell optimiser's candidates on the executor.

    Each iteration: ``xs = optimizer.ask()``, their fitness evaluated in parallel (task keys
    ``(iteration, index)``), ``optimizer.tell(xs, values)``; until ``optimizer.stop()`` is true
    (when it has one) or ``iterations`` are done.  The optimiser's own randomness is its own:
    seed it too (``cma.CMAEvolutionStrategy(x0, sigma0, {"seed": seed})``).

    Checkpoints (as :func:`generational`; "generations" are iterations) need an optimiser that
    plain pickle can store (``cma``'s can; its class importable by name, not a lambda): before
    each iteration the loop keeps it pickled, with Python's ``random`` and numpy's global random
    state (``cma`` draws from the latter).  On resume the saved optimiser's attributes replace
    those of ``optimizer`` -- the object passed in ends in the state an uninterrupted run would
    have left it in -- and the global random states are restored.

    Args:
        optimizer: has ``ask()`` and ``tell(solutions, values)``; ``stop()`` optional.
        fitness: ``fitness(x) -> number``; values are told as they are, so minimise with the
            ``cma`` package (``weights=(-1.0,)``, the default, says so to the statistics).
        iterations: a cap on ask/tell rounds (``None``: until ``stop()``).
        resume: ``True`` or a path: go on from the checkpoint (not from a :class:`State`,
            which lacks the optimiser).
        on_error, penalty: as :func:`generational`; the optimiser is told the penalty of a
            failed candidate (give a finite ``penalty`` to an optimiser that cannot take
            ``inf``), and ``best`` is never a failed one while another was evaluated.
        Others: as :func:`generational`.

    Returns:
        :class:`Result` whose state holds the last candidates; ``best`` is the best evaluated.

    Raises:
        ValueError: neither ``iterations`` nor ``optimizer.stop`` bounds the run.
        TypeError: checkpoints of an optimiser whose attributes cannot be replaced.
        EvaluationError: an evaluation failed.
        CheckpointError: the optimiser cannot be pickled, or the checkpoint cannot be resumed.
    """
    w = _weights(weights)
    if len(w) != 1:
        raise ValueError("ask_tell() optimises one objective")
    _check_counts(seed=seed)
    if iterations is not None:
        _check_whole("iterations", iterations, 1)
    if iterations is None and not callable(getattr(optimizer, "stop", None)):
        raise ValueError("give iterations=, or an optimizer with a stop() method")
    if isinstance(resume, State):
        raise TypeError(
            "ask_tell() resumes from a checkpoint (resume=True, or its path), not from a State: "
            "the optimiser's state is part of it"
        )
    ck = _checkpointing(
        "ask_tell", seed, log, resume, checkpoint, checkpoint_every, checkpoint_every_generations
    )
    with ck:
        try:
            ck.identify(fitness, {"optimizer": type(optimizer), "weights": weights})
            if iterations is not None:
                ck.reached(iterations, "iterations")
            ev = _Evaluator(executor, fitness, seed, w, log, ck.waiting, on_error, penalty)
            loop = _AskTell(optimizer, ev, ck)
            if ck.entry is not None:  # finished or not: the optimiser passed in takes its state
                loop.restore(ck.entry["loop"], ck.entry["state"])
            done = ck.finished()
            if done is not None:
                return done
            ck.resumed()
            loop.mark()
            ck.track(loop.snapshot)
            return ck.finish(loop.run(iterations))
        except BaseException as e:
            ck.handle(e)
            raise


class _AskTell:
    """The loop of :func:`ask_tell`; with checkpoints, :meth:`mark` keeps the optimiser pickled
    (and the global random states) at the start of each iteration: a stop during the
    evaluations saves that, not the optimiser already asked."""

    def __init__(self, optimizer: Any, ev: _Evaluator, ck: _Checkpointing) -> None:
        self.optimizer, self.ev, self.ck = optimizer, ev, ck
        self.weights = tuple(float(x) for x in ev.weights)
        self.seed = ck.seed
        self.state: State | None = None  # after the last iteration
        self.best: tuple[float, np.ndarray, np.ndarray] | None = None  # (score, genome, fitness)
        self.it = 0
        self.marked: dict[str, Any] | None = None
        if ck.path is not None and not hasattr(optimizer, "__dict__"):
            raise TypeError(
                f"ask_tell() checkpoints restore the optimiser's attributes: a "
                f"{type(optimizer).__name__} has no __dict__ (run it with checkpoint=False)"
            )

    def mark(self) -> None:
        """Keep the optimiser and the global random states as they are now (checkpoints only)."""
        if self.ck.path is None:
            return
        try:
            pickled = pickle.dumps(self.optimizer, protocol=5)
        except Exception as e:
            raise _checkpoint.CheckpointError(
                "unwritable",
                self.ck.path,
                f"ask_tell() saves the optimiser with pickle, and a {type(self.optimizer).__name__}"
                f" cannot be pickled ({type(e).__name__}: {e}): make it picklable, or run this "
                "loop with checkpoint=False",
            ) from e
        self.marked = {
            "optimizer": pickled,
            "random": random.getstate(),
            "numpy": np.random.get_state(),
            "it": self.it,
            "best": self.best,
        }

    def snapshot(self) -> tuple[State | None, dict[str, Any] | None]:
        return self.state, self.marked

    def restore(self, data: dict[str, Any], state: dict[str, Any] | None) -> None:
        saved = pickle.loads(data["optimizer"])
        if type(saved) is not type(self.optimizer):
            raise ValueError(
                f"the checkpoint holds a {type(saved).__name__} optimiser, this call passes a "
                f"{type(self.optimizer).__name__}"
            )
        vars(self.optimizer).clear()
        vars(self.optimizer).update(vars(saved))
        random.setstate(data["random"])
        np.random.set_state(data["numpy"])
        self.it, self.best = data["it"], data["best"]
        self.state = State.from_dict(state) if state is not None else None

    def run(self, iterations: int | None) -> Result:
        optimizer, ev = self.optimizer, self.ev
        stop = getattr(optimizer, "stop", None)
        while iterations is None or self.it < iterations:
            self.mark()
            self.ck.safe_point(self.it)
            if callable(stop) and stop():
                break
            t0 = time.perf_counter()
            xs = optimizer.ask()
            genomes = np.array(xs, dtype=np.float64)
            previous = self.state or State(
                "ask_tell", self.seed, 0, genomes, np.empty((0, 1)), self.weights, {}
            )
            keys = [(self.it, i) for i in range(len(genomes))]
            values, bad = ev.evaluate(genomes, keys, previous)
            optimizer.tell(xs, values[:, 0].tolist())
            self.it += 1
            self.state = State(
                algorithm="ask_tell",
                seed=self.seed,
                generation=self.it,
                genomes=genomes,
                fitness=values,
                weights=self.weights,
                rng={},
                evaluations=previous.evaluations + len(genomes),
                history=previous.history,
                penalized=bad,
                failures=previous.failures,
            )
            self.keep_best(genomes, values, bad)
            assert self.best is not None
            best_fitness = float(self.best[2][0])
            _stats(ev, self.state, len(genomes), time.perf_counter() - t0, {"best": best_fitness})
        if self.state is None or self.best is None:
            raise ValueError("the optimizer stopped before its first iteration")
        return Result(self.state, self.best[1], self.best[2])

    def keep_best(self, genomes: np.ndarray, values: np.ndarray, bad: np.ndarray) -> None:
        """The best evaluated so far: a candidate that failed only while none has not (its
        score then counts as ``-inf``, so the first one that does not fail replaces it)."""
        scores = np.where(bad, -np.inf, values[:, 0] * self.ev.weights[0])
        i = int(np.argmax(scores))
        if self.best is None or scores[i] > self.best[0]:
            self.best = (float(scores[i]), genomes[i].copy(), values[i].copy())


def _finite_scores(scores: np.ndarray, penalized: np.ndarray) -> np.ndarray:
    """``scores`` (larger better) for the Pareto machinery, which takes finite values only: an
    infinite penalty becomes, per objective, one less than the lowest score of the members that
    did not fail (0 if none did), so every penalized member is dominated by every other."""
    wrong = penalized[:, None] & ~np.isfinite(scores)
    if not wrong.any():
        return scores
    good = scores[~penalized]
    floor = good.min(axis=0) - 1.0 if len(good) else np.zeros(scores.shape[1])
    return np.where(wrong, floor, scores)


def _result(state: State, w: np.ndarray) -> Result:
    """The result of a loop ending with ``state``; ``best`` among the members that did not
    fail (all of them if every one did)."""
    ok = np.flatnonzero(~state.penalized)
    if not len(ok):
        ok = np.arange(len(state.genomes))
    if len(w) == 1:
        i = int(ok[np.argmax(state.fitness[ok, 0] * w[0])])
    else:
        scores = _finite_scores(state.fitness[ok] * w, state.penalized[ok])
        i = int(ok[pareto.non_dominated_fronts(scores)[0][0]])
    return Result(state, state.genomes[i].copy(), state.fitness[i].copy())
