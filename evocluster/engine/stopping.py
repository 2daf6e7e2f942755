"""Stopping an engine loop on SIGUSR1 or SIGTERM (a batch system's warning before its wall-time
limit): the signal sets a flag, and the loop looks at it.

* :class:`StopSignals` installs the handlers while a checkpointing loop runs.  A handler only
  notes the first signal (:attr:`StopSignals.signal`): it raises nothing, takes no lock, and
  starts nothing.
* The loop looks at the flag between generations (``Checkpointing.safe_point``) and while it
  waits for evaluations: every such wait goes through :meth:`Waits.until`, which waits in steps
  of :data:`STEP` seconds and looks at the flag before each step.  Once a signal is noted it
  raises :class:`StopRequested` from the wait (in the loop's own frame, never in a handler):
  the wait's callers abandon the evaluations in flight (the map's results are closed, futures
  cancelled) on their way out, and ``Checkpointing`` writes the last complete state and raises
  :class:`~evocluster.checkpoint.Interrupted` (exit code 75).

A wait in steps loses no wake-up: each step asks whether what it waits for has happened before
it blocks (a condition's predicate under its lock, ``concurrent.futures.wait``, ``done()``), so
a result that came between two steps is seen by the next one at once.  A blocked step is
woken by the result it waits for, not only by its timeout; between steps the thread sleeps.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterable
from types import FrameType, TracebackType
from typing import Any

from .._checkpoint_options import take_early_signal
from ..checkpoint import Interrupted

__all__ = ["STEP", "StopRequested", "StopSignals", "Waits"]

#: Seconds a wait for evaluations blocks before it looks at the stop flag again: how late, at
#: most, a loop waiting for a long evaluation notices a stop signal (plus the step's own cost:
#: one condition wait, or one drive of SCOOP, per step).
STEP = 0.1


class StopRequested(BaseException):
    """Raised by a wait for evaluations (:meth:`Waits.until`) once a stop signal was noted.

    A ``BaseException``, so that no ``except Exception`` on the way out (the evaluator's, which
    turns failures into ``EvaluationError``) mistakes it for a failed evaluation.

    Attributes:
        signal: the signal that asked to stop.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signal = signum


def _leaving(signum: int, frame: FrameType | None) -> None:
    """The handler of a stop signal once a loop has stopped and the process leaves with 75: the
    checkpoint is written, so the signal has nothing more to ask.  (A Python handler, not
    ``SIG_IGN``, which programs the process starts would inherit.)"""


class StopSignals:
    """SIGUSR1 and SIGTERM, while an engine loop runs (``with StopSignals() as s:``), ask it to
    stop at the next safe point instead of ending the process.

    The handler only notes the first signal (:attr:`signal`; a second one, while the checkpoint
    is written say, changes nothing).  The loop looks at it between generations and in its waits
    for evaluations (:class:`Waits`), which then raise :class:`StopRequested`.  A signal noted
    before the first loop started (the launcher's early window,
    :func:`evocluster._checkpoint_options.take_early_signal`) is taken by this one on entry.

    Only the main thread can install signal handlers: elsewhere this does nothing (the loop
    still writes its periodic checkpoints).  A signal whose handler was not installed from
    Python (``signal.getsignal`` is ``None``) is left alone.  The previous handlers are
    restored on exit, with one exception: when the loop leaves with
    :class:`~evocluster.checkpoint.Interrupted` (its checkpoint written, the process on its way
    out with 75), a signal whose previous action was to end the process (the default, or
    evocluster's exit handler, marked ``ends_process``) is ignored from then on.  Another
    SIGUSR1 or SIGTERM on the way out (a second warning, an evaluation still running that
    signals) would otherwise end it with 138 or 143, not 75, and a batch script would not
    requeue the job.

    Attributes:
        signal: the first signal received, or ``None``.
        failed: whether an exception left a wait for evaluations after the signal (part of the
            stop: a lost worker, say, when the whole job was sent SIGTERM).
    """

    def __init__(self, signals: Iterable[int] = (signal.SIGUSR1, signal.SIGTERM)) -> None:
        self.signals = tuple(signals)
        self.signal: int | None = None
        self.failed = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            return self
        for signum in self.signals:
            if signal.getsignal(signum) is not None:
                self._previous[signum] = signal.signal(signum, self._handler)
        # one that came before any loop had started; taken once this loop's handler is in
        # place: a signal in between is noted by one or the other, never left to the default
        # action (death by the signal, 138 or 143 and no word)
        early = take_early_signal()
        if early is not None and self.signal is None:
            self.signal = early
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        leaving = isinstance(exc, Interrupted)
        for signum, previous in self._previous.items():
            ends = previous == signal.SIG_DFL or getattr(previous, "ends_process", False)
            # a late signal must not turn exit 75 into death by signal
            signal.signal(signum, _leaving if leaving and ends else previous)
        self._previous.clear()

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        # only a note: the loop looks at it (a handler that raised could do so anywhere in the
        # main thread, inside a lock's bookkeeping or a checkpoint's write)
        if self.signal is None:
            self.signal = signum

    def check(self) -> None:
        """Raise :class:`StopRequested` if a stop signal was noted."""
        if self.signal is not None:
            raise StopRequested(self.signal)

    def is_stop(self, exc: BaseException) -> bool:
        """Whether ``exc``, leaving the loop, is its stop: a wait's :class:`StopRequested`, or an
        error that left a wait after the signal (a lost worker, say, when the whole job was
        sent SIGTERM)."""
        return isinstance(exc, StopRequested) or (
            self.signal is not None and self.failed and isinstance(exc, Exception)
        )


class Waits:
    """How a loop waits for evaluations: in steps, looking at its stop signals between them.

    ``with waits:`` brackets a wait and the taking of what it returns: an exception that leaves
    it after a stop signal counts as part of the stop (:attr:`StopSignals.failed`).  Without
    signals (a loop that does not checkpoint, or one outside the main thread) the waits are
    stepped all the same, and never raise :class:`StopRequested`.
    """

    __slots__ = ("signals",)

    def __init__(self, signals: StopSignals | None = None) -> None:
        self.signals = signals

    def until(self, ready: Callable[[float], bool]) -> None:
        """Call ``ready(STEP)`` -- wait up to that many seconds for something, and say whether
        it has happened -- until it returns true; before each call, raise
        :class:`StopRequested` if a stop signal was noted.

        ``ready`` must look before it blocks (a result already in makes it return true at
        once, without waiting) and must not lose what it found: a later call looks again.
        """
        signals = self.signals
        while True:
            if signals is not None:
                signals.check()
            if ready(STEP):
                return

    def __enter__(self) -> Waits:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        s = self.signals
        if kind is not None and s is not None and s.signal is not None:
            s.failed = True  # an error in a wait after the signal (or the stop): the stop
