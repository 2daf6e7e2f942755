"""The futures of ``submit`` under SCOOP: stdlib ``Future`` objects whose waits drive SCOOP.

* **Main thread only.**  SCOOP's futures are greenlets of the main thread, so there is no scheduler
  thread here: whoever waits drives SCOOP.  ``Future`` objects are stdlib futures whose waits
  drive SCOOP on the main thread (:class:`_ScoopFuture`): ``result()`` and ``exception()`` until
  the future is settled, and ``concurrent.futures.wait`` and ``as_completed`` until their waiter's
  event is set (:class:`_DrivingEvent`), so they return as the stdlib documents: the first future
  to settle first, timeouts honoured.  Deviations: a thread other than the main one cannot submit,
  and its waits complete when the main thread next drives SCOOP; a future of another executor in
  the same ``wait`` as SCOOP work in flight is noticed within
  :data:`~evocluster._backends.scoop.pool._IDLE_POLL`; a wait that would block inside a done
  callback raises ``RuntimeError`` (nothing could drive SCOOP); under ``-n 1`` the origin
  evaluates everything queued as soon as it drives.

Each stand-in is handed the pool that drives (a :class:`_Driver`: the SCOOP pool hands itself to
every future it makes), so this module does not import the pool's.

**The stdlib's internals they stand on.**  ``wait`` and ``as_completed`` can only be made to
drive from inside, through attributes ``concurrent.futures._base`` keeps private.  What is
relied on, as ``Lib/concurrent/futures/_base.py`` has it:

* ``Future.__init__`` sets ``self._condition = threading.Condition()`` and ``self._waiters = []``
  and touches neither again: :class:`_ScoopFuture` replaces both once it returns.
* Every ``Future`` method reaches its condition only as ``self._condition`` (``with``,
  ``wait(timeout)``, ``notify_all()``) and its state only as ``self._state``; a settled future is
  in ``CANCELLED``, ``CANCELLED_AND_NOTIFIED`` or ``FINISHED``.
* ``wait`` and ``as_completed`` acquire every future's ``_condition`` (``_AcquireFutures``:
  ``acquire()`` / ``release()``), read their ``_state``, make one ``_Waiter`` and ``append`` it
  to each future's ``_waiters`` (``_create_and_install_waiters``), release, block in
  ``waiter.event.wait(timeout)`` (``as_completed`` also clears it, under ``waiter.lock``) and
  finally ``_waiters.remove(waiter)``.  Settling a future calls ``add_result`` /
  ``add_exception`` / ``add_cancelled`` on each of its ``_waiters``, which set ``waiter.event``;
  both sides reach the event as that attribute, every time.

Verified on CPython 3.10 to 3.13 (:data:`VERIFIED`): the file as shipped with 3.10.13, 3.11.7,
3.12.1, 3.12.10 and 3.13.0 was read (the last four are identical; 3.10's differs only in
``TimeoutError``, its own class there and the builtin's alias from 3.11, which ``result()`` and
``exception()`` raise as the stdlib's own futures do), and the SCOOP tests pass on 3.10.13,
3.11.7, 3.12.1 and 3.13.0 with SCOOP 0.7.2.0.  On any other interpreter, making one of
these futures (a ``submit`` under SCOOP) raises :class:`~evocluster.errors.ConfigurationError`
saying so, rather than risk waits that hang or return early; ``map`` and ``starmap`` use none of
this and run.  To support a new version, check the points above in its ``_base.py``, run the
SCOOP tests on it, and add it to :data:`VERIFIED`.
"""

from __future__ import annotations

import platform
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures._base import CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED
from contextlib import AbstractContextManager
from typing import Any, Protocol

from ..._jobs import GuardedFuture
from ...errors import ConfigurationError

#: The CPython versions (major, minor) whose ``concurrent/futures/_base.py`` was checked against
#: what the stand-ins rely on (the module docstring lists it).
VERIFIED = ((3, 10), (3, 11), (3, 12), (3, 13))


def _unverified() -> str | None:
    """Why the stand-ins cannot be trusted on this interpreter, or ``None`` if they can."""
    if sys.implementation.name == "cpython" and sys.version_info[:2] in VERIFIED:
        return None
    checked = f"{VERIFIED[0][0]}.{VERIFIED[0][1]} to {VERIFIED[-1][0]}.{VERIFIED[-1][1]}"
    this = f"{platform.python_implementation()} {platform.python_version()}"
    return (
        "under SCOOP, evocluster's futures rely on private internals of concurrent.futures that "
        f"were checked on CPython {checked} only, not on {this}: submit() is refused rather than "
        "risk a wait that hangs. map() and starmap() do not use them and work here; for submit(), "
        f"run SCOOP on CPython {checked}, or the job without SCOOP (`mpiexec -n N python -m "
        "evocluster job.py`, or `python -m evocluster --backend local job.py`)"
    )


#: Set when this interpreter is not one the stand-ins were verified on: why.
_UNVERIFIED = _unverified()


class _Driver(Protocol):
    """What the stand-ins need of the pool that drives SCOOP (the SCOOP pool, which hands itself
    to each of them)."""

    def can_drive(self) -> bool:
        """Whether a wait on this thread, now, may drive SCOOP."""
        ...

    def drive_for(self, until: Callable[[], bool], timeout: float | None) -> bool:
        """Drive until ``until()`` or ``timeout`` s; return ``until()``."""
        ...

    def quiet(self) -> AbstractContextManager[None]:
        """evocluster's own work on the main thread: waits started meanwhile do not drive."""
        ...

    def step(self) -> None:
        """Make progress without blocking."""
        ...


class _ScoopFuture(GuardedFuture):
    """A stdlib Future whose waits drive SCOOP.

    ``result`` and ``exception`` drive until this future is settled or their timeout passes.
    The stdlib ``wait`` and ``as_completed`` take every future's ``_condition``
    (:class:`_DrivingCondition`, which never drives when acquired), look at their states, then
    add a waiter to each future's ``_waiters`` and block on ``waiter.event``: the list
    (:class:`_DrivingWaiters`) gives each waiter a :class:`_DrivingEvent`, whose ``wait`` drives
    SCOOP until the event is set -- by the first future to settle, for ``FIRST_COMPLETED``.

    Raises:
        ConfigurationError: on an interpreter the stand-ins were not verified on.
    """

    def __init__(self, pool: _Driver) -> None:
        if _UNVERIFIED is not None:
            raise ConfigurationError(_UNVERIFIED)
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

    def __init__(self, future: _ScoopFuture, pool: _Driver) -> None:
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

    def __init__(self, pool: _Driver) -> None:
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
    wait of the pool does: no spinning) until the event is set or the timeout passes, so
    ``FIRST_COMPLETED`` and ``as_completed`` return as soon as the first future settles.  Should
    SCOOP have nothing left in flight while the event is unset (the other futures belong to
    another executor), it blocks on the event itself.  Other threads just wait: the main thread
    sets the event when it next drives.
    """

    def __init__(self, pool: _Driver) -> None:
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
