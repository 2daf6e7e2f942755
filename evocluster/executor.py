"""A ``concurrent.futures.Executor`` over any backend, and the scheduler that feeds its workers.

Data flow (one scheduler thread per pool owns the transport; user threads never touch it)::

    user thread                 scheduler thread                      transport     workers
    -----------                 ----------------                      ---------     -------
    submit()/map() --+
                     | _Job     +--> _jobs --> chunk (adaptive size) --> send() ----> evaluate
                     +-> _incoming           (prefetch <= 2 per worker,              |
                       (lock + wakeup)        large chunks only to idle ones)        |
    Future / map   <-- deliver <-- RESULT <------------------------------ poll() <---+
    iterator           (condition)          (cost per item -> next chunk size)

* A ``map`` call is one job, not one future per item: 20,000 cheap evaluations cost 20,000 list
  slots, and the scheduler cuts them into chunks whose size follows the measured cost per item.
* Each worker holds at most ``prefetch`` chunks, so it starts its next chunk while the result of the
  last one travels home; a chunk larger than ``prefetch_max_bytes`` goes only to an idle worker,
  because a large transfer to a busy one would wait for it, tied to it, while another may be idle
  sooner (transports without asynchronous sends).
* A submit's future is handed to ``set_running_or_notify_cancel`` once (:meth:`_Scheduling._claim`):
  by the driver as it starts the task, or by whoever cancels it first, who also tells its waiters.
* Which worker ran what never changes a result: results are put back in submission order.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import itertools
import math
import os
import sys
import threading
import time
import traceback
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import CancelledError, Future, InvalidStateError
from concurrent.futures import Executor as _StdExecutor
from typing import Any

from . import config, jobfile, protocol, serialization, sharing
from ._initializer import Initialized
from .backends.base import Transport
from .errors import BrokenPool, ConfigurationError, JobError, SerializationError
from .serialization import (
    FunctionTable,
    dumps,
    dumps_args,
    frames_nbytes,
    loads,
    nest,
    unpack_exception,
)
from .worker import FN_CACHE_SIZE, FunctionCache

__all__ = ["Executor", "get_executor", "map", "starmap"]

_PENDING = object()  # a map slot not yet evaluated
_FAILED = object()  # a map slot whose evaluation raised; the exception is in job.errors
_CANCELLED = object()  # a map slot that will never be evaluated
_IDLE_POLL = 0.05  # while nothing is in flight, still look for unexpected worker messages


class _Job:
    """One ``submit`` (with a ``future``) or one ``map`` call (with ``values``)."""

    __slots__ = (
        "cancelled",
        "chunksize",
        "done",
        "errors",
        "fn_key",
        "fn_payload",
        "frames",
        "future",
        "item_bytes",
        "items",
        "kwargs",
        "n",
        "next",
        "owner",
        "policy",
        "remaining",
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
        policy: str,
    ) -> None:
        self.fn_key = fn_key
        self.policy = policy
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
        self.values: list[Any] = [_PENDING] * self.n if future is None else []
        self.errors: dict[int, BaseException] = {}
        self.cancelled = False  # set by any thread; the scheduler stops dispatching
        self.frames: Any = None  # a submit's arguments, already serialised (a one-item job)
        # the driver has handed the future to set_running_or_notify_cancel (once only: a second
        # call raises); a future cancelled before that is notified when its job is retired
        self.started = False
        self.owner: Executor | None = None  # whose job: an initializer's failure breaks it
        # settled: set under the pool's condition, which is notified then (no Event per job: a
        # submit would pay for two Conditions instead of its Future's one)
        self.done = self.n == 0

    def finish(self) -> None:
        """Settled (under the pool's condition): drop the arguments and the callable, which the
        caller may expect to be freed once its futures are done (the results stay, in
        ``values`` or the future, until taken)."""
        self.done = True
        self.items = []
        self.frames = self.kwargs = self.fn_payload = None


class _Chunk:
    """Items ``start:stop`` of ``job``, serialised (``frames``, nested; ``nbytes`` in all)."""

    __slots__ = ("cid", "frames", "job", "nbytes", "start", "stop")

    def __init__(self, job: _Job, start: int, stop: int, frames: Any, nbytes: int) -> None:
        self.job, self.start, self.stop, self.frames, self.nbytes = job, start, stop, frames, nbytes
        self.cid = -1  # set by a pool that tracks chunks by id when it sends one


class _Scheduling:
    """What every pool does with jobs, whatever carries them: the queue, chunk sizes, results.

    Subclasses (:class:`_Pool` here, the SCOOP pool in ``backends/scoop.py``) add how chunks travel
    and who drives them, and the interface :class:`Executor` uses: ``put``, ``new_future``,
    ``wait_slot``, ``wait_jobs``, ``wakeup``, ``step`` and ``close``.
    """

    def __init__(self, options: config.Options, name: str, n_workers: int) -> None:
        self.options = options
        self.name = name
        self.n_workers = n_workers
        self.functions = FunctionTable()
        # _lock guards the map slots (and a subclass's shared state); _cv wakes map iterators.
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        self.broken: str | None = None
        # --- state of whoever drives the pool (scheduler thread or SCOOP's main thread) ---
        self._jobs: deque[_Job] = deque()
        self._cost: dict[bytes, float] = {}  # seconds per item, per function
        # relative spread of those costs (mean |deviation| / mean), per function: prefetching
        # hides a round trip, but when durations vary it queues work behind a long evaluation
        # while other workers idle (a generation's barrier then waits for it)
        self._spread: dict[bytes, float] = {}
        # typical time a worker spends on one chunk (moving average over all functions): how late
        # a result may be noticed is a fraction of it
        self._chunk_seconds = options.chunk_target
        # set by wakeup() (any thread) when jobs were cancelled: the driver then retires every
        # cancelled job at once, not only those at the head of the queue, so that waiters on
        # their futures are told now rather than when a worker frees up
        self._sweep = False
        #: what crossed the transport (the driver writes, anyone reads a copy)
        self.counters = dict.fromkeys(
            (
                "chunks",
                "items",
                "functions_sent",
                "messages_sent",
                "bytes_sent",
                "messages_received",
                "bytes_received",
            ),
            0,
        )

    # ------------------------------------------------------------------ the executor's interface
    def put(self, job: _Job) -> None:
        """Queue ``job``; raise :class:`BrokenPool` or ``RuntimeError`` if it cannot run."""
        raise NotImplementedError

    def new_future(self) -> Future[Any]:
        """The Future of one ``submit``."""
        return Future()

    def wait_slot(self, job: _Job, i: int, deadline: float | None) -> Any:
        """Block until map slot ``i`` of ``job`` is settled; return it (sentinels included)."""
        raise NotImplementedError

    def wait_jobs(self, jobs: list[_Job]) -> None:
        """Block until every job in ``jobs`` is done."""
        raise NotImplementedError

    def stats(self) -> dict[str, int]:
        """A copy of :attr:`counters` (and of a transport's own, where it has some)."""
        return dict(self.counters)

    def wakeup(self) -> None:
        """Tell the driver that jobs were cancelled (it retires them when it next runs)."""
        self._sweep = True

    def step(self) -> None:
        """Make progress after a ``put`` (none by default: a scheduler thread does it alone)."""

    def close(self, wait: bool = True, cancel: bool = False, timeout: float | None = None) -> bool:
        """Stop the workers (a pool an executor owns); return whether the pool ended."""
        raise NotImplementedError

    def kill(self) -> None:
        """End the workers of a pool an executor owns at once, evaluations and all (the
        interpreter is exiting and the pool was shut down without waiting)."""

    # ------------------------------------------------------------------ the driver
    def _has_work(self) -> bool:
        while self._jobs:
            job = self._jobs[0]
            if job.next < job.n and not job.cancelled:
                return True
            self._retire(self._jobs.popleft())
        return False

    def _retire(self, job: _Job) -> None:
        """A job leaves the queue: what was never dispatched is cancelled."""
        if job.next < job.n:
            self._cancel(job, job.next, job.n)
            job.next = job.n

    def _claim(self, job: _Job) -> bool:
        """Whether the caller is the one to hand ``job``'s future to
        ``set_running_or_notify_cancel`` (which must be called once only): the driver, to start
        it, or a thread that cancels it, to tell its waiters."""
        with self._lock:
            if job.started:
                return False
            job.started = True
            return True

    def cancel_future(self, job: _Job) -> None:
        """Cancel a submit's future unless it is running (any thread), and tell its waiters now:
        CANCELLED_AND_NOTIFIED, not only CANCELLED, for ``wait()`` and ``as_completed()`` count
        only the former as done (the stdlib's executors leave ``cancel_futures``' futures in the
        latter, and a wait on them never returns)."""
        future = job.future
        if future is not None and future.cancel() and self._claim(job):
            future.set_running_or_notify_cancel()

    def _sweep_cancelled(self) -> None:
        """Retire every cancelled job in the queue (after :meth:`wakeup`)."""
        self._sweep = False
        if any(job.cancelled for job in self._jobs):
            for job in self._jobs:
                if job.cancelled:
                    self._retire(job)
            self._jobs = deque(job for job in self._jobs if not job.cancelled)

    def _cancel(self, job: _Job, start: int, stop: int) -> None:
        """Items ``start:stop`` of ``job`` will never be sent: settle them as cancelled."""
        future = job.future
        if future is not None:
            self.cancel_future(job)
        with self._cv:
            if future is not None:
                job.remaining = 0
            else:
                for i in range(start, stop):
                    job.values[i] = _CANCELLED
                job.remaining -= stop - start
            if job.remaining <= 0:
                job.finish()
            self._cv.notify_all()

    def may_prefetch(self, job: _Job) -> bool:
        """Whether a chunk of ``job`` may wait on a busy worker.  Not for a ``map`` whose
        evaluations are long enough (a tenth of the chunk target or more) that a round trip
        matters little, and so uneven (spread above ``prefetch_spread``) that waiting behind one
        of them would idle other workers at the map's end, where its caller waits for all.  A
        ``submit`` may: its caller keeps work coming (an asynchronous loop keeps a window in
        flight), and a task held back costs its worker a round trip every time."""
        if job.future is not None:
            return True
        cost = self._cost.get(job.fn_key)
        spread = self._spread.get(job.fn_key)
        if cost is None or spread is None:
            return True
        return cost < 0.1 * self.options.chunk_target or spread <= self.options.prefetch_spread

    def _chunksize(self, job: _Job) -> int:
        left = job.n - job.next
        if job.chunksize is not None:
            return min(job.chunksize, left)
        # at least four chunks per worker, so that the last ones balance the load
        fair = max(1, math.ceil(job.n / (4 * self.n_workers)))
        cost = self._cost.get(job.fn_key)
        if cost is None:
            return 1  # measure first: one item per chunk until a result comes back
        target = self.options.chunk_target
        size = 1 if cost >= target else min(fair, max(1, int(target / max(cost, 1e-9))))
        if job.item_bytes:  # large items: cap the bytes, not only the time
            size = min(size, max(1, int(self.options.chunk_max_bytes / job.item_bytes)))
        return size

    def _next_chunk(self) -> _Chunk | None:
        """Serialise the next chunk of the first job with work left (a chunk that cannot be
        serialised fails its items, and the next one is tried); ``None`` when no work is left."""
        if self._sweep:
            self._sweep_cancelled()
        while self._jobs:
            job = self._jobs[0]
            if job.cancelled or job.next >= job.n:
                self._retire(self._jobs.popleft())
                continue
            future = job.future
            if (
                future is not None
                and not job.started
                and (not self._claim(job) or not future.set_running_or_notify_cancel())
            ):
                self._retire(self._jobs.popleft())  # cancelled by its owner before it started
                continue
            start = job.next
            stop = min(job.n, start + self._chunksize(job))
            job.next = stop
            items = job.items[start:stop]
            try:
                frames = job.frames or dumps_args((items, job.star, job.kwargs), job.policy)
            except Exception as e:  # any exception of the items' own pickling code, too
                self._settle(job, start, stop, [], {-1: _diagnose(job, start, items, e)})
                continue
            nbytes = frames_nbytes(frames)
            if job.item_bytes is None:
                job.item_bytes = nbytes / (stop - start)
            return _Chunk(job, start, stop, nest(frames), nbytes)
        return None

    def _count_sent(self, frames: Any, chunk: _Chunk | None, functions: int) -> None:
        """Count one message sent: a chunk's task (with ``functions`` callables), or a callable."""
        c = self.counters
        if chunk is not None:
            c["chunks"] += 1
            c["items"] += chunk.stop - chunk.start
        c["functions_sent"] += functions
        c["messages_sent"] += 1
        c["bytes_sent"] += frames_nbytes(frames)

    def _record_result(self, chunk: _Chunk, record: tuple[Any, ...]) -> None:
        """A worker's RESULT record for ``chunk``: update the cost per item, deliver the outcome."""
        _, _, value_frames, errors, elapsed = record
        job, n = chunk.job, chunk.stop - chunk.start
        if elapsed > 0:
            self._chunk_seconds += 0.1 * (elapsed - self._chunk_seconds)
            per = elapsed / n
            old = self._cost.get(job.fn_key)
            self._cost[job.fn_key] = per if old is None else 0.5 * old + 0.5 * per
            if old is not None:
                dev = abs(per - old) / old
                spread = self._spread.get(job.fn_key)
                self._spread[job.fn_key] = dev if spread is None else 0.8 * spread + 0.2 * dev
        excs: dict[int, BaseException] = {i: unpack_exception(info) for i, info in errors.items()}
        try:
            values = loads(value_frames)
        except Exception as e:
            values, excs = [], {-1: e}
        self._settle(job, chunk.start, chunk.stop, values, excs)

    def _settle(
        self, job: _Job, start: int, stop: int, values: list[Any], excs: dict[int, BaseException]
    ) -> None:
        """Deliver the outcome of items ``start:stop`` of ``job`` to its future or map slots."""
        if job.done:  # failed meanwhile (a broken pool or initializer): nothing left to deliver
            return
        whole = excs.get(-1)
        future = job.future
        if future is not None:
            # outside the pool's lock: a done callback may submit more work (put takes the lock)
            exc = whole or excs.get(0)
            if not future.done():
                if exc is not None:
                    future.set_exception(exc)
                else:
                    future.set_result(values[0])
        with self._cv:
            if future is not None:
                pass
            elif not excs:
                job.values[start:stop] = values
            else:
                for i in range(start, stop):
                    exc = whole or excs.get(i - start)
                    if exc is not None:
                        job.values[i] = _FAILED
                        job.errors[i] = exc
                    else:
                        job.values[i] = values[i - start]
            job.remaining -= stop - start
            if job.remaining <= 0:
                job.finish()
            self._cv.notify_all()
        if excs and job.owner is not None and job.owner._initializer is not None:
            self._check_initializer(job.owner, whole or next(iter(excs.values())))

    def _check_initializer(self, owner: Executor, exc: BaseException) -> None:
        """An evaluation of ``owner``'s failed with ``exc``: if its initializer failed on a worker,
        ``owner`` is broken, and every pending task of it fails with that :class:`BrokenPool`."""
        if owner._broken is not None or not isinstance(exc, BrokenPool):
            return
        reason = str(exc)
        with owner._lock:
            owner._broken = reason
            jobs = [job for job in owner._jobs if not job.done]
        self._fail(jobs, reason)

    def _fail(self, jobs: list[_Job], reason: str) -> None:
        """The pool broke: fail what is pending in ``jobs`` with :class:`BrokenPool`."""
        for job in jobs:  # futures outside the lock: a done callback may take it
            f = job.future
            if f is not None and not f.done():
                if self._claim(job) and not f.set_running_or_notify_cancel():
                    continue  # cancelled before it started: stays cancelled
                with contextlib.suppress(InvalidStateError):  # cancelled meanwhile
                    f.set_exception(BrokenPool(reason))
        with self._cv:
            for job in jobs:
                if job.future is None:
                    for i in range(job.n):
                        if job.values[i] is _PENDING:
                            job.values[i] = _FAILED
                            job.errors[i] = BrokenPool(reason)
                job.remaining = 0
                job.next = job.n
                job.finish()
            self._cv.notify_all()


class _Pool(_Scheduling):
    """A scheduler thread, its transport, and the jobs waiting for them."""

    def __init__(self, transport: Transport, options: config.Options, name: str) -> None:
        super().__init__(options, name, transport.n_workers)
        self.transport = transport
        # _lock also guards _incoming and _closing
        self._incoming: deque[_Job] = deque()
        self._closing = False
        # --- scheduler-thread state, no lock needed ---
        self._staged: _Chunk | None = None
        self._inflight: dict[int, tuple[int, _Chunk]] = {}
        self._ids = itertools.count()
        n = self.n_workers
        # a transport that evaluates as it sends (serial) takes one chunk at a time: a second one
        # would be evaluated before the first one's result is delivered
        self._prefetch = 1 if transport.evaluates_on_send else options.prefetch
        self._load = [0] * n
        # levels[k] holds workers whose load was k when queued (stale entries are skipped): the
        # least loaded worker is found without scanning all of them.
        self._levels: list[deque[int]] = [deque(range(n))] + [
            deque() for _ in range(self._prefetch - 1)
        ]
        self._known = [FunctionCache(FN_CACHE_SIZE) for _ in range(n)]
        self._labels = [transport.describe(w) for w in range(n)]
        self._dead = [False] * n
        self._thread = threading.Thread(target=self._run, name=f"evocluster-{name}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ user threads
    def put(self, job: _Job) -> None:
        with self._lock:
            if self.broken is not None:
                raise BrokenPool(self.broken)
            if self._closing:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._incoming.append(job)
        self.transport.wakeup()  # the thread is alive: not closing, not broken

    def wakeup(self) -> None:
        self._sweep = True
        self._wake()

    def kill(self) -> None:
        if self._thread.is_alive():
            self.transport.abort(1)

    def _wake(self) -> None:
        """Wake the scheduler thread, unless it has ended (its transport is closed then)."""
        if self._thread.is_alive():
            self.transport.wakeup()

    def stats(self) -> dict[str, int]:
        return {**self.counters, **self.transport.stats()}

    def close(self, wait: bool = True, cancel: bool = False, timeout: float | None = None) -> bool:
        """Stop after the work in flight (``cancel``: drop what has not started); stop the
        workers.  Returns whether the scheduler ended (within ``timeout`` when waiting)."""
        with self._lock:
            self._closing = True
            if cancel:
                for job in [*self._incoming, *self._jobs]:
                    job.cancelled = True
                self._sweep = True
        self._wake()
        if wait and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def wait_slot(self, job: _Job, i: int, deadline: float | None) -> Any:
        value = job.values[i]
        if value is not _PENDING:  # settled slots never change: no lock needed
            return value
        with self._cv:
            while job.values[i] is _PENDING:
                if deadline is None:
                    self._cv.wait()
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError()
                    self._cv.wait(left)
            return job.values[i]

    def wait_jobs(self, jobs: list[_Job]) -> None:
        with self._cv:
            for job in jobs:
                while not job.done:
                    self._cv.wait()

    # ------------------------------------------------------------------ scheduler thread
    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as e:  # a bug or transport failure must fail futures, not hang them
            tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
            self._break(
                f"the {self.name} scheduler failed (an evocluster bug: please report):\n{tb}"
            )
        finally:
            with contextlib.suppress(Exception):  # already failing: report the first error only
                self.transport.close(dumps(protocol.stop()))

    def _loop(self) -> None:
        t = self.transport
        while self.broken is None:
            t.clear_wakeup()
            with self._lock:
                self._jobs.extend(self._incoming)
                self._incoming.clear()
                closing = self._closing
            if self._sweep:
                self._sweep_cancelled()
            self._dispatch()
            idle = not self._inflight
            if closing and idle and self._staged is None and not self._has_work():
                return
            if idle:
                events = t.poll(_IDLE_POLL)
            else:  # a late look at a result idles the worker it came from
                events = t.poll(None, self.options.result_latency * self._chunk_seconds)
            for worker, frames, reason in events:
                if frames is None:
                    self._lost(worker, reason or "its connection closed")
                    continue
                self.counters["messages_received"] += 1
                self.counters["bytes_received"] += frames_nbytes(frames)
                record = loads(frames)
                kind = record[0]
                if kind == protocol.RESULT:
                    self._on_result(worker, record)
                elif kind == protocol.READY:
                    _, _, host, pid = record
                    self._labels[worker] = f"{t.describe(worker)} on host {host} (pid {pid})"
                elif kind == protocol.FAILED:
                    self._break(record[1])

    def _pick_worker(self, idle_only: bool) -> int | None:
        for level, queue in enumerate(self._levels):
            if idle_only and level > 0:
                return None
            while queue:
                w = queue[0]
                if self._load[w] == level and not self._dead[w]:
                    return w
                queue.popleft()  # stale entry
        return None

    def _dispatch(self) -> None:
        while True:
            w = self._pick_worker(idle_only=False)
            if w is None:
                return
            chunk = self._staged or self._next_chunk()
            if chunk is None:
                return
            job = chunk.job
            if job.done:  # failed meanwhile (its executor's initializer): nothing to send
                self._staged = None
                continue
            if chunk is self._staged and job.cancelled and job.future is None:
                # held back for an idle worker, and its map abandoned meanwhile (a timeout, an
                # exception in the caller's loop): an evaluation may take hours, do not start it
                self._staged = None
                self._cancel(job, chunk.start, chunk.stop)
                continue
            include = not self._known[w].touch(job.fn_key)
            size = chunk.nbytes + (frames_nbytes(job.fn_payload) if include else 0)
            busy = self._load[w] > 0
            big = not self.transport.async_sends and size > self.options.prefetch_max_bytes
            if busy and (big or not self.may_prefetch(job)):
                # wait for an idle worker: a big transfer needs a receiver, and an uneven
                # evaluation must not queue behind a long one
                self._staged = chunk
                w = self._pick_worker(idle_only=True)
                if w is None:
                    return
                include = not self._known[w].touch(job.fn_key)
            self._staged = None
            if include:
                self._known[w].put(job.fn_key, True)
            cid = next(self._ids)
            payload = nest(job.fn_payload) if include else None
            frames = dumps(protocol.task(cid, job.fn_key, payload, chunk.frames))
            self.transport.send(w, frames, idle=self._load[w] == 0)
            self._count_sent(frames, chunk, include)
            self._inflight[cid] = (w, chunk)
            self._levels[self._load[w]].popleft()
            self._load[w] += 1
            if self._load[w] < self._prefetch:
                self._levels[self._load[w]].append(w)

    def _on_result(self, worker: int, record: tuple[Any, ...]) -> None:
        w, chunk = self._inflight.pop(record[1])
        self._load[w] -= 1
        self._levels[self._load[w]].append(w)
        self._record_result(chunk, record)

    def _lost(self, worker: int, reason: str) -> None:
        self._dead[worker] = True
        self._break(f"{self._labels[worker]} was lost: {reason}")

    def _break(self, reason: str) -> None:
        """The pool cannot go on: fail everything pending with :class:`BrokenPool`."""
        with self._lock:
            if self.broken is None:
                self.broken = reason
            jobs = list(self._incoming) + list(self._jobs)
            self._incoming.clear()
        jobs += [chunk.job for _, chunk in self._inflight.values()]
        if self._staged is not None:
            jobs.append(self._staged.job)
        self._jobs.clear()
        self._inflight.clear()
        self._staged = None
        self._fail(jobs, reason)


def _args_label(job: _Job, index: int) -> str:
    return f"args (call {index})" if job.star else f"args[0] (individual {index})"


def _unsendable(label: str, exc: Exception) -> SerializationError:
    """A :class:`SerializationError` for arguments whose own pickling code raised ``exc`` (a
    ``__getstate__`` or ``__reduce__`` raising something that is not a pickling error)."""
    err = SerializationError(
        f"cannot send {label} to the workers: pickling it raised {type(exc).__name__}: {exc} "
        "(the object's own __getstate__ / __reduce__ failed; make it picklable)"
    )
    err.__cause__ = exc
    return err


def _check_args(obj: Any, label: str, policy: str) -> None:
    """:func:`serialization.check`, and any exception of the object's own pickling code as a
    :class:`SerializationError` too (with that exception as its cause)."""
    try:
        serialization.check(obj, label, policy)
    except SerializationError:
        raise
    except Exception as e:
        raise _unsendable(label, e) from e


def _diagnose(job: _Job, start: int, items: list[Any], exc: Exception) -> BaseException:
    """Name the first item of a chunk that cannot be serialised, and why."""
    for i, item in enumerate(items):
        try:
            _check_args(item, _args_label(job, start + i), job.policy)
        except SerializationError as e:
            return e
    return _unsendable(f"items {start} to {start + len(items) - 1}", exc)


class Executor(_StdExecutor):
    """Evaluate calls on the workers of a backend: a ``concurrent.futures.Executor``.

    Under the launcher (``python -m evocluster job.py``, ``mpiexec -n N python -m evocluster
    job.py``) ``Executor()`` and :func:`get_executor` use the workers the launcher started.
    Elsewhere ``Executor(4)`` (or ``Executor(backend="local", max_workers=4)``) starts a local
    pool of its own, shut down by :meth:`shutdown` or at the end of a ``with`` block.

    Args:
        max_workers: size of a pool this executor starts (``workers=`` is the same).  Default:
            ``EVOCLUSTER_WORKERS`` or ``os.cpu_count()``.  Under the launcher or SCOOP the run's
            workers are used whatever it says.
        initializer: called as ``initializer(*initargs)`` once in every worker process before the
            first task of this executor runs there.  If it raises, the executor is broken: that
            task and every pending one fail with :class:`BrokenPool`, and later calls raise it.
        initargs: the initializer's arguments (sent like a task's).
        backend: ``"auto"`` (the launcher's backend; under ``python -m scoop``, SCOOP's workers;
            else ``"local"``), ``"local"``, ``"serial"``, ``"mpi"`` (only under the launcher) or
            ``"scoop"`` (only under ``python -m scoop``).  Default: ``EVOCLUSTER_BACKEND`` or
            ``"auto"``.
        serialization: ``"upgrade"`` (default: pickle, callables that need it by value with
            cloudpickle), ``"strict"`` (pickle only; what cannot travel fails on the master, before
            dispatch) or ``"cloudpickle"``.  Default: ``EVOCLUSTER_SERIALIZATION``.
        **options: further :class:`evocluster.config.Options` fields (``prefetch``, ...).

    Raises:
        ValueError: ``max_workers`` is 0 or less.
        TypeError: ``initializer`` is not callable.
        ConfigurationError: an unknown backend, policy or option, ``"mpi"`` outside the
            launcher, or ``"scoop"`` outside SCOOP.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Executor:
        if cls is Executor and _wants_scoop(kwargs.get("backend")):  # under `python -m scoop`
            scoop_cls = importlib.import_module(".backends.scoop", __package__).ScoopExecutor
            return super().__new__(scoop_cls)  # type: ignore[no-any-return]
        return super().__new__(cls)

    def __init__(
        self,
        max_workers: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        *,
        backend: str | None = None,
        workers: int | None = None,
        serialization: str | None = None,
        **options: Any,
    ):
        if max_workers is not None:
            if workers is not None and workers != max_workers:
                raise TypeError("give max_workers or workers (the same option), not both")
            if max_workers <= 0:
                raise ValueError("max_workers must be greater than 0")
            workers = max_workers
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        opts = config.resolve(
            backend=backend, workers=workers, serialization=serialization, **options
        )
        self._policy = opts.serialization
        self._lock = threading.Lock()  # guards _jobs, _shutdown and _broken
        self._jobs: list[_Job] = []  # this executor's jobs, for shutdown (finished ones too)
        self._prune_at = 64
        self._shutdown = False
        self._broken: str | None = None  # why the initializer failed on a worker
        self._initializer = initializer
        self._initargs = tuple(initargs)
        if initializer is not None:
            _check_args(self._initargs, "initargs", self._policy)
        # one wrapper per callable (the function table serialises each object once)
        self._wrapped: dict[int, tuple[Callable[..., Any], Initialized]] = {}
        self._token = os.urandom(8).hex()  # names this executor's initializer on the workers
        self._pool, self._owns_pool = self._open(opts)
        if self._owns_pool:
            _owned.add(self)

    def _open(self, opts: config.Options) -> tuple[_Scheduling, bool]:
        """The pool to use, and whether this executor owns it (and stops it on shutdown)."""
        return _open_pool(opts)

    @property
    def backend(self) -> str:
        """The backend actually used: ``"mpi"``, ``"local"``, ``"serial"`` or ``"scoop"``."""
        return self._pool.name

    @property
    def n_workers(self) -> int:
        """How many workers evaluate in parallel."""
        return self._pool.n_workers

    def stats(self) -> dict[str, int]:
        """Counters of the pool since it started: ``chunks`` and ``items`` dispatched,
        ``functions_sent`` (callables shipped to a worker), ``messages_sent`` / ``bytes_sent`` and
        ``messages_received`` / ``bytes_received`` on the master's side of the transport (under
        SCOOP: sealed tasks and broadcasts, sealed results; shared by every handle).  Under MPI
        also ``doorbells`` (workers woken by a ring when sent work, rather than by their next
        poll) and ``rings``."""
        return self._pool.stats()

    def _function(self, fn: Callable[..., Any], policy: str) -> tuple[bytes, Any]:
        """The function key and payload of ``fn`` (with this executor's initializer, if any)."""
        fn = sharing.bind(fn)
        if self._initializer is not None:
            entry = self._wrapped.get(id(fn))
            if entry is None or entry[0] is not fn:
                entry = (fn, Initialized(fn, self._initializer, self._initargs, self._token))
                self._wrapped[id(fn)] = entry
            fn = entry[1]
        return self._pool.functions.lookup(fn, policy)

    def _check_open(self) -> None:
        """Raise if this executor takes no more work (caller holds ``_lock``)."""
        if self._broken is not None:
            raise BrokenPool(self._broken)
        if _interpreter_exiting:  # first: the exit hook also shuts executors down
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")

    def _put(self, job: _Job) -> None:
        job.owner = self
        with self._lock:
            self._check_open()
            self._pool.put(job)  # raises BrokenPool once a worker was lost
            if len(self._jobs) >= self._prune_at:  # drop finished jobs, amortised O(1)
                self._jobs = [j for j in self._jobs if not j.done]
                self._prune_at = max(64, 2 * len(self._jobs))
            self._jobs.append(job)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Schedule ``fn(*args, **kwargs)`` on a worker; return its ``Future``.

        The arguments are pickled here, at once (the stdlib pickles them later, in another
        thread): what cannot reach the workers raises now, and later changes to a mutable
        argument do not travel.

        Raises:
            RuntimeError: after :meth:`shutdown` or once the interpreter is exiting (under SCOOP,
                also from a thread other than the main one).
            BrokenPool: the pool lost a worker, or this executor's initializer failed.
            SerializationError: ``fn`` or the arguments cannot reach the workers (the pickling
                error, or whatever the arguments' own pickling code raised, is its cause).
        """
        with self._lock:
            self._check_open()
        key, payload = self._function(fn, self._policy)
        kw = kwargs or None
        # pickled once, here: the check, and the chunk the scheduler sends (a snapshot of the
        # arguments at submit time)
        try:
            frames = serialization.checked_dumps_args(
                ([args], True, kw), (args, kwargs), "args", self._policy
            )
        except SerializationError:
            raise
        except Exception as e:
            raise _unsendable("args", e) from e
        future = self._pool.new_future()
        job = _Job(key, payload, [args], True, kw, 1, future, self._policy)
        job.frames = frames
        self._put(job)
        self._pool.step()
        return future

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int | None = None,
        serialization: str | None = None,
    ) -> Iterator[Any]:
        """Return an iterator over ``fn(*args)`` for ``args`` in ``zip(*iterables)``, in order.

        Args:
            fn: the callable; serialised once per run and cached by every worker.
            *iterables: consumed at once, as ``concurrent.futures.Executor.map`` does.
            timeout: seconds from this call after which a result not yet available raises
                ``TimeoutError``.
            chunksize: items per message; ``None`` (default) adapts to the measured cost per
                item: expensive calls go one by one, cheap ones in batches.
            serialization: the policy for this call (default: the executor's).

        Raises:
            ValueError: ``chunksize`` below 1, or an unknown policy.
            SerializationError: ``fn`` or the first call's arguments cannot reach the workers
                (checked before anything is dispatched); a later item that cannot, when its
                result is reached (the message names the item's index).
            Exception: the first exception raised by ``fn``, when its result is reached, with the
                worker's traceback as ``__cause__``.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        star = len(iterables) != 1
        # one iterable (the EA's population): keep its items as they are, no tuple per item
        items = list(zip(*iterables)) if star else list(iterables[0])  # noqa: B905 (shortest)
        job = self._map_job(fn, items, star, chunksize, serialization)
        self._pool.step()
        return self._results(job, deadline)

    def starmap(
        self,
        fn: Callable[..., Any],
        iterable: Iterable[Iterable[Any]],
        timeout: float | None = None,
        chunksize: int | None = None,
        serialization: str | None = None,
    ) -> Iterator[Any]:
        """Return an iterator over ``fn(*args)`` for ``args`` in ``iterable``, in order (as
        ``itertools.starmap`` and ``MPIPoolExecutor.starmap``).  Arguments as :meth:`map`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        items = [tuple(args) for args in iterable]
        job = self._map_job(fn, items, True, chunksize, serialization)
        self._pool.step()
        return self._results(job, deadline)

    def _map_list(
        self,
        fn: Callable[..., Any],
        items: list[Any],
        star: bool,
        chunksize: int | None,
        policy: str | None,
    ) -> list[Any]:
        """``list(self.map(...))`` without waking this thread once per result."""
        job = self._map_job(fn, items, star, chunksize, policy)
        try:
            self._pool.wait_jobs([job])
        finally:
            if job.remaining > 0:  # interrupted (KeyboardInterrupt): stop dispatching the rest
                job.cancelled = True
                self._pool.wakeup()
        for i in sorted(job.errors):
            raise job.errors[i]
        if any(v is _CANCELLED for v in job.values):  # identity: results may be numpy arrays
            raise CancelledError()
        return job.values

    def _map_job(
        self,
        fn: Callable[..., Any],
        items: list[Any],
        star: bool,
        chunksize: int | None,
        policy: str | None,
    ) -> _Job:
        if chunksize is not None and chunksize < 1:
            raise ValueError("chunksize must be >= 1")
        with self._lock:
            self._check_open()
        policy = (
            self._policy if policy is None else config.resolve(serialization=policy).serialization
        )
        key, payload = self._function(fn, policy)
        job = _Job(key, payload, items, star, None, chunksize, None, policy)
        if items:  # the first call is checked here, before anything is dispatched
            _check_args(items[0], _args_label(job, 0), policy)
        self._put(job)
        return job

    def _results(self, job: _Job, deadline: float | None) -> Iterator[Any]:
        try:
            for i in range(job.n):
                # the value is not kept in this frame: yielded, it is the caller's alone
                yield self._take(job, i, deadline)
        finally:
            if job.remaining > 0:
                job.cancelled = True  # abandoned (exception, timeout, or not consumed)
                self._pool.wakeup()

    def _take(self, job: _Job, i: int, deadline: float | None) -> Any:
        """Map slot ``i``'s result, dropped from the job as it is handed over (a generation of
        large individuals is not held twice); raise what the slot holds instead of a result."""
        value = self._pool.wait_slot(job, i, deadline)
        if value is _FAILED:
            raise job.errors.pop(i)
        if value is _CANCELLED:
            raise CancelledError()
        job.values[i] = None  # settled slots are never written again
        return value

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting work; optionally cancel what has not started; optionally wait.

        Safe to call more than once, in any order of ``wait``.  ``cancel_futures`` cancels the
        futures that have not started (waiters on them are told at once) and the map items not
        yet dispatched; what is running finishes.  If this executor started its own pool, the
        pool's workers are stopped once the remaining work is done; a pool shut down with
        ``wait=False`` whose work is still running when the interpreter exits is stopped then,
        its running evaluations killed (under SCOOP, waiting drives SCOOP, whose workers go on
        serving the run's other handles).
        """
        with self._lock:
            self._shutdown = True
            jobs = list(self._jobs)
        if cancel_futures:
            for job in jobs:
                job.cancelled = True
                self._pool.cancel_future(job)  # a running future stays running
            self._pool.wakeup()  # the driver notifies the waiters of what it cancelled
        if self._owns_pool:
            if self._pool.close(wait=wait, cancel=cancel_futures):
                _owned.discard(self)
        elif wait and jobs:
            self._pool.wait_jobs(jobs)


# ---------------------------------------------------------------------- backends and defaults
_shared: dict[str, _Pool] = {}  # pools started by the launcher, used by every Executor
_default: Executor | None = None
_default_lock = threading.Lock()
#: executors whose pool is their own and has not ended (a weak set: one nobody holds is gone)
_owned: weakref.WeakSet[Executor] = weakref.WeakSet()
#: set when the interpreter begins to exit: submit and map then raise RuntimeError
_interpreter_exiting = False


def _at_interpreter_exit() -> None:
    """Before the interpreter joins its threads (as the stdlib's executors do): no new work; an
    executor shut down with ``wait=False`` whose pool still runs is stopped, its evaluations
    killed, so that it never holds the exit; one never shut down finishes its work first."""
    global _interpreter_exiting
    _interpreter_exiting = True
    for executor in list(_owned):
        if executor._shutdown:
            executor._pool.kill()
        else:
            executor.shutdown(wait=True)


# threading's own exit hook runs before atexit's and before non-daemon threads are joined
getattr(threading, "_register_atexit", atexit.register)(_at_interpreter_exit)


SCOOP_LAUNCH = (
    "the SCOOP backend serves jobs started by SCOOP: launch with `python -m scoop [-n N] job.py` "
    "(N processes: the origin runs the job, N-1 evaluate); `python -m evocluster` does not start "
    "SCOOP"
)


def scoop_running() -> bool:
    """Whether this process belongs to a SCOOP run (``python -m scoop job.py``), without
    importing SCOOP."""
    return bool(getattr(sys.modules.get("scoop"), "IS_RUNNING", False))


def _wants_scoop(backend: str | None) -> bool:
    name = backend if backend is not None else os.environ.get("EVOCLUSTER_BACKEND", "auto")
    if name == "scoop" and not scoop_running():
        raise ConfigurationError(SCOOP_LAUNCH)
    return name == "scoop" or (name == "auto" and not _shared and scoop_running())


def open_transport(name: str, opts: config.Options, job: dict[str, Any]) -> Transport:
    """Start the transport of backend ``name`` (``"local"`` or ``"serial"``; MPI: cli only)."""
    local: Any = importlib.import_module(".backends.local", __package__)
    if name == "serial":
        return local.InlineTransport()  # type: ignore[no-any-return]
    workers = opts.workers or os.cpu_count() or 1
    return local.ProcessTransport(workers, job, opts)  # type: ignore[no-any-return]


def _open_pool(opts: config.Options) -> tuple[_Pool, bool]:
    name = opts.backend
    if name == "auto":
        name = next(iter(_shared), "local")
    if name in _shared:
        return _shared[name], False
    if name == "mpi":
        raise ConfigurationError(
            "the MPI backend serves jobs started by the launcher: run `mpiexec -n N python -m "
            "evocluster job.py` (rank 0 runs the job, ranks 1..N-1 evaluate)"
        )
    if jobfile.in_worker:
        raise JobError(
            "the job started a pool while a worker was importing it: put the code that runs the "
            "evolution under `if __name__ == '__main__':` so that workers only import definitions"
        )
    size = config.mpi_world_size_from_env()
    if size is not None and size > 1 and not _shared:
        raise ConfigurationError(
            f"this process is one of {size} MPI ranks but was not started through evocluster, so "
            "every rank would run the whole job: launch it as "
            f"`mpiexec -n {size} python -m evocluster job.py`"
        )
    job = jobfile.spec_for_current_main()
    serialization.set_worker_main_names(jobfile.module_level_names(job))
    transport = open_transport(name, opts, job)
    return _Pool(transport, opts, name), True


def install_shared(name: str, transport: Transport, opts: config.Options) -> Executor:
    """Launcher only: make ``transport`` the pool every Executor uses; return the default one."""
    global _default
    _shared[name] = _Pool(transport, opts, name)
    _default = Executor(backend=name)
    return _default


def close_shared(wait: bool = True, cancel: bool = False, timeout: float | None = None) -> bool:
    """Launcher only: stop the shared pool's workers after the work in flight (``cancel``: drop
    the work not started).  Returns whether every pool ended within ``timeout``."""
    global _default
    ended = all(pool.close(wait, cancel, timeout) for pool in list(_shared.values()))
    _shared.clear()
    _default = None
    return ended


if scoop_running():  # make a failing SCOOP run exit non-zero; see backends/scoop.py
    importlib.import_module(".backends.scoop", __package__).install_guards()


def get_executor() -> Executor:
    """The executor the launcher set up; outside the launcher, a local pool started on first use.

    Outside the launcher the pool follows ``EVOCLUSTER_BACKEND`` / ``EVOCLUSTER_WORKERS`` (default:
    a local pool of ``os.cpu_count()`` workers) and is shut down when the interpreter exits.
    """
    global _default
    with _default_lock:
        if _default is None or (_default._shutdown and not _shared):
            _default = Executor()
            if _default._owns_pool:
                atexit.register(_default.shutdown)
        return _default


def map(  # noqa: A001 - a drop-in for the builtin, on purpose
    fn: Callable[..., Any],
    *iterables: Iterable[Any],
    chunksize: int | None = None,
    serialization: str | None = None,
) -> list[Any]:
    """``[fn(*args) for args in zip(*iterables)]``, evaluated on the workers, in order.

    A drop-in for the builtin ``map`` and DEAP's ``toolbox.map``:
    ``toolbox.register("map", evocluster.map)``.

    Args:
        chunksize: items per message; ``None`` (default) adapts to the measured cost.
        serialization: ``"upgrade"``, ``"strict"`` or ``"cloudpickle"`` for this call.

    Raises:
        SerializationError: ``fn`` or the first item cannot reach the workers (before dispatch).
        Exception: the first exception raised by ``fn``, with the worker's traceback as cause.
    """
    star = len(iterables) != 1
    items = list(zip(*iterables)) if star else list(iterables[0])  # noqa: B905 (shortest)
    return get_executor()._map_list(fn, items, star, chunksize, serialization)


def starmap(
    fn: Callable[..., Any],
    iterable: Iterable[Iterable[Any]],
    chunksize: int | None = None,
    serialization: str | None = None,
) -> list[Any]:
    """``[fn(*args) for args in iterable]``, evaluated on the workers, in order (as
    ``itertools.starmap``; ``MPIPoolExecutor.starmap`` users: the same call, a list back).

    Args and raises: as :func:`map`.
    """
    items = [tuple(args) for args in iterable]
    return get_executor()._map_list(fn, items, True, chunksize, serialization)
