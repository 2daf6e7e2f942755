"""The SCOOP backend: ``python -m scoop [-n N] job.py`` runs the same job as ``mpiexec``.

The only module that imports ``scoop`` (and ``zmq``, which SCOOP uses); :mod:`evocluster.executor`
loads it only when this process is part of a SCOOP run.  SCOOP starts N processes: the *origin*
runs the job as ``__main__``, the N-1 others import the job (as a module, so its ``if __name__ ==
"__main__":`` block does not run) and evaluate.  evocluster dispatches through ``scoop.futures``
and covers what SCOOP 0.7.2.0 does not::

    origin (main thread, root greenlet)                          SCOOP worker process
    -----------------------------------                          --------------------
    submit()/map() -> Job -> queue                              _evaluate(sealed):
      chunk (adaptive size) -> seal (HMAC) -> futures.submit --->  verify, only then load;
                                              (via the broker)     Worker.run: each item in
    Future.result(), wait(), map iterator                          its own try; seal result
      waiting drives SCOOP: _ScoopPool.drive()                             |
      zmq poll (blocks, no spinning) -> updateQueue <--- direct reply -----+
      open (verify HMAC, run token, chunk id) -> settle map slots / Futures

* **Main thread only.**  SCOOP's futures are greenlets of the main thread, so there is no scheduler
  thread here: whoever waits drives SCOOP.  ``Future`` objects are stdlib futures whose waits
  drive SCOOP on the main thread (:class:`_ScoopFuture`): ``result()`` and ``exception()`` until
  the future is settled, and ``concurrent.futures.wait`` and ``as_completed`` until their waiter's
  event is set (:class:`_DrivingEvent`), so they return as the stdlib documents: the first future
  to settle first, timeouts honoured.  Deviations: a thread other than the main one cannot submit,
  and its waits complete when the main thread next drives SCOOP; a future of another executor in
  the same ``wait`` as SCOOP work in flight is noticed within :data:`_IDLE_POLL`; a wait that
  would block inside a done callback raises ``RuntimeError`` (nothing could drive SCOOP); under
  ``-n 1`` the origin evaluates everything queued as soon as it drives.
* **The origin never evaluates.**  evocluster never lets SCOOP's controller run on the origin
  (no ``scoop.futures.wait`` without timeout, no SCOOP ``result()``): it flushes its tasks to the
  broker and polls SCOOP's sockets itself, blocking in ``zmq`` with a timeout, so evaluations
  happen on the N-1 workers only and a wait costs no CPU.  Under ``-n 1`` (no worker) the origin
  evaluates, one call at a time, with a warning.
* **Scheduling.**  The broker hands tasks to the workers that ask for them.  The origin keeps
  ``prefetch`` chunks per worker in flight, sized as the scheduler sizes them (measure first, then
  ~``chunk_target`` seconds per chunk, at least four chunks per worker, expensive calls one by
  one); each worker keeps exactly one task in reserve (:class:`_Reserve`, replacing SCOOP's own
  asking, which starves busy workers and piles requests up at the broker).
* **Payloads.**  Callables and arguments go through :mod:`evocluster.serialization` (policies
  ``upgrade`` / ``strict`` / ``cloudpickle``), so lambdas and closures work, strict mode fails on
  the master, and each item is evaluated in its own ``try`` on the worker (a
  :class:`~evocluster.worker.Worker` per process, with its function cache).  Exceptions come home
  with the worker's traceback, labelled ``SCOOP worker on host H (pid P)``.  A callable is
  serialised once per run.  Up to :data:`INLINE_MAX` bytes (a function by reference takes ~50) it
  rides along with each chunk and each worker loads it once; a larger one (a closure over a big
  array) is broadcast once to every worker through SCOOP's shared constants, and chunks carry only
  its digest.
* **Signing.**  SCOOP's broker listens on all interfaces and its workers unpickle whatever arrives.
  evocluster seals every task, result and broadcast callable it sends with HMAC-SHA256
  (:mod:`evocluster.signing`; the key never crosses SCOOP's sockets) and verifies before unpickling.
  A task that does not verify is refused, logged on the worker's stderr and answered with a
  :class:`~evocluster.errors.WorkerError`; a result that does not verify fails its items with a
  ``WorkerError``.  Results also echo a per-run token and the chunk id, so a recorded result cannot
  be replayed into another chunk.  What this does not cover: SCOOP's own messages (its futures,
  constants and control frames) are still unauthenticated pickles -- run SCOOP on a trusted network.
* **Worker loss.**  A worker that dies (a signal, the OOM killer, ``os._exit``) never answers, and
  SCOOP does not notice.  The origin watches a ZMQ monitor on its sockets (a worker's connection to
  the origin closes when its process dies, on any host) and, on its own host, the worker processes
  themselves; the pool is then broken and every pending evaluation raises
  :class:`~evocluster.errors.BrokenPool`.  SCOOP's own "a worker exited unexpectedly" shutdown ends
  the same way, and so does a worker whose import of the job fails after it imported evocluster
  (it posts a failure report that the broker relays to the origin).
* **Exit status.**  SCOOP's launcher exits 0 whatever happens (``scoop.launch.__main__`` ignores the
  origin's exit code).  When the job ends with an uncaught exception, ``sys.exit(n)`` with n != 0,
  or after the pool lost a worker, the origin prints one ``evocluster:`` message and sends SIGTERM
  to the launcher (its grandparent, found and checked through ``/proc`` or ``ps``): the run ends
  with exit status 143 (a shell's ``$?``; -15 for ``subprocess``), and the launcher's children end
  with it.  This guard is installed when the job
  imports evocluster, so import evocluster before anything that can fail.
* **SCOOP's TCP backend** (``--backend TCP``, which imports ``asyncore``, gone in Python 3.12) is
  refused: evocluster needs the default ZMQ backend.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures._base import CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED
from typing import Any

import scoop
from scoop import _control, futures, shared
from scoop._comm import Shutdown

from .. import config, jobfile, protocol, serialization, signing
from .._scheduling import PENDING, Chunk, Job, Scheduling
from ..errors import BrokenPool, ConfigurationError, JobError, WorkerError
from ..serialization import (
    dumps,
    frames_nbytes,
    loads,
    nest,
    pack_exception,
)
from ..worker import Worker

__all__ = ["INLINE_MAX", "install_guards", "shared_pool"]

#: Serialised callables up to this size travel with each chunk; larger ones are broadcast once.
INLINE_MAX = 16 * 1024
#: How long a worker waits for a broadcast callable to arrive (it is sent before the first task
#: that needs it, so it normally arrives with that task).
CONST_TIMEOUT = 60.0
#: Longest sleep of the origin's wait, in seconds: it wakes at once when a message arrives, so this
#: only bounds how late a dead local worker or an expired deadline is noticed.
_IDLE_POLL = 1.0
#: Before the exit guard kills the launcher: time for SCOOP's broker to relay the SHUTDOWN that
#: the origin sent as it finished, so that workers on other hosts stop too.
_GRACE = 0.2
#: The name under which SCOOP's bootstrap imports the job on workers (``scoop/bootstrap``).
_SCOOP_WORKER_MODULE = "SCOOP_WORKER"

_HOST = socket.gethostname()


def _say(message: str) -> None:
    sys.stdout.flush()
    print(f"evocluster: {message}", file=sys.stderr, flush=True)


# ====================================================================== worker side
class _WorkerSide:
    """What one process needs to evaluate sealed tasks: its key, label and evocluster Worker."""

    def __init__(self, label: str, key: bytes | None = None) -> None:
        self.label = label
        self.worker = Worker(label)
        self.key = key
        self.key_error = ""
        if key is None:
            try:  # a worker reads the key, never creates one: it must be the origin's
                self.key = signing.load_key(create=False)
            except ConfigurationError as e:
                self.key_error = str(e)

    def reply(self, body: tuple[Any, ...]) -> tuple[bytes, list[Any]]:
        frames = dumps(body)
        tag = signing.sign(self.key, frames) if self.key is not None else b""
        return tag, nest(frames)

    def refuse(self, reason: str) -> tuple[bytes, list[Any]]:
        """Answer a task that is not evocluster's own, without loading any of it."""
        _say(f"{self.label} refused a task: {reason}; it was not unpickled")
        err = WorkerError(f"{self.label} refused the task: {reason}")
        return self.reply((None, None, self.label, _failed(-1, err, self.label)))

    def evaluate(self, sealed: Any) -> tuple[bytes, list[Any]]:
        try:
            tag, frames = sealed
            frames = list(frames)
        except (TypeError, ValueError):
            return self.refuse("it is not a sealed evocluster payload")
        if self.key is None:
            return self.refuse(f"this worker has no key to verify it ({self.key_error})")
        if not signing.verify(self.key, tag, frames):
            return self.refuse(
                "its signature does not verify (forged, corrupted, or signed with another key: "
                f"every process of a run needs the same {signing.KEY_ENV} or key file)"
            )
        token, cid, record, const = loads(frames)
        fn_key = record[2]
        if const is not None and not self.worker.functions.touch(fn_key):
            failure = self._load_broadcast(fn_key, const)
            if failure is not None:
                return self.reply((token, cid, self.label, _failed(cid, failure, self.label)))
        return self.reply((token, cid, self.label, self.worker.run(record)))

    def _load_broadcast(self, fn_key: bytes, name: str) -> BaseException | None:
        sealed = shared.getConst(name, timeout=CONST_TIMEOUT)
        if sealed is None:
            return WorkerError(
                f"the callable broadcast as SCOOP constant {name!r} did not reach {self.label} "
                f"within {CONST_TIMEOUT:g} s"
            )
        tag, frames = sealed
        frames = list(frames)
        if self.key is None or not signing.verify(self.key, tag, frames):
            _say(f"{self.label} refused the broadcast callable {name!r}: bad signature")
            return WorkerError(f"{self.label} refused the broadcast callable: bad signature")
        self.worker.touch_or_load(fn_key, frames)
        return None


