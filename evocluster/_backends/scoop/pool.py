"""The origin's pool of SCOOP's workers: dispatch, collect, and the waits that drive both.

:func:`shared_pool` makes one per run, shared by every ``Executor`` of it; the scheduling policy
(jobs, chunk sizes, settling results) is :class:`~evocluster._scheduling.PoolBase`'s, and this
module adds how chunks travel through SCOOP and who drives them: whoever waits, on the main thread
(:mod:`~evocluster._backends.scoop.futures` for the futures of ``submit``).

* **The origin never evaluates.**  evocluster never lets SCOOP's controller run on the origin
  (no ``scoop.futures.wait`` without timeout, no SCOOP ``result()``): it flushes its tasks to the
  broker and polls SCOOP's sockets itself, blocking in ``zmq`` with a timeout, so evaluations
  happen on the N-1 workers only and a wait costs no CPU.  Under ``-n 1`` (no worker) the origin
  evaluates, one call at a time, with a warning.
* **Scheduling.**  The broker hands tasks to the workers that ask for them.  The origin keeps
  ``prefetch`` chunks per worker in flight, sized as the scheduler sizes them (measure first, then
  ~``chunk_target`` seconds per chunk, at least four chunks per worker, smaller as the map
  ends, expensive calls one by one); each worker keeps exactly one task in reserve
  (:class:`~evocluster._backends.scoop.worker._Reserve`, replacing SCOOP's own asking, which
  starves busy workers and piles requests up at the broker).
* **Payloads.**  Callables and arguments go through :mod:`evocluster._serialization` (policies
  ``upgrade`` / ``strict`` / ``cloudpickle``), so lambdas and closures work, strict mode fails on
  the master, and each item is evaluated in its own ``try`` on the worker (a
  :class:`~evocluster._worker.Worker` per process, with its function cache).  Exceptions come home
  with the worker's traceback, labelled ``SCOOP worker on host H (pid P)``.  A callable is
  serialised once per run.  Up to :data:`INLINE_MAX` bytes (a function by reference takes 30-40:
  benchmarks/RESULTS.md F15, 2026-12-02) it rides along with each chunk and each worker loads it
  once; a larger one (a closure over a big array) is broadcast once to every worker through
  SCOOP's shared constants, and chunks carry only its digest.
* **Shared objects** (:func:`evocluster.share`).  The broker hands a task to whichever worker asks,
  so the origin cannot know which version of a shared object a worker holds: each version is
  broadcast once as a SCOOP constant, sent once rather than by ``shared.setConst`` (which sends
  it again every 0.1 s until its own copy comes back: a large object many times over), and
  chunks carry only references to it.  The copies SCOOP keeps of it (the origin's, of its own
  broadcast; a worker's, once it loaded the version) are dropped; the broker's is not.
* **SCOOP's TCP backend** (``--backend TCP``, which imports ``asyncore``, gone in Python 3.12) is
  refused: evocluster needs the default ZMQ backend.
"""

from __future__ import annotations

import contextlib
import itertools
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import scoop
from scoop import _control, futures, shared
from scoop._comm import Shutdown

from ... import _config as config
from ... import _jobfile as jobfile
from ... import _protocol as protocol
from ... import _sharing as sharing
from ... import _signing as signing
from ..._jobs import PENDING, Chunk, Job
from ..._scheduling import PoolBase
from ..._serialization import dumps, frames_nbytes, loads, nest
from ...errors import BrokenPool, ConfigurationError, JobError, WorkerError
from . import guard, proc
from .futures import _ScoopFuture
from .watch import _Watch
from .worker import _SCOOP_WORKER_MODULE, _decoy, _evaluate, _WorkerSide

#: Serialised callables up to this size travel with each chunk; larger ones are broadcast once.
INLINE_MAX = 16 * 1024
#: Longest sleep of the origin's wait, in seconds: it wakes at once when a message arrives, so this
#: only bounds how late a dead local worker or an expired deadline is noticed.
_IDLE_POLL = 1.0


