"""The thread-driven pool: one scheduler thread per pool owns a :class:`Transport` and drives the
scheduling policy (:mod:`evocluster._scheduling`) over it.  Used for the local, serial and MPI
backends (SCOOP's pool is driven by SCOOP's main thread instead: ``backends/scoop``).

Data flow (the scheduler thread owns the transport; user threads never touch it)::

    user thread                 scheduler thread                      transport     workers
    -----------                 ----------------                      ---------     -------
    submit()/map() --+
                     | Job      +--> _jobs --> chunk (adaptive size) --> send() ----> evaluate
                     +-> _incoming           (prefetch <= 2 per worker,              |
                       (lock + wakeup)        large chunks only to idle ones)        |
    Future / map   <-- deliver <-- RESULT <------------------------------ poll() <---+
    iterator           (condition)          (cost per item -> next chunk size)
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
import time
import traceback
from collections import deque
from typing import Any

from . import _config as config
from . import _observe as observe
from . import _protocol as protocol
from . import _sharing as sharing
from ._backends.base import Transport
from ._calls import FN_CACHE_SIZE, FunctionCache
from ._jobs import PENDING, Chunk, Job
from ._scheduling import PoolBase
from ._serialization import dumps, frames_nbytes, loads, nest
from .errors import BrokenPool

__all__ = ["Pool", "master_cost"]

IDLE_POLL = 0.05  # while nothing is in flight, still look for unexpected worker messages


class Pool(PoolBase):
    """A scheduler thread, its transport, and the jobs waiting for them."""

    def __init__(
        self, transport: Transport, options: config.Options, name: str, *, thread: bool = True
    ) -> None:
        """``thread=False``: no scheduler thread is started; the caller runs the loop itself,
        with :meth:`drive` (a simulated transport and clock: ``benchmarks/simulate.py``)."""
        super().__init__(options, name, transport.n_workers)
        self.transport = transport
        # _lock also guards _incoming and _closing
        self._incoming: deque[Job] = deque()
        self._closing = False
        # --- scheduler-thread state, no lock needed ---
        self._staged: Chunk | None = None
        self._inflight: dict[int, tuple[int, Chunk]] = {}
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
        # each worker's, from its READY (the serial worker is this process: it sends none)
        self._hosts = [socket.gethostname()] * n if transport.evaluates_on_send else [""] * n
        self._pids = [0] * n  # each worker's, from its READY (it may write its host's copies)
        # how many of them are known, and the workers per host once all are (built once, when the
        # last READY arrives): a READY costs O(1), not a scan of every worker (O(n^2) over the
        # start-up of n ranks)
        self._placed = sum(map(bool, self._hosts))
        self._per_host: dict[str, int] | None = None
        self._dead = [False] * n
        # the scheduler thread's CPU seconds, [sending, the rest]: stats()' master_* (_loop)
        self._cpu = [0.0, 0.0]
        transport.work_of = self._work_of
        transport.label_of = self._labels.__getitem__
        self._thread = threading.Thread(target=self._run, name=f"evocluster-{name}", daemon=True)
        if thread:
            self._thread.start()

    # ------------------------------------------------------------------ user threads
    def put(self, job: Job) -> None:
        with self._lock:
            if self.broken is not None:
                raise BrokenPool(self.broken)
            if self._closing:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._incoming.append(job)
            self.count_put(job)
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

    def stats(self) -> dict[str, float]:
        counts = {**self.counters, **self.transport.stats()}
        return {**counts, **master_cost(self._cpu[0], self._cpu[1], counts)}

    def busy_workers(self) -> int:
        return sum(load > 0 for load in self._load)

    def worker_identity(self, key: Any) -> tuple[str, str]:
        # after its READY, the label the worker gives itself (and its failure records)
        return self._labels[key], self._hosts[key]

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

    def abandoned_only(self) -> bool:
        """Whether every job this pool still holds was abandoned by its caller: a map whose
        iterator was dropped (a timeout, an exception) or cancelled, a cancelled future (the
        exit path then need not wait for it).  Reads the scheduler thread's state from another
        thread: a copy that races with it counts as "not only abandoned" (the caller looks
        again a moment later)."""
        try:
            with self._lock:
                jobs = [*self._incoming, *self._jobs]
            jobs += [chunk.job for _, chunk in list(self._inflight.values())]
            staged = self._staged
        except RuntimeError:  # mutated while copied
            return False
        if staged is not None:
            jobs.append(staged.job)
        # no job at all: the scheduler is only waiting for the workers to say goodbye (slow to
        # start or to stop on a loaded machine), which is nothing abandoned
        return bool(jobs) and all(
            job.done or job.cancelled or (job.future is not None and job.future.cancelled())
            for job in jobs
        )

    def wait_slot(self, job: Job, i: int, deadline: float | None) -> Any:
        value = job.values[i]
        if value is not PENDING:  # settled slots never change: no lock needed
            return value
        with self._cv:
            while job.values[i] is PENDING:
                if deadline is None:
                    self._cv.wait()
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError()
                    self._cv.wait(left)
            return job.values[i]

    def wait_jobs(self, jobs: list[Job]) -> None:
        with self._cv:
            for job in jobs:
                while not job.done:
                    self._cv.wait()

    def wait_done_or_failed(self, job: Job) -> None:
        with self._cv:
            while not job.done and not job.errors:
                self._cv.wait()

    # ------------------------------------------------------------------ scheduler thread
    def drive(self) -> None:
        """Run the scheduler loop in the calling thread until the pool closes, for a pool made
        with ``thread=False``: the very loop the scheduler thread runs (policy, dispatch,
        results), over a transport whose :meth:`Transport.poll` simulates the workers and
        advances a virtual clock, and which puts the next jobs and closes the pool itself when
        the loop finds nothing to do (``benchmarks/simulate.py``).  Nothing else may run the
        pool's loop meanwhile."""
        if self._thread.is_alive():
            raise RuntimeError("this pool's loop runs in its scheduler thread")
        self._run()

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
            observe.emit("pool_closed", **self.snapshot())  # its last figures

    def _loop(self) -> None:
        t = self.transport
        # the master's CPU cost (stats()): this thread's CPU time, read twice a turn of the loop
        # (not per message: CLOCK_THREAD_CPUTIME_ID is a system call, not a vDSO clock), split
        # after the dispatch: sending (choosing, pickling, sending chunks), and the rest (the
        # transport's poll, reading and settling results)
        clock, cpu = time.thread_time, self._cpu
        mark = clock()
        while self.broken is None:
            t.clear_wakeup()
            with self._lock:
                self._jobs.extend(self._incoming)
                self._incoming.clear()
                closing = self._closing
            if self._sweep:
                self._sweep_cancelled()
            self._dispatch()
            now = clock()
            cpu[0] += now - mark
            mark = now
            idle = not self._inflight
            if closing and idle and self._staged is None and not self._has_work():
                return
            if idle:
                events = t.poll(IDLE_POLL)
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
                    self._on_ready(worker, record)
                elif kind == protocol.FAILED:
                    self._break(record.message)
            now = clock()
            cpu[1] += now - mark
            mark = now

    def _on_ready(self, worker: int, record: protocol.Ready) -> None:
        """A worker started: its label names its host and pid from now on."""
        self._labels[worker] = (
            f"{self.transport.describe(worker)} on host {record.host} (pid {record.pid})"
        )
        if record.host and not self._hosts[worker]:
            self._placed += 1
        self._hosts[worker] = record.host
        self._pids[worker] = record.pid
        if worker in self.workers:  # made when it was sent its first task (its bytes)
            stats = self.workers[worker]
            stats.name, stats.host = self.worker_identity(worker)
        if self._placed == self.n_workers:  # the last one: the run log's hosts record
            self._per_host = self._count_hosts()
            observe.emit("hosts", pool=self.serial, backend=self.name, hosts=dict(self._per_host))

    def hosts(self) -> dict[str, int] | None:
        if self._placed < self.n_workers:  # not every worker has said where it runs yet
            return None
        if self._per_host is None:  # (the serial pool's worker is this process: no READY)
            self._per_host = self._count_hosts()
        return dict(self._per_host)

    def _count_hosts(self) -> dict[str, int]:
        hosts: dict[str, int] = {}
        for host in self._hosts:
            hosts[host] = hosts.get(host, 0) + 1
        return hosts

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
            retarget = self._retarget(chunk, w)
            if retarget is None:
                return
            w = retarget
            include = not self._known[w].touch(job.fn_key)
            size = chunk.nbytes + (frames_nbytes(job.fn_payload) if include else 0)
            near = self._near(w)
            # the shared versions the worker lacks
            size += sharing.pending_bytes(self._known[w], job.fn_payload, near, self._hosts[w])
            busy = self._load[w] > 0
            big = not self.transport.async_sends and size > self.options.prefetch_max_bytes
            if busy and (big or not self.may_prefetch(job)):
                # wait for an idle worker: a big transfer needs a receiver, and an uneven
                # evaluation must not queue behind a long one
                self._staged = chunk
                w = self._pick_worker(idle_only=True)
                if w is None or (w == chunk.avoid and self._alive() > 1) or self._unplaced(w, job):
                    return
                include = not self._known[w].touch(job.fn_key)
            self._staged = None
            self._send(w, chunk, include)

    def _send(self, w: int, chunk: Chunk, include: bool) -> None:
        """Send ``chunk`` to worker ``w`` (``include``: with its callable, which ``w`` lacks)."""
        job = chunk.job
        if include:
            self._known[w].put(job.fn_key, True)
        cid = next(self._ids)
        payload = nest(job.fn_payload) if include else None
        # the shared versions the callable refers to, for a worker that lacks them: an idle
        # worker on another host may write that host's copy (it reads the task at once)
        idle = self._load[w] == 0 and self._pids[w] != 0
        shared = sharing.outgoing(
            self._known[w],
            job.fn_payload,
            self._near(w),
            self._hosts[w] if self.transport.host is not None else "",
            self._pids[w] if idle else None,
        )
        frames = dumps(protocol.task(cid, job.fn_key, payload, chunk.frames, job.limits, shared))
        self.transport.send(w, frames, idle=self._load[w] == 0)
        self._count_sent(frames, chunk, include)
        # the worker's bytes: its chunks (counted with their results), and here the rest of the
        # task: the callable, shared objects (for the bytes each host received)
        if include or shared:
            self.worker_stats(w).bytes_sent += frames_nbytes(frames) - chunk.nbytes
        chunk.worker = w
        self._inflight[cid] = (w, chunk)
        self._take_slot(w)

    def _near(self, w: int) -> bool:
        """Whether worker ``w`` runs on the master's host (shares its ``/dev/shm``)."""
        return self.transport.host is not None and self._hosts[w] == self.transport.host

    def _unplaced(self, w: int, job: Job) -> bool:
        """Whether ``job`` must wait until worker ``w`` says where it runs (its READY): it needs
        a large shared version ``w`` lacks, which goes by shared memory to a worker on the
        master's host and whole to the others."""
        return (
            self.transport.host is not None
            and not self._hosts[w]
            and sharing.wants_host(self._known[w], job.fn_payload)
        )

    def _take_slot(self, w: int) -> None:
        """Worker ``w`` has one more chunk in flight: move it up one level (a worker taken out
        of turn, for a retry, leaves a stale entry behind, which ``_pick_worker`` skips)."""
        level = self._levels[self._load[w]]
        if level and level[0] == w:
            level.popleft()
        self._load[w] += 1
        if self._load[w] < self._prefetch:
            self._levels[self._load[w]].append(w)

    def _retarget(self, chunk: Chunk, w: int) -> int | None:
        """The worker ``chunk`` goes to, given ``w`` is free: ``w``, unless the chunk retries an
        item that failed on ``w`` and another worker is alive; ``None`` (the chunk waits,
        staged) when none of them can take it now.  A chunk that needs a large shared version
        goes only to a worker that has said where it runs (:meth:`_unplaced`): another one that
        has, if one is free (a worker slow to start holds up nothing), else it waits."""
        if chunk.avoid != w or self._alive() == 1:
            other: int | None = w
        else:
            other = self._pick_other(chunk.avoid)
        if other is not None and self._unplaced(other, chunk.job):
            other = self._pick_placed(chunk.avoid)
        if other is None:
            self._staged = chunk
        return other

    def _pick_placed(self, avoid: int | None) -> int | None:
        """The least loaded worker other than ``avoid`` that has said where it runs and can take
        a chunk now, if any."""
        free = [
            w
            for w in range(self.n_workers)
            if self._hosts[w]
            and not self._dead[w]
            and w != avoid
            and self._load[w] < self._prefetch
        ]
        return min(free, key=self._load.__getitem__, default=None)

    def _work_of(self, worker: int) -> str:
        """What ``worker`` is evaluating, in words (read from another thread: a transport's
        report of the worker's death)."""
        chunks = [chunk for w, chunk in list(self._inflight.values()) if w == worker]
        if not chunks:
            return ""
        first = chunks[0]  # sent first: the one it evaluates (the others wait behind it)
        n = first.stop - first.start
        # a chunk's items are evaluated in turn, and only its result says which were done
        what = f"item {first.start}" if n == 1 else f"one of items {first.start}-{first.stop - 1}"
        return f"{what} of {first.job.function() or 'a call'}"

    def _pick_other(self, avoid: int) -> int | None:
        """A worker other than ``avoid`` that can take a chunk now (the least loaded), if any
        is alive; ``avoid`` itself when every other worker is dead."""
        best: int | None = None
        alive = False
        for w in range(self.n_workers):
            if w == avoid or self._dead[w]:
                continue
            alive = True
            load = self._load[w]
            if load < self._prefetch and (best is None or load < self._load[best]):
                best = w
        if not alive:
            return avoid
        return best

    def _on_result(self, worker: int, record: protocol.Result) -> None:
        entry = self._inflight.pop(record.chunk_id, None)
        if entry is None:  # a lost worker's: its chunk was sent again (cannot happen: defensive)
            return
        w, chunk = entry
        self._load[w] -= 1
        if not self._dead[w]:
            self._levels[self._load[w]].append(w)
        self._record_result(chunk, record)

    def _alive(self) -> int:
        return self.n_workers - sum(self._dead)

    def _lost(self, worker: int, reason: str) -> None:
        """A worker's connection ended (its process died).  Under ``on_worker_loss="fail"``, or
        once no worker is left, the pool breaks; else the worker is dead for good (never picked
        again, its prefetch slots freed) and what it held goes to the others."""
        if self._dead[worker]:
            return
        self._dead[worker] = True
        label = self._labels[worker]
        if self.options.on_worker_loss != "continue":
            self._break(f"{label} was lost: {reason}")
            return
        left = self._alive()
        if left == 0:
            losses = "; ".join([*self.lost, f"{label}: {reason}"])
            self._break(f"every worker was lost ({losses})")
            return
        cids = [cid for cid, (w, _) in self._inflight.items() if w == worker]
        chunks = [self._inflight.pop(cid)[1] for cid in cids]
        self._load[worker] = 0
        self._worker_lost(label, reason, chunks, left)

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


def master_cost(send_s: float, recv_s: float, counts: dict[str, int]) -> dict[str, float]:
    """The master's CPU cost, from its scheduler thread's CPU seconds sending (``send_s``) and
    otherwise (``recv_s``: polling, receiving, settling): both, then in microseconds per message
    sent and received, and per item dispatched (0.0 before any)."""

    def per(seconds: float, n: int) -> float:
        return round(seconds * 1e6 / n, 3) if n else 0.0

    return {
        "master_send_cpu_s": round(send_s, 6),
        "master_recv_cpu_s": round(recv_s, 6),
        "master_send_us_per_message": per(send_s, counts["messages_sent"]),
        "master_recv_us_per_message": per(recv_s, counts["messages_received"]),
        "master_us_per_item": per(send_s + recv_s, counts["items"]),
    }