def _failed(cid: int, exc: BaseException, label: str) -> tuple[Any, ...]:
    """A RESULT record that fails a whole chunk with ``exc``."""
    return protocol.result(cid, nest(dumps([])), {-1: pack_exception(exc, label)}, 0.0)


_side: _WorkerSide | None = None
_reserve: _Reserve | None = None
_side_lock = threading.Lock()


def _worker_side() -> _WorkerSide:
    """This worker's state, made on its first task."""
    global _side, _reserve
    with _side_lock:
        if _side is None:
            _adopt_job_module()
            _side = _WorkerSide(f"SCOOP worker on host {_HOST} (pid {os.getpid()})")
            if _control.execQueue is not None:
                _reserve = _Reserve(_control.execQueue)
        return _side


class _Reserve:
    """A worker's requests for tasks: one task in reserve, never more (evocluster's prefetch=2).

    SCOOP's worker asks its broker for a task whenever its queue holds less than 10 ms of work by
    its estimate, and only then: a worker busy with a long chunk has nothing queued behind it
    (the others take all the work), and with cheap chunks the requests pile up at the broker,
    which later hands a whole burst to the worker that piled up most.  So evocluster makes the
    requests itself, counting them: at the start of each task it asks for one more if neither a
    queued task nor an unanswered request is in reserve.  SCOOP's own asking is switched off
    (``lowwatermark``), and so is its sending queued tasks back (``highwatermark``); a task or a
    request is always in reserve when SCOOP waits for the next task, so no worker starves.
    """

    def __init__(self, queue: Any) -> None:
        self.queue = queue
        queue.lowwatermark = -1.0  # SCOOP's pop() never asks
        queue.highwatermark = float("inf")  # nor sends a queued task back to the broker
        self.started = 0
        self.requested = len(queue)  # what SCOOP asked for so far has arrived (the running task)

    def task_started(self) -> None:
        self.started += 1
        # a task that arrived unasked (SCOOP asks on its own in rare cases) counts as asked for
        self.requested = max(self.requested, self.started + len(self.queue))
        if self.requested - self.started < 1:  # in reserve: queued tasks + unanswered requests
            self.queue.requestFuture()
            self.requested += 1


