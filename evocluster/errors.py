"""The exceptions evocluster raises, in one place.

Hierarchy::

    Exception
     +-- EvoclusterError                 base of everything raised by evocluster itself
     |    +-- ConfigurationError         a bad option, environment variable or launch command
     |    +-- JobError                   the job file or module cannot be found or loaded
     |    +-- SerializationError         an object cannot be sent to the workers (names the
     |                                   object, where it sits, why, and the ways out)
     |    +-- WorkerError                a worker failed outside the fitness (start-up, protocol)
     |    |    +-- WorkerLost            its process was lost (on_worker_loss="continue": only
     |    |                              recorded, in Failure records; its evaluations go on)
     |    +-- RemoteError                stand-in for a fitness exception that could not be
     |                                   carried home as itself (its class cannot be pickled)
     |    +-- EvaluationError            the engine's fitness raised or returned a bad value;
     |                                   carries the last complete state to resume from
     |    +-- EvaluationAborted          the fitness raised a BaseException that is not an
     |                                   Exception (``sys.exit``, KeyboardInterrupt, ...): that
     |                                   evaluation's failure, the original as ``__cause__``
     |    +-- EvaluationFailed           an evaluation did not return: it timed out
     |         +-- EvaluationTimeout     (``eval_timeout``), or the process evaluating it
     |         +-- EvaluationCrashed     died (isolation: a segfault, ``os._exit``, the OOM killer)
     +-- concurrent.futures.BrokenExecutor
          +-- BrokenPool                 the pool lost a worker or its transport; every pending
                                         future fails with it

Exceptions raised *by the fitness* on a worker are re-raised on the master as themselves (or as a
:class:`RemoteError` stand-in), with a :class:`RemoteTraceback` attached as ``__cause__`` whose text
is the worker's formatted traceback, labelled with the worker's rank and host -- the same device as
CPython's ``concurrent.futures.process``.  Except a ``BaseException`` that is not an
``Exception`` (``SystemExit``, ``KeyboardInterrupt``, ``GeneratorExit``, a job's own subclass):
re-raised as itself it would be taken for the master's own exit or Ctrl-C (the stdlib's
``ProcessPoolExecutor`` does that), so it comes home as :class:`EvaluationAborted`, with the
original (and its remote traceback) as ``__cause__``.

``EvoclusterError`` is defined in ``_error_base`` and ``BrokenPool`` in ``_broken_pool`` (which
imports the base, not this module); both are named ``evocluster.errors.X``, and found here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from ._error_base import EvoclusterError

if TYPE_CHECKING:
    from ._broken_pool import BrokenPool

__all__ = [
    "BrokenPool",
    "ConfigurationError",
    "EvaluationAborted",
    "EvaluationCrashed",
    "EvaluationError",
    "EvaluationFailed",
    "EvaluationTimeout",
    "Failure",
    "EvoclusterError",
    "JobError",
    "RemoteError",
    "RemoteTraceback",
    "SerializationError",
    "WorkerError",
    "WorkerLost",
]


class ConfigurationError(EvoclusterError, ValueError):
    """An option, environment variable or launch command that cannot work as given."""


class JobError(EvoclusterError):
    """The job file or module is missing, does not compile, or fails while being loaded."""


class SerializationError(EvoclusterError, TypeError):
    """An object cannot be serialised for the workers, or a worker cannot load what it received.

    Raised on the master before anything is dispatched when the callable or the first task's
    arguments cannot travel; the message names the object, where it sits (``fn ->
    functools.partial.func -> <lambda> defined at job.py:42``), why pickle refuses it, and what to
    do instead.
    """


class WorkerError(EvoclusterError):
    """A worker failed outside the fitness function (start-up, job import, protocol)."""


class WorkerLost(WorkerError):
    """A worker's process was lost (killed, out of memory, its host gone) while it held
    evaluations.  Under ``on_worker_loss="continue"`` they are evaluated again on the workers
    left: each is recorded as a :class:`Failure` with this error and action ``"retried"``, and
    nothing is raised."""


class RemoteError(EvoclusterError):
    """Stand-in for an exception raised by the fitness that could not travel as itself.

    Attributes:
        type_name: the qualified name of the original exception class.
        message: ``str()`` of the original exception.
    """

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message

    def __reduce__(self) -> tuple[type[RemoteError], tuple[str, str]]:
        return (type(self), (self.type_name, self.message))


class RemoteTraceback(Exception):
    """Carries a worker's formatted traceback; attached as ``__cause__`` of a remote exception."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


