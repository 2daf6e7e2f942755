"""Evaluation: the one seam between the engine and an executor, and the failure policy applied
to what comes back.

The engine is handed a ``concurrent.futures.Executor``.  What it uses beyond that is declared
once, as :class:`PolicyExecutor` -- evocluster's :class:`~evocluster.Executor` implements it --
and looked at in one place, :func:`policy_executor`.  Any other executor (the stdlib's thread and
process pools) gets the fallback: its width taken as the machine's CPUs, failures caught where
the fitness runs (:class:`_Guarded`), no executor options to follow.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from .._failures import function_name
from ..errors import EvaluationError, Failure
from ..rng import call as _seeded_call
from .policy import (
    EXPECTED,
    TOO_LARGE,
    objectives,
    policy_of,
    qualified,
    short_repr,
)
from .state import State, checked_weights
from .stopping import Waits

if TYPE_CHECKING:
    from .settings import RunSettings


class FailureOptions(Protocol):
    """An executor's own failure options (evocluster's ``Executor.options``: the launcher's
    ``--on-error`` and ``--penalty``)."""

    @property
    def on_error(self) -> str: ...

    @property
    def penalty(self) -> Any: ...


@runtime_checkable
class PolicyExecutor(Protocol):
    """What the engine uses of an executor beyond ``concurrent.futures.Executor`` (``submit``,
    ``map``), when it has it.

    Attributes:
        max_workers: how many evaluations it runs at once.
        options: its own failure options, followed by a loop given no ``on_error``.
        failures: every failed evaluation of its calls so far, in the order they were settled
            (:class:`evocluster.Failure` records).

    ``with_policy(on_error=, penalty=)`` returns a handle on the same workers whose calls follow
    that policy (an executor too, with its own ``failures``): timeouts and crashed processes
    become failures, retried on another worker.

    ``map_results(fn, *iterables)`` is ``map`` whose results can be waited for in steps
    (:class:`WaitableResults`), so that a loop waiting for them looks at its stop signals.
    """

    @property
    def max_workers(self) -> int: ...

    @property
    def options(self) -> FailureOptions: ...

    @property
    def failures(self) -> list[Failure]: ...

    def with_policy(self, on_error: str | None = None, penalty: Any = None) -> Any: ...

    def map_results(self, fn: Callable[..., Any], *iterables: Iterable[Any]) -> WaitableResults: ...


class WaitableResults(Protocol):
    """The results of one ``map_results``: an iterator (in order, as ``map``'s) whose ``ready``
    waits for the next one with a timeout and says whether it is in, without taking it; and
    ``close`` abandons the rest (what has not started is cancelled)."""

    def __next__(self) -> Any: ...

    def ready(self, timeout: float) -> bool: ...

    def close(self) -> None: ...


def policy_executor(executor: cf.Executor) -> PolicyExecutor | None:
    """``executor`` as a :class:`PolicyExecutor`, or ``None`` if it is not one (the one place
    the engine asks)."""
    return executor if isinstance(executor, PolicyExecutor) else None


#: The width assumed of an executor that does not say (the stdlib's: its default for processes).
_PLAIN_WORKERS = os.cpu_count() or 1

#: What a failed evaluation comes back as from an evocluster executor's ``with_policy`` handle
#: (its ``penalty``, handed back as this very object on the master, never sent): no fitness can
#: return it, so a slot holding it is a failure, never a value.
_SENTINEL = object()


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
                attempts.append((qualified(e), str(e), time.perf_counter() - start, where))
                continue
            return True, raw, seconds, tuple(attempts)
        return False, None, 0.0, tuple(attempts)


Records = list[tuple[tuple[int, ...], Failure]]


class Evaluator:
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

    def __init__(self, run: RunSettings, waits: Waits | None = None) -> None:
        executor, fitness = run.executor, run.fitness
        if not isinstance(executor, cf.Executor):
            raise TypeError(
                f"executor must be a concurrent.futures.Executor (e.g. evocluster.get_executor()),"
                f" got {type(executor).__name__}"
            )
        if not callable(fitness):
            raise TypeError(f"fitness must be callable, got {type(fitness).__name__}")
        own = policy_executor(executor)  # None: a plain executor (the stdlib's)
        self.executor = executor
        self.fitness = fitness
        self.name = function_name(fitness)
        self.call = functools.partial(_seeded_call, fitness, run.seed)  # one object: shipped once
        self.weights = checked_weights(run.weights)
        self.policy = policy_of(
            run.on_error, run.penalty, self.weights, own.options if own is not None else None
        )
        self.workers = own.max_workers if own is not None else _PLAIN_WORKERS
        self.log = run.log
        self.busy = 0.0  # seconds of evaluation reported by the workers since the last report
        # every wait for results goes through it: in steps, a checkpointing loop's stop
        # signals looked at between them
        self.waits = waits if waits is not None else Waits()
        self.target: cf.Executor = executor  # where evaluations go...
        self.task: Callable[..., Any] = self.call  # ...and what they run
        self.handle: PolicyExecutor | None = None  # the with_policy handle, on evocluster's
        self.claimed = 0  # records of the handle's submits already given to a result
        self.lock = threading.Lock()  # guards claimed: submits are collected by one thread,
        # but a loop may be driven from several (no loop here is; cheap insurance)
        self.reported: tuple[int, int, int] | None = None  # (rows, failed, retried) in rows
        p = self.policy
        if p.tolerant and own is not None:
            # every failure comes back as _SENTINEL; under a "raise" fallback the loop raises
            # it itself (a penalty of None would mean the executor's own penalty)
            handle = own.with_policy(on_error=p.on_error, penalty=_SENTINEL)
            self.handle, self.target = handle, handle
        elif p.tolerant:
            self.task = _Guarded(self.call, p.retries, raise_last=p.fallback == "raise")
        # the target's map_results (evocluster's executor and its handles), if it has one
        self.stepped = self.handle if self.handle is not None else own

    # ---------------------------------------------------------------- values
    def value(self, raw: Any, key: tuple[int, ...]) -> np.ndarray:
        """One fitness value as an ``(m,)`` float array, or a ``TypeError``/``ValueError``
        naming the fitness, the task and what came back."""
        v, why = objectives(raw, len(self.weights))
        if v is None:
            value = why[:1].isdigit() or why.startswith(("NaN", TOO_LARGE))
            kind = ValueError if value else TypeError
            raise kind(
                f"the fitness {self.name} returned {short_repr(raw)} for task {key}: {why}; "
                f"it must return {EXPECTED.format(m=len(self.weights))}"
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
            self.record(records, key, qualified(e), str(e), seconds=seconds)  # the same)
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
            results = self.results(keys, genomes)
            slots: list[Any] = []
            try:
                with self.waits:
                    for _ in range(len(keys)):
                        self.waits.until(results.ready)
                        result = next(results)
                        slots.append(result)
                        if result is not _SENTINEL:
                            out[done], bad[done] = self.outcome(result, keys[done], records)
                        done += 1
            finally:  # abandoned (a stop, a failure): what has not started is cancelled now
                results.close()
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
            raise failed_error(e, keys[min(done, len(keys) - 1)], state) from e
        state.failures.extend(records)
        return out, bad

    def results(self, keys: Sequence[tuple[int, ...]], genomes: np.ndarray) -> WaitableResults:
        """The evaluations of ``genomes`` under ``keys``, sent now, their results waited for in
        steps: evocluster's ``map_results``; on an executor whose ``map`` is the stdlib's (its
        thread and process pools), what that ``map`` does -- one ``submit`` per item, in order
        -- with the futures waited for in steps; on any other, its own ``map``, waited for
        without steps (a stop signal then takes effect at the next generation)."""
        if self.stepped is not None:
            return self.stepped.map_results(self.task, keys, list(genomes))
        if type(self.target).map in _STDLIB_MAPS:
            return _Submitted(self.target, self.task, keys, list(genomes))
        return _Unstepped(iter(self.target.map(self.task, keys, list(genomes))))

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
            with self.waits:
                self.waits.until(lambda step: finished([future], step))
                result = future.result()
            if result is _SENTINEL:
                records.extend(self.claim(key))
                self.unrecorded([result], [key], records)
            value = self.outcome(result, key, records)
        except Exception as e:
            raise failed_error(e, key, state) from e
        state.failures.extend(records)
        return value

    def claim(self, key: tuple[int, ...]) -> Records:
        """The handle's record of a failed submit: the next final record (penalized or raised)
        not yet claimed, in the order the handle recorded them.  (A submit's record says
        ``index`` 0: when two fail together and are collected out of their order, their
        messages may be swapped; the count is always right.  Retried attempts of submits are
        not claimed.)"""
        assert self.handle is not None
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


def finished(futures: Iterable[cf.Future[Any]], timeout: float) -> bool:
    """Wait up to ``timeout`` s for one of ``futures`` to finish; whether one has.  Looks first:
    a future cancelled before it ran is done but never reported by ``concurrent.futures.wait``
    (its state stays ``CANCELLED``), and one already finished is not waited for."""
    futures = list(futures)
    if any(f.done() for f in futures):
        return True
    return bool(cf.wait(futures, timeout=timeout, return_when=cf.FIRST_COMPLETED)[0])


#: ``map`` as the stdlib's executors implement it: one ``submit`` per item, in order
_STDLIB_MAPS = (cf.Executor.map, cf.ThreadPoolExecutor.map, cf.ProcessPoolExecutor.map)


class _Submitted:
    """The stdlib's ``Executor.map``, by hand: one ``submit`` per item, now, in order; the
    results taken in order, each waited for in steps; ``close`` cancels what has not started."""

    def __init__(
        self, executor: cf.Executor, fn: Callable[..., Any], *iterables: Iterable[Any]
    ) -> None:
        self.futures: list[cf.Future[Any]] = []
        try:
            for args in zip(*iterables, strict=True):
                self.futures.append(executor.submit(fn, *args))
        except BaseException:  # as the stdlib's map: nothing submitted is left to run
            self.close()
            raise
        self.next = 0

    def ready(self, timeout: float) -> bool:
        return self.next >= len(self.futures) or finished([self.futures[self.next]], timeout)

    def __next__(self) -> Any:
        if self.next >= len(self.futures):
            raise StopIteration
        future = self.futures[self.next]
        self.futures[self.next] = _TAKEN  # its result is the caller's alone now
        self.next += 1
        return future.result()

    def close(self) -> None:
        for future in self.futures:
            future.cancel()


_TAKEN: cf.Future[Any] = cf.Future()  # stands in for a future whose result was taken
_TAKEN.set_result(None)


class _Unstepped:
    """The results of an executor's own ``map`` (not the stdlib's): waited for as it waits."""

    def __init__(self, results: Iterator[Any]) -> None:
        self.results = results

    def ready(self, timeout: float) -> bool:
        return True  # next() blocks as the executor's map does

    def __next__(self) -> Any:
        return next(self.results)

    def close(self) -> None:
        close = getattr(self.results, "close", None)
        if close is not None:
            close()


class RetriesExhausted(Exception):
    """A failure an evocluster handle reported after its retries, with no penalty to give
    (the cause of the loop's :class:`EvaluationError`; not exported)."""


def failed_error(exc: Exception, key: tuple[int, ...], state: State) -> EvaluationError:
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