def _adopt_job_module() -> None:
    """Make a SCOOP worker look like every other evocluster worker.

    SCOOP's bootstrap imports the job as module ``SCOOP_WORKER`` and copies its names into its own
    ``__main__`` once.  evocluster's workers import the job as ``__worker__`` and *are* its
    ``__main__``: the job's ``__name__`` becomes ``__worker__`` and ``sys.modules["__main__"]`` the
    job itself, so that ``__main__.fitness``, pickled by reference on the origin, is looked up in
    the job as it is now.  Classes keep ``__module__ == "SCOOP_WORKER"``, which SCOOP aliases to
    ``__main__`` on the origin, so their instances still travel home by reference.
    """
    module = sys.modules.get(_SCOOP_WORKER_MODULE)
    if module is None:
        return
    module.__name__ = jobfile.WORKER_NAME
    sys.modules[jobfile.WORKER_NAME] = module
    sys.modules["__main__"] = module
    jobfile.in_worker = True


def _evaluate(sealed: Any) -> tuple[bytes, list[Any]]:
    """Worker side of every task (module level: SCOOP sends it by reference).

    ``sealed`` is ``(tag, frames)``; the frames are unpickled only once the tag verifies.  Never
    raises: whatever happens comes back as a sealed result record.
    """
    side = _worker_side()
    if _reserve is not None:
        _reserve.task_started()
    try:
        return side.evaluate(sealed)
    except BaseException as e:  # an evocluster bug: report it, never kill the worker over it
        err = WorkerError(f"{side.label} failed outside the fitness: {type(e).__name__}: {e}")
        err.__cause__ = e
        return side.reply((None, None, side.label, _failed(-1, err, side.label)))