class EvaluationError(EvoclusterError):
    """An evaluation in one of the engine's loops failed (the fitness raised, or returned something
    that is not a number per objective).

    Attributes:
        state: the engine's last complete state (an :class:`evocluster.engine.State`): every
            evaluation of the generations before the failing one; pass it as ``resume=`` to go on.
        key: the task key of the failing evaluation (``(generation, index)``, or
            ``(1, submission)`` in the steady-state loop).
    """

    def __init__(self, message: str, state: object = None, key: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.state = state
        self.key = key


class EvaluationAborted(EvoclusterError):
    """The fitness raised a ``BaseException`` that is not an ``Exception`` (``sys.exit()``,
    ``KeyboardInterrupt``, ``GeneratorExit``, a job's own subclass of ``BaseException``), or the
    result's own unpickling code did.

    That evaluation failed, under the ``on_error`` policy like any other failure; re-raised as
    itself on the master it would end the run as if the master had called ``sys.exit`` or been
    interrupted.  The original exception is ``__cause__`` (its own ``__cause__`` is the worker's
    :class:`RemoteTraceback`).

    Attributes:
        item: the item's position in its map (0 for a submit).
        worker: the label of the worker that evaluated it (empty when the master raised it,
            loading the result).
    """

    def __init__(self, message: str, item: int = 0, worker: str = "") -> None:
        super().__init__(message)
        self.item = item
        self.worker = worker

    def __reduce__(self) -> tuple[type[EvaluationAborted], tuple[str, int, str]]:
        return (type(self), (str(self), self.item, self.worker))


class EvaluationFailed(EvoclusterError):
    """An evaluation ended without a value or an exception of its own: see the subclasses."""

    def __reduce__(self) -> tuple[type[EvaluationFailed], tuple[str]]:
        return (type(self), (str(self),))


class EvaluationTimeout(EvaluationFailed):
    """An evaluation ran longer than ``eval_timeout`` seconds and was abandoned (interrupted in
    the worker, or its isolated process killed)."""


class EvaluationCrashed(EvaluationFailed):
    """The process evaluating an individual died (a signal, ``os._exit``, the OOM killer, a
    memory limit).  Under isolation only that evaluation is lost."""


class Failure(NamedTuple):
    """One failed evaluation, as recorded under every ``on_error`` policy (``Executor.failures``;
    the run log of a later release writes these).  Plain data: picklable, JSON-friendly."""

    item: int  # the item's position in its map (0 for a submit)
    error: str  # the exception's class, qualified: "builtins.ValueError", "...EvaluationTimeout"
    message: str  # str() of the exception
    worker: str  # the worker's label: "MPI worker 3 of 4 on host h", "local worker 1 (pid 7)"
    attempt: int  # 1 for the first evaluation, 2 for the first retry, ...
    seconds: float  # time the failed attempt ran, where the worker measured it (else 0.0)
    action: str  # what became of it: "raised", "penalized" or "retried"
    function: str  # the callable's name (``module.qualname`` where it has one)


def __getattr__(name: str) -> Any:
    """``BrokenPool`` is defined on first use (in ``_broken_pool``, as
    ``evocluster.errors.BrokenPool``): its base, ``concurrent.futures.BrokenExecutor``, loads
    ``concurrent.futures`` and ``logging``, imports that a worker rank, which only evaluates,
    never needs (~6 ms per rank: benchmarks/RESULTS.md F1, 2026-12-02)."""
    if name == "BrokenPool":
        from ._broken_pool import BrokenPool

        return BrokenPool
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