def open_result(key: bytes, token: bytes, cid: int, sealed: Any) -> tuple[str, protocol.Result]:
    """Verify and load a worker's answer to chunk ``cid``; return ``(worker label, RESULT record)``.

    Raises:
        WorkerError: the answer is not sealed with this run's key, or belongs to another chunk
            or run; nothing of it was unpickled in the first case.
    """
    try:
        tag, frames = sealed
        frames = list(frames)
    except (TypeError, ValueError):
        raise WorkerError("a SCOOP worker's answer is not a sealed evocluster result") from None
    if not signing.verify(key, tag, frames):
        proc.say(
            "refused a result from a SCOOP worker: its signature does not verify; not unpickled"
        )
        raise WorkerError(
            "a SCOOP worker's result was refused: its signature does not verify (forged, "
            "corrupted, or signed with another key: every process of a run needs the same "
            f"{signing.KEY_ENV} or key file {signing.key_path()}; the worker's stderr says more)"
        )
    r_token, r_cid, label, record = loads(frames)
    if (r_token, r_cid) != (token, cid) and (r_token, r_cid) != (None, None):
        raise WorkerError(f"{label} answered for another chunk or run: refused (replayed?)")
    return label, record


class _ScoopPool(PoolBase):
    """The origin's view of the SCOOP workers, shared by every Executor handle.

    Main thread only (SCOOP's sockets and greenlets belong to it); ``_busy`` marks that evocluster
    itself is at work on it (a done callback may run meanwhile), so that a wait started meanwhile
    does not drive again.
    The job bookkeeping (chunk sizes, serialising chunks, settling results) is the scheduler's
    (:class:`~evocluster._scheduling.PoolBase`); its lock is uncontended here.
    """

    def __init__(self, options: config.Options) -> None:
        size = int(getattr(scoop, "SIZE", 1) or 1)
        super().__init__(options, "scoop", max(1, size - 1))
        self.inline = size <= 1  # -n 1: the origin is the only process
        self.key = signing.load_key(create=True)
        self.token = secrets.token_bytes(8)  # results must echo it: no replay across runs
        self._inflight: dict[int, tuple[Any, Chunk]] = {}  # chunk id -> (SCOOP future, chunk)
        self._ids = itertools.count()
        self._broadcast: dict[bytes, str] = {}  # function key -> SCOOP constant name
        self._published: set[bytes] = set()  # tokens of the shared versions broadcast
        # SCOOP started every worker on this host: large shared versions go by shared memory
        self._one_host = guard.workers_on_this_host()
        self._labels: dict[int, str] = {}  # pid -> label, of workers on this host that answered
        self._busy = False
        self._main = threading.main_thread()
        # on_worker_loss="continue": SCOOP's broker does not say which worker holds which task,
        # so after a loss every chunk in flight is sent again: chunk id -> the ids of every
        # sending of that chunk (one set shared by them), the first answer of which counts; the
        # others' SCOOP futures wait here to be deleted when they end (a lost worker's never do)
        self._copies: dict[int, set[int]] = {}
        self._resends: set[int] = set()  # chunk ids sent again after a loss
        self._dropped: list[Any] = []
        self._local: _WorkerSide | None = None
        if self.inline:
            self._local = _WorkerSide(proc.label("origin"), self.key)
            proc.say(
                "SCOOP started no worker besides the origin: evaluating on the origin, one call "
                "at a time; launch with `python -m scoop -n N job.py` (N >= 2) for N-1 workers"
            )
            return
        self._comm = _control.execQueue.socket
        self._watch = _Watch(self._comm, check_every=_IDLE_POLL)

    # ------------------------------------------------------------------ any thread
    def can_drive(self) -> bool:
        return threading.current_thread() is self._main and not self._busy

    @contextlib.contextmanager
    def quiet(self) -> Iterator[None]:
        """evocluster's own work on the main thread: waits started meanwhile do not drive."""
        if threading.current_thread() is not self._main:
            yield
            return
        busy, self._busy = self._busy, True
        try:
            yield
        finally:
            self._busy = busy

    # ------------------------------------------------------------------ main thread
    def put(self, job: Job) -> None:
        if threading.current_thread() is not self._main:
            raise RuntimeError(
                "under SCOOP, evocluster can submit work from the main thread only (SCOOP's "
                "futures are greenlets of the main thread)"
            )
        if self.broken is not None:
            raise BrokenPool(self.broken)
        if job.n:
            self._jobs.append(job)
            self.count_put(job)

    def new_future(self) -> Future[Any]:
        return _ScoopFuture(self)

    def wait_slot(self, job: Job, i: int, deadline: float | None) -> Any:
        if job.values[i] is PENDING:
            self.drive(lambda: job.values[i] is not PENDING, deadline)
        value = job.values[i]
        if value is PENDING:
            raise TimeoutError()
        return value

    def wait_jobs(self, jobs: list[Job]) -> None:
        self.drive(lambda: all(j.done for j in jobs), None)

    def wait_done_or_failed(self, job: Job) -> None:
        self.drive(lambda: job.done or bool(job.errors), None)

    def close(self, wait: bool = True, cancel: bool = False, timeout: float | None = None) -> bool:
        """Never called: SCOOP's workers belong to the run, not to an executor (none owns this
        pool); it stops nothing and says the pool did not end."""
        return False

    def step(self) -> None:
        """Make progress without blocking: dispatch what fits, collect what has arrived."""
        if self.can_drive() and not self.inline:
            self.drive(lambda: True, None, poll_once=True)

    def drive_for(self, until: Callable[[], bool], timeout: float | None) -> bool:
        """:meth:`drive` for up to ``timeout`` s; a timeout of 0 still takes in what has arrived."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.drive(until, deadline):
            return True
        self.step()  # drive() does not poll once the deadline has passed
        return until()

    def drive(
        self, until: Callable[[], bool], deadline: float | None, *, poll_once: bool = False
    ) -> bool:
        """Dispatch and collect until ``until()`` or the deadline; return ``until()``."""
        if not self.can_drive():
            return until()
        with self.quiet():
            try:
                while True:
                    self._dispatch()
                    if poll_once:
                        self._collect(0.0)
                        self._dispatch()
                        return until()
                    if until():
                        return True
                    if not self._inflight and not self._has_work():
                        return until()  # nothing can change any more
                    left = _IDLE_POLL if deadline is None else deadline - time.monotonic()
                    if left <= 0:
                        return until()
                    self._collect(min(left, _IDLE_POLL))
            except Shutdown:
                self._break(
                    "SCOOP shut the pool down during the run: a worker exited unexpectedly (its "
                    "own messages, above, say why)"
                )
                return until()

    def _dispatch(self) -> None:
        if self.broken is not None:
            return
        limit = 1 if self.inline else self.n_workers * self.options.prefetch
        sent = False
        while len(self._inflight) < limit:
            chunk = self._next_chunk()
            if chunk is None:
                break
            chunk.cid = next(self._ids)
            self._send(chunk)
            if self.options.on_worker_loss != "continue":
                chunk.frames = None  # SCOOP has them now (else kept, to send again)
            sent = True
            if self.broken is not None:
                return
        if sent and not self.inline:
            with _scoop_errors(self):
                _control.execQueue.flush()  # SCOOP keeps its newest future back: send it too

    def _send(self, chunk: Chunk) -> None:
        job = chunk.job
        inline_fn = frames_nbytes(job.fn_payload) <= INLINE_MAX or self.inline
        const = None
        if not inline_fn:
            const = self._broadcast.get(job.fn_key)
            if const is None:
                const = self._publish(job.fn_key, job.fn_payload)
                if const is None:
                    return
        payload = nest(job.fn_payload) if inline_fn else None
        shared = self._shared(job.fn_payload)
        if self.broken is not None:
            return
        record = protocol.task(chunk.cid, job.fn_key, payload, chunk.frames, job.limits, shared)
        frames = dumps((self.token, chunk.cid, record, const))
        sealed = (signing.sign(self.key, frames), nest(frames))
        self._count_sent(frames, chunk, inline_fn)
        if self._local is not None:  # -n 1: the origin evaluates, through the same sealed path
            self._on_answer(chunk, self._local.evaluate(sealed))
            return
        with _scoop_errors(self):
            sf = futures.submit(_evaluate, sealed)
            self._inflight[chunk.cid] = (sf, chunk)

    def _shared(self, payload: Any) -> tuple[tuple[str, bytes, Any], ...] | None:
        """What a task with ``payload`` carries of the shared versions it needs: under ``-n 1``
        the frames of those the origin's side lacks; else references only, each version
        broadcast once first (a worker fetches what it lacks)."""
        needed = sharing.needs(payload)
        if not needed:
            return None
        if self._local is not None:  # -n 1: the origin's own side holds what it was sent
            return sharing.outgoing(self._local, payload)
        for version in needed:
            if version.token not in self._published:
                self._publish_shared(version)
        return tuple((v.name, v.token, None) for v in needed)

    def _publish_shared(self, version: sharing.Version) -> None:
        """Broadcast a version of a shared object once, sealed, as a SCOOP constant: a large
        one as a reference to the origin's shared memory copy (:class:`~evocluster._sharing.
        Segment`) when every worker runs on the origin's host, else whole."""
        name = sharing.scoop_constant(version.name, version.token)
        segment = sharing.segment_of(version) if self._one_host else None
        if segment is not None:
            frames = list(dumps(segment.on(socket.gethostname())))
            sealed: tuple[Any, ...] = (signing.sign(self.key, frames), nest(frames), "segment")
        else:
            frames = list(version.frames)
            sealed = (signing.sign(self.key, frames), nest(frames))
        with _scoop_errors(self):
            _send_constant(name, sealed)
            self._published.add(version.token)
            self._count_sent(frames, None, 0)

    def _publish(self, fn_key: bytes, payload: Any) -> str | None:
        """Broadcast a large callable once, sealed, through SCOOP's shared constants."""
        name = f"{_FN_PREFIX}{fn_key.hex()}"
        frames = list(payload)
        sealed = (signing.sign(self.key, frames), nest(frames))
        with _scoop_errors(self):
            _send_constant(name, sealed)
            self._broadcast[fn_key] = name
            self._count_sent(frames, None, 1)
            return name
        return None

    def _collect(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for messages (blocking in zmq), then take in the results."""
        ready = self._watch.poll(timeout)
        self._comm.pumpInfoSocket()  # SCOOP's SHUTDOWN broadcast raises Shutdown here
        if self._published or self._broadcast:  # the broker's echo of our own broadcasts
            mine = (shared.elements or {}).get(scoop.worker) or {}
            for name in [n for n in mine if n.startswith(_OWN_CONSTANTS)]:
                del mine[name]  # (a large object's copy, which this process never reads)
        lost = self._watch.lost(ready, self._labels)
        if lost is not None:  # a report, if the worker sent one, says more: give it a moment
            self._watch.poll(0.1)
            self._comm.pumpInfoSocket()
        reports = guard._failure_reports()
        if reports:
            self._break(reports[0])
            return
        if lost is not None:
            if self.options.on_worker_loss != "continue" or self._watch.broker:
                self._break(lost)
                return
            who = self._watch.who
            self._lose(who, lost.removeprefix(f"{who} was lost: "))
            if self.broken is not None:
                return
        self._take_ended()

    def _take_ended(self) -> None:
        """Take in the answers SCOOP has received."""
        _control.execQueue.updateQueue()
        for cid, (sf, chunk) in list(self._inflight.items()):
            if cid in self._inflight and sf._ended():
                del self._inflight[cid]
                sf._delete()  # SCOOP's bookkeeping of this future
                self._untwin(cid, chunk)
                self._on_scoop_future(sf, chunk, cid)
        for sf in [sf for sf in self._dropped if sf._ended()]:
            self._dropped.remove(sf)
            sf._delete()

    def _lose(self, who: str, reason: str) -> None:
        """A worker was lost (``on_worker_loss="continue"``): unless it was the last one, send a
        decoy per worker (the broker may hold the lost worker's request for a task), then every
        chunk in flight again (which of them it held, SCOOP does not say)."""
        left = self.n_workers - len(self.lost) - 1
        if left <= 0:
            self._break(f"every worker was lost ({'; '.join([*self.lost, f'{who}: {reason}'])})")
            return
        with _scoop_errors(self):
            for _ in range(self.n_workers):
                self._dropped.append(futures.submit(_decoy))
        chunks: list[Chunk] = []
        seen: set[int] = set()
        for cid, (_, chunk) in list(self._inflight.items()):
            if id(chunk) in seen or chunk.frames is None:
                continue  # one more sending per chunk, whichever of its sendings this is
            seen.add(id(chunk))
            again = next(self._ids)
            copies = self._copies.setdefault(cid, {cid})
            copies.add(again)
            self._copies[again] = copies
            self._resends.add(again)
            chunk.cid = again
            self._send(chunk)
            chunks.append(chunk)
        with _scoop_errors(self):
            _control.execQueue.flush()
        n = sum(c.stop - c.start for c in chunks)
        self._worker_lost(
            who,
            reason,
            [],
            left,
            f"the {n} evaluation{'s' if n != 1 else ''} in flight go again to the {left} "
            f"worker{'s' if left != 1 else ''} left (SCOOP does not say which it held: the "
            "first answer of each counts)",
            n,
        )

    def _untwin(self, cid: int, chunk: Chunk) -> None:
        """Chunk ``cid`` answered: its other sendings, if it has any, are dropped (their answers,
        if they ever come, are not read).  An answer to a sending after a loss, while the first
        one is still pending, is recorded as its items' failures (``WorkerLost``, action
        ``"retried"``)."""
        copies = self._copies.pop(cid, None)
        if copies is None:
            return
        first_pending = False
        for other in copies - {cid}:
            self._copies.pop(other, None)
            self._resends.discard(other)
            entry = self._inflight.pop(other, None)
            if entry is not None:
                self._dropped.append(entry[0])
                first_pending = first_pending or other == min(copies)
        if cid in self._resends and first_pending:
            who = self.lost[-1] if self.lost else "a SCOOP worker"
            self._record_lost(
                chunk,
                who.partition(": ")[0],
                f"a worker was lost ({who}) and this evaluation's first sending never answered: "
                "it was evaluated again (on_worker_loss=continue)",
            )
        self._resends.discard(cid)

    def _on_scoop_future(self, sf: Any, chunk: Chunk, cid: int) -> None:
        if sf.exceptionValue is not None:  # SCOOP could not run the task at all
            tb = getattr(sf, "exceptionTraceback", "") or ""
            err = WorkerError(
                f"SCOOP could not run an evocluster task: {sf.exceptionValue!r}\n{tb}"
            )
            self._settle(chunk.job, chunk.start, chunk.stop, [], {-1: err})
            return
        self._on_answer(chunk, sf.resultValue, cid)

    def _on_answer(self, chunk: Chunk, sealed: Any, cid: int | None = None) -> None:
        job = chunk.job
        try:
            self.counters["messages_received"] += 1
            self.counters["bytes_received"] += frames_nbytes(sealed[1])
            label, record = open_result(
                self.key, self.token, chunk.cid if cid is None else cid, sealed
            )
        except Exception as e:
            self._settle(job, chunk.start, chunk.stop, [], {-1: e})
            return
        pid = proc.pid_of(label)
        if pid is not None and proc.on_this_host(label):
            self._labels[pid] = label
        self._record_result(chunk, record, label)

    def hosts(self) -> dict[str, int] | None:
        """The workers that have answered, per host (SCOOP says nothing of the others)."""
        hosts: dict[str, int] = {}
        for stats in list(self.workers.values()):
            hosts[stats.host] = hosts.get(stats.host, 0) + 1
        return hosts or None

    def busy_workers(self) -> int:
        return min(self.n_workers, len(self._inflight))

    def worker_identity(self, key: Any) -> tuple[str, str]:
        host = str(key).partition(" on host ")[2].partition(" (pid")[0]
        return str(key), host

    def _break(self, reason: str) -> None:
        """The pool cannot go on: fail everything pending with :class:`BrokenPool`."""
        if self.broken is None:
            self.broken = reason
            guard.pool_lost(reason)
        jobs = list(self._jobs) + [chunk.job for _, chunk in self._inflight.values()]
        jobs += [chunk.job for chunk in self._resend]
        self._jobs.clear()
        self._inflight.clear()
        self._resend.clear()
        self._fail(jobs, reason)


#: The SCOOP constants the origin broadcasts: large callables, and versions of shared objects.
_FN_PREFIX = "evocluster_fn_"
_OWN_CONSTANTS = (_FN_PREFIX, sharing.SCOOP_PREFIX)


def _send_constant(name: str, sealed: Any) -> None:
    """Broadcast a SCOOP constant, once.  ``shared.setConst`` sends it again every 0.1 s until the
    broker's copy comes back to this process (a large object many times over: a 1 GB shared
    object took 36.5 s to its first result, issue 20); the broker relays it to every worker
    whatever, a task sent after it reaches the broker after it, and a worker waits for a
    constant it lacks (``shared.getConst`` with a timeout)."""
    _control.execQueue.socket.sendVariable(name, sealed)


@contextlib.contextmanager
def _scoop_errors(pool: _ScoopPool) -> Iterator[None]:
    """SCOOP raises Shutdown from any call that reads its info socket: break the pool."""
    try:
        yield
    except Shutdown:
        pool._break(
            "SCOOP shut the pool down during the run: a worker exited unexpectedly (its own "
            "messages, above, say why)"
        )


# the origin's pool, once made: every Executor of the run shares it
_pool: _ScoopPool | None = None


def shared_pool(options: config.Options) -> _ScoopPool:
    """The origin's pool of SCOOP's workers, shared by every Executor of the run (their
    shutdown stops the handle, never SCOOP).  Driven from the main thread: see the module
    docstring for what that changes.

    Raises:
        JobError: called on a SCOOP worker (while it imports the job).
        ConfigurationError: SCOOP's TCP backend.
    """
    global _pool
    if _pool is None:
        if scoop.CONFIGURATION.get("backend", "ZMQ") != "ZMQ":
            raise ConfigurationError(
                "evocluster needs SCOOP's default ZMQ backend, not --backend "
                f"{scoop.CONFIGURATION.get('backend')} (which imports asyncore, gone in Python "
                "3.12): launch with `python -m scoop [-n N] job.py`"
            )
        if not getattr(scoop, "IS_ORIGIN", False):
            raise JobError(
                "the job started a pool while a SCOOP worker was importing it: put the code "
                "that runs the evolution under `if __name__ == '__main__':` so that workers only "
                "import definitions"
            )
        job = jobfile.spec_for_current_main()
        jobfile.prepare_master(job)
        # results may hold instances of the job's classes, pickled on workers as SCOOP_WORKER.X
        sys.modules.setdefault(_SCOOP_WORKER_MODULE, sys.modules["__main__"])
        _pool = _ScoopPool(options)
    return _pool
