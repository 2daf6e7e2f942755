"""The scheduling policy every pool shares, whatever carries its messages: jobs, chunks, their
sizes, prefetch, settling results into futures and map slots.  No thread, no transport: the pool
that drives it (:mod:`evocluster._pool`'s scheduler thread, or SCOOP's main thread) calls it.

* A ``map`` call is one :class:`~evocluster._jobs.Job`, not one future per item: 20,000 cheap
  evaluations cost 20,000 list slots, and the policy cuts them into chunks whose size follows the
  measured cost per item (:meth:`PoolBase._chunksize`).
* Each worker holds at most ``prefetch`` chunks, so it starts its next chunk while the result of
  the last one travels home; a chunk larger than ``prefetch_max_bytes`` goes only to an idle
  worker on a transport without asynchronous sends, because it would wait for the busy one, tied
  to it, while another may be idle sooner.  A long, uneven ``map`` item waits for an idle worker
  too (:meth:`PoolBase.may_prefetch`).
* Which worker ran what never changes a result: results are put back in submission order.
* A submit's future is handed to ``set_running_or_notify_cancel`` once (:meth:`PoolBase._claim`):
  by the driver as it starts the task, or by whoever cancels it first, who also tells its waiters.
* Every job belongs to an :class:`~evocluster._jobs.ExecutorState` (one per ``Executor``): the
  executor's own state that the policy must reach, when that executor's initializer fails on a
  worker.
* A failed evaluation (the fitness raised, timed out, or its process died) becomes what the job's
  :class:`~evocluster._failures.FailurePolicy` says (:meth:`PoolBase._apply_policy`): the
  caller's exception, the penalty, or a retry on another worker; each one is recorded as a
  :class:`~evocluster.errors.Failure` in its owner's ``failures``.
"""

from __future__ import annotations

import abc
import contextlib
import itertools
import math
import sys
import threading
from collections import deque
from concurrent.futures import Future, InvalidStateError
from typing import Any

from . import _config as config
from . import _observe as observe
from . import _protocol as protocol
from ._arguments import diagnose
from ._jobs import (
    CANCELLED,
    FAILED,
    PENDING,
    Chunk,
    ExecutorState,
    GuardedFuture,
    Job,
    WorkerStats,
)
from ._serialization import FunctionTable, dumps_args, frames_nbytes, loads, nest, unpack_exception
from .errors import BrokenPool, EvaluationAborted, Failure, SerializationError, WorkerLost

__all__ = ["PoolBase", "say"]


_serials = itertools.count(1)