# ====================================================================== origin side
def open_result(key: bytes, token: bytes, cid: int, sealed: Any) -> tuple[str, tuple[Any, ...]]:
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
        _say("refused a result from a SCOOP worker: its signature does not verify; not unpickled")
        raise WorkerError(
            "a SCOOP worker's result was refused: its signature does not verify (forged, "
            "corrupted, or signed with another key: every process of a run needs the same "
            f"{signing.KEY_ENV} or key file {signing.key_path()}; the worker's stderr says more)"
        )
    r_token, r_cid, label, record = loads(frames)
    if (r_token, r_cid) != (token, cid) and (r_token, r_cid) != (None, None):
        raise WorkerError(f"{label} answered for another chunk or run: refused (replayed?)")
    return label, record


class _ScoopFuture(Future[Any]):
    """A stdlib Future whose waits drive SCOOP.

    ``result`` and ``exception`` drive until this future is settled or their timeout passes.
    The stdlib ``wait`` and ``as_completed`` take every future's ``_condition``
    (:class:`_DrivingCondition`, which never drives when acquired), look at their states, then
    add a waiter to each future's ``_waiters`` and block on ``waiter.event``: the list
    (:class:`_DrivingWaiters`) gives each waiter a :class:`_DrivingEvent`, whose ``wait`` drives
    SCOOP until the event is set -- by the first future to settle, for ``FIRST_COMPLETED``.
    """

    def __init__(self, pool: _ScoopPool) -> None:
        super().__init__()
        self._pool = pool
        self._condition = _DrivingCondition(self, pool)  # type: ignore[assignment]
        self._waiters = _DrivingWaiters(pool)

    def _settled(self) -> bool:
        return self._state in (CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED)

    def result(self, timeout: float | None = None) -> Any:
        return self._after_drive(super().result, timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        return self._after_drive(super().exception, timeout)  # type: ignore[no-any-return]

    def _after_drive(self, get: Callable[[float | None], Any], timeout: float | None) -> Any:
        if not self._pool.can_drive():
            return get(timeout)  # another thread: wait for the main thread to settle it
        # a settled future does not drive: the stdlib's wait(FIRST_EXCEPTION) calls exception()
        # while it holds every condition, and a future settled by that drive (-n 1 evaluates
        # inline) would be in neither its done set nor its waiter: returned as not done
        if not self._settled():
            self._pool.drive_for(self._settled, timeout)
        with self._pool.quiet():
            return get(0)  # settled, or the stdlib's TimeoutError (its own class on 3.10)

    # these only look (or cancel, running done callbacks): quiet, like evocluster's own work, so
    # that a callback behaves as it does when a drive settles its future
    def done(self) -> bool:
        self._pool.step()
        with self._pool.quiet():
            return super().done()

    def running(self) -> bool:
        with self._pool.quiet():
            return super().running()

    def cancelled(self) -> bool:
        with self._pool.quiet():
            return super().cancelled()

    def cancel(self) -> bool:
        with self._pool.quiet():
            return super().cancel()

    def add_done_callback(self, fn: Callable[[Future[Any]], object]) -> None:
        with self._pool.quiet():
            super().add_done_callback(fn)

    def __repr__(self) -> str:
        with self._pool.quiet():
            return super().__repr__()


class _DrivingCondition:
    """Stands in for a Future's ``threading.Condition``: a reentrant lock whose ``wait`` drives.

    Acquiring it never drives: the stdlib's ``wait`` and ``as_completed`` acquire the condition of
    every future they are given before they look at them, and a drive there (until that future is
    settled) would make them return only once *all* were settled.  They block on their waiter's
    event instead, outside these locks (:class:`_DrivingEvent`).  ``wait`` drives until its future
    is settled; inside evocluster's own work (``pool.quiet()``, or while driving) it only looks.
    """

    def __init__(self, future: _ScoopFuture, pool: _ScoopPool) -> None:
        self._future = future
        self._pool = pool
        self._cond = threading.Condition()  # RLock: settling while wait() holds it is reentrant

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return self._cond.acquire(blocking, timeout)

    def release(self) -> None:
        self._cond.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def wait(self, timeout: float | None = None) -> bool:
        if self._pool.can_drive():
            return self._pool.drive_for(self._future._settled, timeout)
        if threading.current_thread() is threading.main_thread():
            return self._future._settled()  # evocluster is busy on this thread: cannot wait here
        return self._cond.wait(timeout)

    def notify(self, n: int = 1) -> None:
        self._cond.notify(n)

    def notify_all(self) -> None:
        self._cond.notify_all()


class _DrivingWaiters(list[Any]):
    """A :class:`_ScoopFuture`'s ``_waiters``: each waiter added gets a :class:`_DrivingEvent`.

    The stdlib (``_create_and_install_waiters``, CPython 3.10 to 3.13) makes one ``_Waiter`` per
    ``wait`` / ``as_completed`` call, appends it to every future's ``_waiters`` while it holds all
    their conditions, then blocks in ``waiter.event.wait(timeout)``; settling a future calls
    ``waiter.add_result`` (or ``add_exception`` / ``add_cancelled``), which sets ``waiter.event``
    when the call should return.  Every access goes through the attribute ``waiter.event``, so
    replacing it here, before anything can set it, is seen by both sides.  A waiter shared with
    futures of other executors gets the driving event too: the first SCOOP future it is added to
    swaps it (the state is copied, although nothing can have set it yet: whoever sets it needs a
    condition that the installing call holds).
    """

    def __init__(self, pool: _ScoopPool) -> None:
        super().__init__()
        self._pool = pool

    def append(self, waiter: Any) -> None:
        event = getattr(waiter, "event", None)
        if isinstance(event, threading.Event) and not isinstance(event, _DrivingEvent):
            driving = _DrivingEvent(self._pool)
            if event.is_set():
                driving.set()
            waiter.event = driving
        super().append(waiter)


class _DrivingEvent(threading.Event):
    """The event a stdlib ``wait`` / ``as_completed`` blocks on: waiting on it drives SCOOP.

    On the main thread, ``wait(timeout)`` drives (dispatch, and block in zmq for results, as every
    wait of this module does: no spinning) until the event is set or the timeout passes, so
    ``FIRST_COMPLETED`` and ``as_completed`` return as soon as the first future settles.  Should
    SCOOP have nothing left in flight while the event is unset (the other futures belong to
    another executor), it blocks on the event itself.  Other threads just wait: the main thread
    sets the event when it next drives.
    """

    def __init__(self, pool: _ScoopPool) -> None:
        super().__init__()
        self._pool = pool

    def wait(self, timeout: float | None = None) -> bool:
        pool = self._pool
        if pool.can_drive():
            deadline = None if timeout is None else time.monotonic() + timeout
            if pool.drive_for(self.is_set, timeout):
                return True
            # SCOOP has nothing more to do, or the time is up: only another thread can set it now
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        elif threading.current_thread() is threading.main_thread() and not self.is_set():
            # evocluster is at work on this thread (a done callback runs while it settles): a
            # wait here cannot drive SCOOP, and blocking would hang the run (looping would spin)
            if timeout is not None and timeout <= 0:
                return False
            raise RuntimeError(
                "under SCOOP, waiting for evocluster futures from a done callback cannot make "
                "progress (the main thread is settling futures): wait after the callback returns"
            )
        return super().wait(timeout)


class _ScoopPool(Scheduling):
    """The origin's view of the SCOOP workers, shared by every Executor handle.

    Main thread only (SCOOP's sockets and greenlets belong to it); ``_busy`` marks that evocluster
    itself is at work on it (a done callback may run meanwhile), so that a wait started meanwhile
    does not drive again.
    The job bookkeeping (chunk sizes, serialising chunks, settling results) is the scheduler's
    (:class:`~evocluster.executor._Scheduling`); its lock is uncontended here.
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
        self._labels: dict[int, str] = {}  # pid -> label, of workers on this host that answered
        self._busy = False
        self._main = threading.main_thread()
        self._local: _WorkerSide | None = None
        if self.inline:
            self._local = _WorkerSide(f"SCOOP origin on host {_HOST} (pid {os.getpid()})", self.key)
            _say(
                "SCOOP started no worker besides the origin: evaluating on the origin, one call "
                "at a time; launch with `python -m scoop -n N job.py` (N >= 2) for N-1 workers"
            )
            return
        self._comm = _control.execQueue.socket
        self._watch = _Watch(self._comm)

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
            chunk.frames = None  # SCOOP has them now
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
        record = protocol.task(chunk.cid, job.fn_key, payload, chunk.frames)
        frames = dumps((self.token, chunk.cid, record, const))
        sealed = (signing.sign(self.key, frames), nest(frames))
        self._count_sent(frames, chunk, inline_fn)
        if self._local is not None:  # -n 1: the origin evaluates, through the same sealed path
            self._on_answer(chunk, self._local.evaluate(sealed))
            return
        with _scoop_errors(self):
            sf = futures.submit(_evaluate, sealed)
            self._inflight[chunk.cid] = (sf, chunk)

    def _publish(self, fn_key: bytes, payload: Any) -> str | None:
        """Broadcast a large callable once, sealed, through SCOOP's shared constants."""
        name = f"evocluster_fn_{fn_key.hex()}"
        frames = list(payload)
        sealed = (signing.sign(self.key, frames), nest(frames))
        with _scoop_errors(self):
            shared.setConst(**{name: sealed})  # returns once the broker relayed it
            self._broadcast[fn_key] = name
            self._count_sent(frames, None, 1)
            return name
        return None

    def _collect(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for messages (blocking in zmq), then take in the results."""
        ready = self._watch.poll(timeout)
        self._comm.pumpInfoSocket()  # SCOOP's SHUTDOWN broadcast raises Shutdown here
        lost = self._watch.lost(ready, self._labels)
        if lost is not None:  # a report, if the worker sent one, says more: give it a moment
            self._watch.poll(0.1)
            self._comm.pumpInfoSocket()
        reports = _failure_reports()
        if reports or lost is not None:
            self._break(reports[0] if reports else str(lost))
            return
        _control.execQueue.updateQueue()
        for cid, (sf, chunk) in list(self._inflight.items()):
            if sf._ended():
                del self._inflight[cid]
                sf._delete()  # SCOOP's bookkeeping of this future
                self._on_scoop_future(sf, chunk)

    def _on_scoop_future(self, sf: Any, chunk: Chunk) -> None:
        if sf.exceptionValue is not None:  # SCOOP could not run the task at all
            tb = getattr(sf, "exceptionTraceback", "") or ""
            err = WorkerError(
                f"SCOOP could not run an evocluster task: {sf.exceptionValue!r}\n{tb}"
            )
            self._settle(chunk.job, chunk.start, chunk.stop, [], {-1: err})
            return
        self._on_answer(chunk, sf.resultValue)

    def _on_answer(self, chunk: Chunk, sealed: Any) -> None:
        job = chunk.job
        try:
            self.counters["messages_received"] += 1
            self.counters["bytes_received"] += frames_nbytes(sealed[1])
            label, record = open_result(self.key, self.token, chunk.cid, sealed)
        except Exception as e:
            self._settle(job, chunk.start, chunk.stop, [], {-1: e})
            return
        pid = _pid_of(label)
        if pid is not None and f"host {_HOST} " in label:
            self._labels[pid] = label
        self._record_result(chunk, record)

    def _break(self, reason: str) -> None:
        """The pool cannot go on: fail everything pending with :class:`BrokenPool`."""
        if self.broken is None:
            self.broken = reason
            _GUARD.lost = reason
        jobs = list(self._jobs) + [chunk.job for _, chunk in self._inflight.values()]
        self._jobs.clear()
        self._inflight.clear()
        self._fail(jobs, reason)


def _pid_of(label: str) -> int | None:
    head, _, tail = label.rpartition("(pid ")
    return int(tail.rstrip(")")) if head and tail.rstrip(")").isdigit() else None


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


class _Watch:
    """Notices dead workers, which SCOOP does not.

    * A ZMQ monitor on the origin's direct socket: each worker connects to it when it receives its
      first task from the origin, and the connection closes when the worker's process dies, on any
      host.  The same on the socket to the broker (the broker dies with the launcher).
    * On the origin's host, the worker processes themselves (SCOOP starts them as siblings of the
      origin): one that exited, or is a zombie, is lost -- including one that died before it ever
      received a task, which no socket reveals.
    """

    def __init__(self, comm: Any) -> None:
        import zmq  # SCOOP's default (ZMQ) backend brings it

        self._monitors = [
            comm.direct_socket.get_monitor_socket(zmq.EVENT_DISCONNECTED),
            comm.socket.get_monitor_socket(zmq.EVENT_DISCONNECTED),
        ]
        self._poller = zmq.Poller()
        for s in (comm.socket, comm.direct_socket, comm.infoSocket, *self._monitors):
            self._poller.register(s, zmq.POLLIN)
        self._parent = os.getppid()  # SCOOP's launch process, which started the local workers
        self._siblings: set[int] = set()
        self._next_check = 0.0

    def poll(self, timeout: float) -> dict[Any, int]:
        """Block up to ``timeout`` s, in zmq, until any of the origin's sockets has a message."""
        return dict(self._poller.poll(int(timeout * 1000)))

    def lost(self, ready: dict[Any, int], labels: dict[int, str]) -> str | None:
        """Why a worker is lost, if one is (``ready``: what :meth:`poll` returned)."""
        for i, monitor in enumerate(self._monitors):
            if monitor in ready:
                from zmq.utils.monitor import recv_monitor_message

                recv_monitor_message(monitor)
                dead = self._dead_siblings(labels)
                if dead:
                    return dead
                if i == 0:
                    return (
                        "a SCOOP worker was lost: its connection to the origin closed (the process "
                        "died: killed, out of memory, or a crash)"
                    )
                return "the SCOOP broker was lost (its connection to the origin closed)"
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + _IDLE_POLL
            return self._dead_siblings(labels)
        return None

    def _dead_siblings(self, labels: dict[int, str]) -> str | None:
        if os.getppid() != self._parent:  # re-parented: its children are not ours to watch
            return "SCOOP's launch process, which started the workers on this host, is gone"
        self._siblings |= _children(self._parent) - {os.getpid()}
        for pid in sorted(self._siblings):
            if not _alive(pid):
                name = labels.get(pid, f"SCOOP worker on host {_HOST} (pid {pid})")
                return f"{name} was lost: its process exited during the run"
        return None


def _children(pid: int) -> set[int]:
    """Child processes of ``pid`` (Linux ``/proc``; elsewhere none are known)."""
    found: set[int] = set()
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                found.update(int(p) for p in fh.read().split())
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


# ====================================================================== the executor
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
        serialization.set_worker_main_names(jobfile.module_level_names(job))
        # results may hold instances of the job's classes, pickled on workers as SCOOP_WORKER.X
        sys.modules.setdefault(_SCOOP_WORKER_MODULE, sys.modules["__main__"])
        _pool = _ScoopPool(options)
    return _pool


# ====================================================================== exit status
class _ExitGuard:
    """On the origin: make a failed run exit non-zero although SCOOP's launcher would exit 0."""

    def __init__(self) -> None:
        self.root: Any = None
        self.lost: str | None = None

    def check(self) -> None:
        """atexit: if the job failed or the pool lost a worker, say so and end the launcher."""
        exc = getattr(self.root, "exceptionValue", None)
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            exc = None
        if exc is None and self.lost is None:
            return
        lost = f"the SCOOP pool lost a worker ({self.lost.splitlines()[0]})" if self.lost else ""
        if isinstance(exc, BrokenPool) and lost:
            what = f"{lost}, and the job stopped with BrokenPool (traceback above)"
        elif isinstance(exc, SystemExit):
            what = f"the job exited with code {exc.code}" + (f"; {lost}" if lost else "")
        elif exc is not None:
            what = f"the job raised {type(exc).__name__} on the SCOOP origin (traceback above)"
            what += f"; {lost}" if lost else ""
        else:
            what = f"the job ended normally, but {lost}"
        launcher = _find_launcher()
        if launcher is None:
            _say(
                f"{what}. SCOOP's launcher exits 0 whatever happens, and evocluster could not "
                "find it to end the run with a non-zero code: check this message, not the code"
            )
            return
        _say(
            f"{what}. SCOOP's launcher would exit 0: evocluster ends the run with exit code 143 "
            f"(SIGTERM to the launcher, pid {launcher})"
        )
        time.sleep(_GRACE)
        with contextlib.suppress(OSError):
            os.kill(launcher, signal.SIGTERM)


_GUARD = _ExitGuard()
_installed = False


def _find_launcher() -> int | None:
    """SCOOP's launcher (``python -m scoop``): the origin's grandparent, checked by its command."""
    parent = os.getppid()
    grand = _parent_of(parent)
    if grand is None or grand <= 1:
        return None
    args = _cmdline(grand)
    if "scoop" not in args or "-m" not in args or any("scoop." in a for a in args):
        return None
    return grand


def _parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rpartition(")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        pass
    try:
        out = subprocess.run(
            ["ps", "-o", "ppid=", "-p", str(pid)], capture_output=True, text=True, check=False
        )
        return int(out.stdout.strip())
    except (OSError, ValueError):
        return None


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
    except OSError:
        pass
    try:
        out = subprocess.run(
            ["ps", "-o", "args=", "-p", str(pid)], capture_output=True, text=True, check=False
        )
        return out.stdout.split()
    except OSError:
        return []


def _report_failed_import(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
    """sys.excepthook of a SCOOP worker while it imports the job.

    SCOOP would let the worker die quietly and the origin wait for it forever.  Post the failure
    as a SCOOP shared constant instead: the broker relays it to the origin, and keeps it for an
    origin that connects later; the origin's pool breaks with this message.
    """
    if getattr(_control, "execQueue", None) is not None:  # SCOOP runs: its own hook handles it
        (_previous_hook or sys.__excepthook__)(exc_type, exc, tb)
        return
    label = f"SCOOP worker on host {_HOST} (pid {os.getpid()})"
    text = "".join(traceback.format_exception(exc_type, exc, tb))
    _say(f"{label} could not import the job:\n{text}")
    last = text.rstrip().splitlines()[-1] if text.strip() else exc_type.__name__
    with contextlib.suppress(Exception):
        _post_failure(f"{label} could not import the job ({last}); its stderr has the traceback")


_previous_hook: Callable[..., Any] | None = None
#: Prefix of the SCOOP constants by which workers report that they cannot serve.
_FAILURE = "evocluster_failed_"


def _post_failure(message: str) -> None:
    """Send a failure report to SCOOP's broker as a shared constant (its VARIABLE message)."""
    import pickle

    import zmq

    broker = scoop.BROKER
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 5000)  # the process exits next: deliver first
        sock.connect(f"tcp://{broker.hostname}:{broker.task_port}")
        name = f"{_FAILURE}{_HOST}_{os.getpid()}"
        owner = f"evocluster:{_HOST}:{os.getpid()}".encode()
        sock.send_multipart([b"V", pickle.dumps(name), pickle.dumps(message), pickle.dumps(owner)])
        sock.close()
    finally:
        ctx.term()


def _failure_reports() -> list[str]:
    """Failure reports workers posted (see :func:`_report_failed_import`)."""
    found: list[str] = []
    for values in (shared.elements or {}).values():
        found.extend(
            str(v) for k, v in values.items() if isinstance(k, str) and k.startswith(_FAILURE)
        )
    return found


def install_guards() -> None:
    """Called when a SCOOP process imports evocluster (idempotent).

    On the origin: the exit guard (:class:`_ExitGuard`), with the root future whose outcome is
    the job's.  On a worker, still importing the job: an excepthook that reports a failed import.
    """
    global _installed, _previous_hook
    if _installed:
        return
    _installed = True
    if getattr(scoop, "IS_ORIGIN", False):
        _GUARD.root = _control.current
        atexit.register(_GUARD.check)
    elif getattr(_control, "execQueue", None) is None:
        _previous_hook = sys.excepthook
        sys.excepthook = _report_failed_import
