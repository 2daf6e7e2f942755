"""The records of the work a pool holds, which the policy (:mod:`evocluster._scheduling`) and the
pools that drive it share with the executor: a :class:`Job` (one ``submit`` or one ``map``), a
:class:`Chunk` of its items on its way to a worker, the :class:`ExecutorState` of the executor
that submitted it, the map slots' sentinels, and the ``Future`` a submit returns
(:class:`GuardedFuture`), and what a worker did (:class:`WorkerStats`).  No policy here: what a
failure becomes is the job's :class:`~evocluster._failures.FailurePolicy`, applied by the pool.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from typing import Any

from . import _config as config
from . import _protocol as protocol
from ._failures import RAISE, FailurePolicy, function_name
from ._serialization import frames_nbytes
from .errors import Failure

__all__ = [
    "CANCELLED",
    "FAILED",
    "PENDING",
    "Chunk",
    "ExecutorState",
    "GuardedFuture",
    "Job",
    "WorkerStats",
    "limits_of",
]


class GuardedFuture(Future[Any]):
    """The stdlib ``Future``, but a done-callback that raises a ``BaseException`` that is not an
    ``Exception`` (``SystemExit``, ``KeyboardInterrupt``) cannot stop the thread that settles
    the future: the scheduler thread would die of it, and the pool with it, for good.

    The stdlib logs an ``Exception`` from a callback and goes on with the next callback; here
    anything is.  On the main thread (a caller's ``cancel()``, SCOOP's drive) the first such
    exception is raised again once every callback has run: a Ctrl-C there is the caller's.

    Stands on the stdlib's private ``_invoke_callbacks`` (what ``set_result``,
    ``set_exception`` and ``cancel`` call) and its list ``_done_callbacks``: the same in
    ``Lib/concurrent/futures/_base.py`` of CPython 3.6 to 3.13 (read: 3.6.15 to 3.13.0)."""

    def _invoke_callbacks(self) -> None:  # the stdlib's hook, called by set_result & co.
        first: BaseException | None = None
        for callback in self._done_callbacks:  # type: ignore[attr-defined]
            try:
                callback(self)
            except Exception:
                _LOGGER.exception("exception calling callback for %r", self)
            except BaseException as e:
                if threading.current_thread() is not threading.main_thread():
                    _LOGGER.exception("exception calling callback for %r", self)
                elif first is None:
                    first = e
        if first is not None:
            raise first


#: the stdlib's logger of a done-callback's exception
_LOGGER = logging.getLogger("concurrent.futures")

PENDING = object()  # a map slot not yet evaluated
FAILED = object()  # a map slot whose evaluation raised; the exception is in job.errors
CANCELLED = object()  # a map slot that will never be evaluated


def limits_of(options: config.Options) -> protocol.Limits | None:
    """How workers evaluate a job of an executor with ``options`` (timeout, isolation, memory):
    ``None`` when none of them is set (a task then carries no limits)."""
    limits = protocol.Limits(options.eval_timeout, options.isolate, options.eval_memory)
    return None if limits == protocol.Limits() else limits


class Job:
    """One ``submit`` (with a ``future``) or one ``map`` call (with ``values``)."""

    __slots__ = (
        "attempts",
        "cancelled",
        "chunksize",
        "done",
        "errors",
        "failure_policy",
        "fn",
        "fn_key",
        "fn_payload",
        "frames",
        "future",
        "item_bytes",
        "items",
        "kwargs",
        "limits",
        "n",
        "next",
        "owner",
        "remaining",
        "serialization",
        "star",
        "started",
        "values",
    )

    def __init__(
        self,
        fn_key: bytes,
        fn_payload: Any,
        items: list[Any],
        star: bool,
        kwargs: dict[str, Any] | None,
        chunksize: int | None,
        future: Future[Any] | None,
        serialization: str,
        failure_policy: FailurePolicy = RAISE,
        limits: protocol.Limits | None = None,
    ) -> None:
        self.fn_key = fn_key
        self.fn: Any = None  # the callable itself, named only in a failure's record (if set)
        self.failure_policy = failure_policy  # what becomes of a failed item
        self.limits = limits  # how workers evaluate (timeout, isolation): sent with each task
        self.attempts: dict[int, int] = {}  # item index -> failed attempts so far
        self.serialization = serialization  # the policy its items are pickled by
        self.star = star  # items are argument tuples (else each item is the one argument)
        self.fn_payload = fn_payload
        self.items = items
        self.kwargs = kwargs
        self.chunksize = chunksize
        self.future = future
        self.n = len(items)
        self.item_bytes: float | None = None  # serialised size per item, from the first chunk
        self.next = 0  # first item not yet dispatched (scheduler thread only)
        self.remaining = self.n  # items not yet finished, failed or cancelled
        self.values: list[Any] = [PENDING] * self.n if future is None else []
        self.errors: dict[int, BaseException] = {}
        self.cancelled = False  # set by any thread; the scheduler stops dispatching
        self.frames: Any = None  # a submit's arguments, already serialised (a one-item job)
        # the driver has handed the future to set_running_or_notify_cancel (once only: a second
        # call raises); a future cancelled before that is notified when its job is retired
        self.started = False
        self.owner: ExecutorState | None = None  # whose job: an initializer's failure breaks it
        # settled: set under the pool's condition, which is notified then (no Event per job: a
        # submit would pay for two Conditions instead of its Future's one)
        self.done = self.n == 0

    def function(self) -> str:
        """The callable's name, for failure records and messages (worked out only then: a
        submit need not pay for it)."""
        return function_name(self.fn) if self.fn is not None else ""

    def finish(self) -> None:
        """Settled (under the pool's condition): drop the arguments and the callable, which the
        caller may expect to be freed once its futures are done (the results stay, in
        ``values`` or the future, until taken)."""
        self.done = True
        self.items = []
        self.frames = self.kwargs = self.fn_payload = self.fn = None


class Chunk:
    """Items ``start:stop`` of ``job``, serialised (``frames``, nested; ``nbytes`` in all)."""

    __slots__ = ("avoid", "cid", "frames", "job", "nbytes", "start", "stop", "worker")

    def __init__(self, job: Job, start: int, stop: int, frames: Any, nbytes: int) -> None:
        self.job, self.start, self.stop, self.frames, self.nbytes = job, start, stop, frames, nbytes
        self.cid = -1  # set by a pool that tracks chunks by id when it sends one
        self.worker = -1  # set by a pool that knows which worker it sent the chunk to
        self.avoid = -1  # a retry: the worker whose attempt failed (another one, if there is)


class ExecutorState:
    """What the scheduler knows of the executor that submitted a job (one per ``Executor``): its
    jobs, whether it takes work, and why its initializer broke it."""

    __slots__ = ("broken", "failures", "has_initializer", "jobs", "lock", "prune_at", "shutdown")

    def __init__(self, has_initializer: bool) -> None:
        self.failures: list[Failure] = []  # every failed evaluation of its jobs, in order
        self.lock = threading.Lock()  # guards jobs, shutdown and broken
        self.jobs: list[Job] = []  # for shutdown (finished ones too, pruned amortised)
        self.prune_at = 64
        self.shutdown = False
        self.broken: str | None = None  # why the initializer failed on a worker
        self.has_initializer = has_initializer

    def add(self, job: Job) -> None:
        """Remember ``job`` (caller holds :attr:`lock`); drop finished ones, amortised O(1)."""
        if len(self.jobs) >= self.prune_at:
            self.jobs = [j for j in self.jobs if not j.done]
            self.prune_at = max(64, 2 * len(self.jobs))
        job.owner = self
        self.jobs.append(job)

    def break_with(self, reason: str) -> list[Job]:
        """Mark the executor broken; return its jobs still pending (to fail)."""
        with self.lock:
            self.broken = reason
            return [job for job in self.jobs if not job.done]


class WorkerStats:
    """What one worker did, counted by the pool's driver as its results arrive (the run log's
    per-worker record): tasks (chunks) and items answered, seconds in the fitness, bytes of the
    tasks sent to it (the chunks, counted with their results; the callables and shared objects
    they carried, by a pool that knows the worker as it sends) and of the values it sent back,
    items that failed."""

    __slots__ = ("busy", "bytes_received", "bytes_sent", "failed", "host", "items", "name", "tasks")

    def __init__(self, name: str, host: str = "") -> None:
        self.name, self.host = name, host
        self.tasks = self.items = self.bytes_sent = self.bytes_received = self.failed = 0
        self.busy = 0.0

    def add(self, items: int, busy: float, sent: int, values: Any, failed: int) -> None:
        self.tasks += 1
        self.items += items
        self.busy += busy
        self.bytes_sent += sent
        self.bytes_received += frames_nbytes(values) if values is not None else 0
        self.failed += failed

    def copy(self) -> dict[str, Any]:
        return {slot: getattr(self, slot) for slot in self.__slots__}