class PoolBase(abc.ABC):
    """What every pool does with jobs, whatever carries them: the queue, chunk sizes, results.

    Subclasses (:class:`evocluster._pool.Pool`, the SCOOP pool in ``backends/scoop``) add how
    chunks travel and who drives them, and the interface ``Executor`` uses: ``put``, ``new_future``,
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
        self._jobs: deque[Job] = deque()
        self._cost: dict[bytes, float] = {}  # seconds per item, per function
        # relative spread of those costs (mean |deviation| / mean), per function: prefetching
        # hides a round trip, but when durations vary it queues work behind a long evaluation
        # while other workers idle (a generation's barrier then waits for it)
        self._spread: dict[bytes, float] = {}
        # typical time a worker spends on one chunk (moving average over all functions): how late
        # a result may be noticed is a fraction of it
        self._chunk_seconds = options.chunk_min
        # set by wakeup() (any thread) when jobs were cancelled: the driver then retires every
        # cancelled job at once, not only those at the head of the queue, so that waiters on
        # their futures are told now rather than when a worker frees up
        self._sweep = False
        # items to evaluate again (job, index, the worker whose attempt failed), before new work
        self._retry: deque[tuple[Job, int, int]] = deque()
        # chunks a lost worker held (on_worker_loss="continue"): sent again first, as they are
        self._resend: deque[Chunk] = deque()
        #: the workers lost so far, each in words (who, why): a pool that loses its last one
        #: names them all
        self.lost: list[str] = []
        #: what crossed the transport, and what failed (the driver writes, anyone reads a copy)
        self.counters = dict.fromkeys(
            (
                "chunks",
                "items",
                "failed",
                "retried",
                "workers_lost",
                "functions_sent",
                "messages_sent",
                "bytes_sent",
                "messages_received",
                "bytes_received",
            ),
            0,
        )
        #: items of every job put (the executor's side) and settled (the driver's): the monitor's
        #: progress of the current map is the difference
        self.items_put = 0
        self.items_settled = 0
        self.batch_base = 0  # items put before the current batch (put while none was pending)
        #: per worker (its index, or a label where the backend names workers so): what it did
        self.workers: dict[Any, WorkerStats] = {}
        self.serial = next(_serials)  # names it in the monitor's records (ids are reused)
        observe.pool_opened(self)

    # ------------------------------------------------------------------ the executor's interface
    @abc.abstractmethod
    def put(self, job: Job) -> None:
        """Queue ``job``; raise :class:`BrokenPool` or ``RuntimeError`` if it cannot run."""

    def new_future(self) -> Future[Any]:
        """The Future of one ``submit``."""
        return GuardedFuture()

    @abc.abstractmethod
    def wait_slot(self, job: Job, i: int, deadline: float | None) -> Any:
        """Block until map slot ``i`` of ``job`` is settled; return it (sentinels included)."""

    @abc.abstractmethod
    def wait_jobs(self, jobs: list[Job]) -> None:
        """Block until every job in ``jobs`` is done."""

    @abc.abstractmethod
    def wait_done_or_failed(self, job: Job) -> None:
        """Block until map ``job`` is done or one of its items has failed (raised: an item the
        job's failure policy penalized or retried has not)."""

    def stats(self) -> dict[str, float]:
        """A copy of :attr:`counters` (and of a transport's own, where it has some; the thread
        pool adds the master's CPU cost, ``master_*``)."""
        return dict(self.counters)

    def hosts(self) -> dict[str, int] | None:
        """Workers per host, once every worker has said where it runs (``None`` until then, or
        for a backend whose workers are known only as they answer)."""
        return None

    def count_put(self, job: Job) -> None:
        """``job`` is queued (by whoever puts it): a batch begins when nothing was pending --
        the next map after the last one's results, one generation of a loop."""
        if self.items_settled >= self.items_put:
            self.batch_base = self.items_put
        self.items_put += job.n

    def busy_workers(self) -> int:
        """How many workers evaluate something now (read from another thread: a moment's
        figure)."""
        return 0

    def snapshot(self, per_worker: bool = True) -> dict[str, Any]:
        """What the monitor reads at intervals, from its own thread: counters, items put and
        settled, workers busy, and per worker its stats (copies: the driver goes on).  Without
        ``per_worker`` (the progress line, twice a second on a terminal) ``per_worker`` is
        empty: copying every worker's stats costs O(workers), and only the log's ``workers``
        record reads them."""
        workers: dict[Any, dict[str, Any]] = {}
        for _ in range(3) if per_worker else ():  # a dict the driver grows meanwhile: again
            try:
                workers = {key: stats.copy() for key, stats in list(self.workers.items())}
                break
            except RuntimeError:
                continue
        return {
            "serial": self.serial,
            "name": self.name,
            "workers": self.n_workers,
            "busy": self.busy_workers(),
            "put": self.items_put,
            "settled": self.items_settled,
            "batch_base": self.batch_base,
            "counters": self.stats(),
            "per_worker": workers,
        }

    def worker_stats(self, key: Any) -> WorkerStats:
        """The stats of worker ``key``, made on its first result (driver only)."""
        stats = self.workers.get(key)
        if stats is None:
            stats = self.workers[key] = WorkerStats(*self.worker_identity(key))
        return stats

    def worker_identity(self, key: Any) -> tuple[str, str]:
        """How the run log names worker ``key``, and its host ("" if not known)."""
        return str(key), ""

    def wakeup(self) -> None:
        """Tell the driver that jobs were cancelled (it retires them when it next runs)."""
        self._sweep = True

    def step(self) -> None:  # noqa: B027 - optional hook, default does nothing
        """Make progress after a ``put`` (none by default: a scheduler thread does it alone)."""

    @abc.abstractmethod
    def close(self, wait: bool = True, cancel: bool = False, timeout: float | None = None) -> bool:
        """Stop the workers (a pool an executor owns); return whether the pool ended."""

    def abandoned_only(self) -> bool:
        """Whether every job still held was abandoned by its caller (a pool that cannot tell:
        no)."""
        return False

    def kill(self) -> None:  # noqa: B027 - optional hook, default does nothing
        """End the workers of a pool an executor owns at once, evaluations and all (the
        interpreter is exiting and the pool was shut down without waiting)."""

    # ------------------------------------------------------------------ the driver
    def _has_work(self) -> bool:
        if self._retry or self._resend:
            return True
        while self._jobs:
            job = self._jobs[0]
            if job.next < job.n and not job.cancelled:
                return True
            self._retire(self._jobs.popleft())
        return False

    def _retire(self, job: Job) -> None:
        """A job leaves the queue: what was never dispatched is cancelled."""
        if job.next < job.n:
            self._cancel(job, job.next, job.n)
            job.next = job.n

    def _claim(self, job: Job) -> bool:
        """Whether the caller is the one to hand ``job``'s future to
        ``set_running_or_notify_cancel`` (which must be called once only): the driver, to start
        it, or a thread that cancels it, to tell its waiters."""
        with self._lock:
            if job.started:
                return False
            job.started = True
            return True

    def cancel_future(self, job: Job) -> None:
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

    def _cancel(self, job: Job, start: int, stop: int) -> None:
        """Items ``start:stop`` of ``job`` will never be sent: settle them as cancelled."""
        future = job.future
        try:
            if future is not None:
                self.cancel_future(job)
        finally:  # a callback's exception raised again on the main thread (GuardedFuture)
            with self._cv:
                if future is not None:
                    job.remaining = 0
                else:
                    for i in range(start, stop):
                        job.values[i] = CANCELLED
                    job.remaining -= stop - start
                if job.remaining <= 0:
                    job.finish()
                self._cv.notify_all()

    def may_prefetch(self, job: Job) -> bool:
        """Whether a chunk of ``job`` may wait on a busy worker.  Not for a ``map`` whose
        evaluations are long enough (a tenth of ``chunk_min`` or more) that a round trip
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
        return cost < 0.1 * self.options.chunk_min or spread <= self.options.prefetch_spread

    def _chunksize(self, job: Job) -> int:
        left = job.n - job.next
        if job.chunksize is not None:
            return min(job.chunksize, left)
        cost = self._cost.get(job.fn_key)
        if cost is None:
            return 1  # measure first: one item per chunk until a result comes back
        o = self.options
        per = max(cost, 1e-9)
        # chunk_target seconds of evaluations; at least four chunks per worker; and a quarter of
        # an even share of what is left, so that chunks shrink towards the map's end and the
        # workers finish together, though never below chunk_min seconds' worth
        share = 4 * self.n_workers
        guided = max(math.ceil(left / share), int(o.chunk_min / per))
        size = max(1, min(int(o.chunk_target / per), math.ceil(job.n / share), guided))
        if job.item_bytes:  # large items: cap the bytes, not only the time
            size = min(size, max(1, int(o.chunk_max_bytes / job.item_bytes)))
        return size

    def _next_chunk(self) -> Chunk | None:
        """Serialise the next chunk of the first job with work left (a chunk that cannot be
        serialised fails its items, and the next one is tried); ``None`` when no work is left."""
        if self._sweep:
            self._sweep_cancelled()
        chunk = self._again()
        if chunk is not None:
            return chunk
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
                frames = job.frames or dumps_args((items, job.star, job.kwargs), job.serialization)
            except Exception as e:  # any exception of the items' own pickling code, too
                self._settle(job, start, stop, [], {-1: diagnose(job, start, items, e)})
                continue
            nbytes = frames_nbytes(frames)
            if job.item_bytes is None:
                job.item_bytes = nbytes / (stop - start)
            return Chunk(job, start, stop, nest(frames), nbytes)
        return None

    def _again(self) -> Chunk | None:
        """The next chunk to send again, if any: a lost worker's first, then the retries."""
        while self._resend:
            chunk = self._resent(self._resend.popleft())
            if chunk is not None:
                return chunk
        while self._retry:
            chunk = self._retry_chunk(*self._retry.popleft())
            if chunk is not None:
                return chunk
        return None

    def _resent(self, chunk: Chunk) -> Chunk | None:
        """A chunk a lost worker held, to send again (``None`` if its job was settled or its map
        abandoned meanwhile)."""
        job = chunk.job
        if job.done:
            return None
        if job.cancelled and job.future is None:
            self._cancel(job, chunk.start, chunk.stop)
            return None
        return chunk

    def _retry_chunk(self, job: Job, i: int, avoid: int) -> Chunk | None:
        """Item ``i`` of ``job`` again, alone (``None`` if its job was settled or abandoned)."""
        if job.done:
            return None
        if job.cancelled:
            self._cancel(job, i, i + 1)
            return None
        try:  # a submit keeps its frames; a map's item was sent before, so it pickles
            frames = job.frames or dumps_args(
                ([job.items[i]], job.star, job.kwargs), job.serialization
            )
        except Exception as e:
            self._settle(job, i, i + 1, [], {-1: diagnose(job, i, [job.items[i]], e)})
            return None
        chunk = Chunk(job, i, i + 1, nest(frames), frames_nbytes(frames))
        chunk.avoid = avoid
        return chunk

    def _count_sent(self, frames: Any, chunk: Chunk | None, functions: int) -> None:
        """Count one message sent: a chunk's task (with ``functions`` callables), or a callable."""
        c = self.counters
        if chunk is not None:
            c["chunks"] += 1
            c["items"] += chunk.stop - chunk.start
        c["functions_sent"] += functions
        c["messages_sent"] += 1
        c["bytes_sent"] += frames_nbytes(frames)

    def _record_result(self, chunk: Chunk, record: protocol.Result, worker: Any = None) -> None:
        """A worker's RESULT record for ``chunk`` (from ``worker``, by default the one the chunk
        was sent to): count it, update the cost per item, deliver the outcome."""
        value_frames, errors, elapsed = record.values, record.errors, record.elapsed
        job, n = chunk.job, chunk.stop - chunk.start
        stats = self.worker_stats(chunk.worker if worker is None else worker)
        stats.add(n, elapsed, chunk.nbytes, value_frames, (n if -1 in errors else len(errors)))
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
        split = n > 1 and bool(errors.get(-1, {}).get("split"))
        try:
            values = loads(value_frames)
        except BaseException as e:  # a result's __reduce__ may even raise SystemExit: that chunk's
            values, excs, split = [], {-1: e}, n > 1  # failure, never the scheduler's
        if split:
            self._split(chunk)
            return
        if not excs:
            self._settle(job, chunk.start, chunk.stop, values, excs)
            return
        values, excs, again = self._apply_policy(chunk, values, excs, errors)
        self._settle(job, chunk.start, chunk.stop, values, excs, again)

    def _split(self, chunk: Chunk) -> None:
        """Send the items of ``chunk`` again one by one: one of them could not be loaded (its
        arguments on the worker, or its result here), and which one is not known.  Each then
        succeeds or fails on its own, under the job's rules; before, every item of the chunk
        failed with the one bad item's error (under ``penalize``, healthy neighbours silently
        got the penalty).  No attempt is counted: none was made."""
        job = chunk.job
        for i in range(chunk.start, chunk.stop):
            self._retry.append((job, i, -1))
        n = chunk.stop - chunk.start
        self._settle(job, chunk.start, chunk.stop, [None] * n, {}, set(range(n)))

    def _apply_policy(
        self,
        chunk: Chunk,
        values: list[Any],
        excs: dict[int, BaseException],
        infos: dict[int, dict[str, Any]],
    ) -> tuple[list[Any], dict[int, BaseException], set[int]]:
        """The job's :class:`~evocluster._failures.FailurePolicy` on a chunk's failures: each
        failed item is recorded, then retried (its position is in the returned set, its slot
        stays pending), penalized (its value is the penalty) or left to raise.  A broken
        initializer always raises."""
        job, rules, n = chunk.job, chunk.job.failure_policy, chunk.stop - chunk.start
        if len(values) != n:
            values = [None] * n
        whole = excs.get(-1)
        if whole is not None:  # the whole chunk failed (its items could not be loaded...)
            excs = {k: whole for k in range(n)}
            infos = {k: infos.get(-1, {}) for k in range(n)}
        again: set[int] = set()
        raised: dict[int, BaseException] = {}
        for k in sorted(excs):
            i = chunk.start + k
            exc = _named(excs[k], job, i, infos.get(k, {}))
            attempt = job.attempts.get(i, 0) + 1
            job.attempts[i] = attempt
            if isinstance(exc, BrokenPool):
                action = "raised"
                raised[k] = exc
            elif attempt <= rules.retries:
                action = "retried"
                again.add(k)
                self._retry.append((job, i, chunk.worker))
            elif rules.fallback == "penalize":
                action = "penalized"
                values[k] = rules.penalty
            else:
                action = "raised"
                raised[k] = exc
            # the record names what the fitness raised (an EvaluationAborted's cause)
            self._record_failure(job, i, excs[k], infos.get(k, {}), attempt, action)
        return values, raised, again

    def _worker_lost(
        self,
        label: str,
        reason: str,
        chunks: list[Chunk],
        left: int,
        what: str = "",
        again: int = 0,
    ) -> None:
        """Worker ``label`` was lost (``reason``) while it held ``chunks``, and
        ``on_worker_loss="continue"``: its chunks are sent again, first, to the ``left`` workers
        still alive.  Each of their items is recorded as a failure (``WorkerLost``, action
        ``"retried"``), but no attempt is counted against ``retry:N``: the evaluation did not
        fail, its worker did.  One line on stderr says so (``what`` became of its work, and how
        many evaluations went ``again``, where the pool sends them itself)."""
        self.lost.append(f"{label}: {reason}")
        self.counters["workers_lost"] += 1
        n = again
        for chunk in chunks:
            job = chunk.job
            if job.done:
                continue
            chunk.worker = -1  # (its avoid stays: a retry still avoids the worker it failed on)
            self._record_lost(
                chunk,
                label,
                f"{label} was lost ({reason}) while it held this evaluation: evaluated again on "
                "another worker (on_worker_loss=continue)",
            )
            n += chunk.stop - chunk.start
            self._resend.append(chunk)
        observe.emit(
            "worker_lost", pool=self.serial, worker=label, reason=reason, evaluations=n, left=left
        )
        if not what:
            evaluations = f"{n} evaluation{'s' if n != 1 else ''}"
            what = f"its {evaluations} go to the {left} worker{'s' if left != 1 else ''} left"
        say(f"lost {label}: {what} ({reason})")

    def _record_lost(self, chunk: Chunk, label: str, message: str) -> None:
        """Each item of ``chunk`` is evaluated again because worker ``label`` was lost: a failure
        (``WorkerLost``, action ``"retried"``) whose attempt, the one lost, is not counted
        against ``retry:N``."""
        job = chunk.job
        info = {"type": f"{WorkerLost.__module__}.{WorkerLost.__qualname__}", "where": label}
        info["message"] = message
        for i in range(chunk.start, chunk.stop):
            attempt = job.attempts.get(i, 0) + 1
            self._record_failure(job, i, WorkerLost(message), info, attempt, "retried")

    def _record_failure(
        self, job: Job, i: int, exc: BaseException, info: dict[str, Any], attempt: int, action: str
    ) -> None:
        c = self.counters
        c["failed"] += 1
        c["retried"] += action == "retried"
        if job.owner is None:
            return
        kind = info.get("type") or f"{type(exc).__module__}.{type(exc).__qualname__}"
        message = info.get("message")
        if message is None:  # a failure of the master's own (a result it could not load)
            try:
                message = str(exc)
            except BaseException:  # its __str__ may raise: never the scheduler's failure
                message = f"<str() of the {type(exc).__name__} raised>"
        record = Failure(
            item=i,
            error=kind,
            message=message,
            worker=info.get("where", ""),
            attempt=attempt,
            seconds=float(info.get("seconds", 0.0)),
            action=action,
            function=job.function(),
        )
        job.owner.failures.append(record)  # one append: atomic; readers copy the list
        if observe.observing():  # a dict of its fields only for a listener: a penalized run
            observe.emit("failure", **record._asdict())  # may fail on every item

    def _settle(
        self,
        job: Job,
        start: int,
        stop: int,
        values: list[Any],
        excs: dict[int, BaseException],
        again: set[int] | frozenset[int] = frozenset(),
    ) -> None:
        """Deliver the outcome of items ``start:stop`` of ``job`` to its future or map slots
        (except the positions in ``again``: they are evaluated again)."""
        if job.done:  # failed meanwhile (a broken pool or initializer): nothing left to deliver
            return
        whole = excs.get(-1)
        future = job.future
        if again and future is not None:
            return  # a submit is one item: its retry settles it
        try:
            if future is not None and not future.done():
                # outside the pool's lock: a done callback may submit more work (put takes it)
                exc = whole or excs.get(0)
                if exc is not None:
                    future.set_exception(exc)
                else:
                    future.set_result(values[0])
        finally:  # a callback's exception raised again on the main thread (GuardedFuture)
            with self._cv:
                if future is None:
                    self._fill_slots(job, start, stop, values, excs, again)
                job.remaining -= stop - start - len(again)
                self.items_settled += stop - start - len(again)
                if job.remaining <= 0:
                    job.finish()
                self._cv.notify_all()
        if excs and job.owner is not None and job.owner.has_initializer:
            self._check_initializer(job.owner, whole or next(iter(excs.values())))

    @staticmethod
    def _fill_slots(
        job: Job,
        start: int,
        stop: int,
        values: list[Any],
        excs: dict[int, BaseException],
        again: set[int] | frozenset[int],
    ) -> None:
        """Map slots ``start:stop``: their values, or FAILED with the exception kept (those in
        ``again`` stay pending)."""
        if not excs and not again:
            job.values[start:stop] = values
            return
        whole = excs.get(-1)
        for i in range(start, stop):
            if i - start in again:
                continue
            exc = whole or excs.get(i - start)
            if exc is not None:
                job.values[i] = FAILED
                job.errors[i] = exc
            else:
                job.values[i] = values[i - start]

    def _check_initializer(self, owner: ExecutorState, exc: BaseException) -> None:
        """An evaluation of ``owner``'s failed with ``exc``: if its initializer failed on a worker,
        ``owner`` is broken, and every pending task of it fails with that :class:`BrokenPool`."""
        if owner.broken is None and isinstance(exc, BrokenPool):
            reason = str(exc)
            self._fail(owner.break_with(reason), reason)

    def _fail(self, jobs: list[Job], reason: str) -> None:
        """The pool broke: fail what is pending in ``jobs`` with :class:`BrokenPool`."""
        raised: BaseException | None = None  # by a callback, on the main thread: after the rest
        for job in jobs:  # futures outside the lock: a done callback may take it
            f = job.future
            if f is not None and not f.done():
                if self._claim(job) and not f.set_running_or_notify_cancel():
                    continue  # cancelled before it started: stays cancelled
                try:
                    with contextlib.suppress(InvalidStateError):  # cancelled meanwhile
                        f.set_exception(BrokenPool(reason))
                except BaseException as e:
                    raised = raised or e
        with self._cv:
            for job in jobs:
                if job.future is None:
                    for i in range(job.n):
                        if job.values[i] is PENDING:
                            job.values[i] = FAILED
                            job.errors[i] = BrokenPool(reason)
                job.remaining = 0
                job.next = job.n
                job.finish()
            self._cv.notify_all()
        if raised is not None:
            raise raised


def _named(exc: BaseException, job: Job, i: int, info: dict[str, Any]) -> BaseException:
    """The exception item ``i`` of ``job`` failed with, as its caller gets it.

    A result a worker could not pickle: its error names the function and the item too (the
    worker knew neither).  A ``BaseException`` that is not an ``Exception`` (``sys.exit()``,
    ``KeyboardInterrupt``, ``GeneratorExit``, a job's own subclass) raised by the fitness, or by
    its result's unpickling here: an :class:`EvaluationAborted` naming the item and the worker,
    the original as its cause.  Re-raised as itself, it would end the master as if the master
    had exited or been interrupted (a fitness's ``sys.exit(0)``: the whole run, exit code 0)."""
    if type(exc) is SerializationError and str(exc).startswith("the fitness returned"):
        named = SerializationError(f"{job.function() or 'the fitness'}, item {i}: {exc}")
        named.__cause__ = exc.__cause__
        return named
    if not isinstance(exc, Exception):
        return _aborted(exc, job, i, info.get("where", ""))
    return exc


def _aborted(exc: BaseException, job: Job, i: int, worker: str) -> EvaluationAborted:
    try:
        what = repr(exc)
    except Exception:  # its own __repr__ may raise: never the scheduler's failure
        what = type(exc).__name__
    where = f"on {worker}" if worker else "on the master, loading its result"
    aborted = EvaluationAborted(
        f"item {i} of {job.function() or 'the call'} raised {what} {where}: it fails that "
        "evaluation only, never the run (the original, with the worker's traceback, is the "
        "cause; on_error='penalize' or 'retry:N' goes on past it)",
        i,
        worker,
    )
    aborted.__cause__ = exc
    return aborted


def say(message: str) -> None:
    """One ``evocluster:`` line on stderr, now (the master's own output first)."""
    with contextlib.suppress(Exception):  # a closed stream: the run goes on without the line
        sys.stdout.flush()
        print(f"evocluster: {message}", file=sys.stderr, flush=True)
