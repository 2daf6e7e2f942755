"""The launcher's checkpoint options, read by every engine loop whose own keyword is not given
(:class:`Defaults`, :func:`set_defaults`, :func:`defaults`), and the early-signal window: a stop
signal that arrives once the launcher has set a checkpoint path but before the first engine loop
has installed its handlers is noted here, and that loop takes it (:func:`take_early_signal`).

Below :mod:`evocluster.checkpoint` (which re-exports the public names, and whose
``set_defaults`` also holds the path) and below :mod:`evocluster.engine`: it imports neither.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import threading
from types import FrameType
from typing import Any, NamedTuple

from .errors import ConfigurationError

__all__ = [
    "CHECKPOINT_ENV",
    "DEFAULT_EVERY",
    "Defaults",
    "check_every",
    "defaults",
    "set_defaults",
    "take_early_signal",
]

#: Seconds between an engine loop's checkpoints when neither its keywords nor the launcher say
#: (besides the one written when it starts, at a stop, and when it ends).
DEFAULT_EVERY = 60.0


class Defaults(NamedTuple):
    """The launcher's checkpoint options, read by every engine loop whose own keyword is not
    given (``checkpoint=``, ``checkpoint_every=``, ``checkpoint_every_generations=``,
    ``resume=``).

    Attributes:
        path: ``--checkpoint PATH``; ``None``: loops checkpoint only when asked by keyword.
        every: ``--checkpoint-every SECONDS``.
        every_generations: ``--checkpoint-every-generations N``.
        resume: ``--resume``: continue the run checkpointed at ``path``.
    """

    path: str | None = None
    every: float | None = None
    every_generations: int | None = None
    resume: bool = False


_defaults = Defaults()


def check_every(every: float | None, every_generations: int | None) -> None:
    """Validate a checkpoint period.

    Raises:
        ConfigurationError: (a ``ValueError``) a negative period, or fewer than 1 generation.
    """
    if every is not None and not every >= 0:
        raise ConfigurationError(f"checkpoint_every must be >= 0 seconds, not {every!r}")
    if every_generations is not None and every_generations < 1:
        raise ConfigurationError(
            f"checkpoint_every_generations must be >= 1, not {every_generations!r}"
        )


def set_defaults(
    path: os.PathLike[str] | str | None = None,
    *,
    every: float | None = None,
    every_generations: int | None = None,
    resume: bool = False,
) -> None:
    """Set the process-wide checkpoint options of engine loops (see :class:`Defaults`), and
    open the early-signal window while a path is set.  ``set_defaults()`` clears them.
    :func:`evocluster.checkpoint.set_defaults`, which the launcher calls, also holds the path.

    Raises:
        ConfigurationError: a bad period, or ``resume`` without ``path``.
    """
    global _defaults
    check_every(every, every_generations)
    if path is None and (resume or every is not None or every_generations is not None):
        raise ConfigurationError("--resume and --checkpoint-every* need --checkpoint PATH")
    _defaults = Defaults(
        None if path is None else os.fspath(path), every, every_generations, bool(resume)
    )
    _early_signals(path is not None)


# A stop signal (SIGUSR1, SIGTERM) that arrives after the launcher has set the options of a
# checkpointing run but before its first engine loop has installed its own handler
# (StopSignals) would end the process with 138 or 143 and no word.  From set_defaults until
# the first loop starts, it is noted instead, and that loop takes it: it writes its checkpoint
# and stops with exit code 75.  A job that ends without any loop having started says so in one
# line at exit.  Once a loop has started, the signal goes where it would have gone without this.
_EARLY = (signal.SIGUSR1, signal.SIGTERM)
_early_before: dict[int, Any] = {}  # signal -> its handler before _on_early_signal took it
_early_open = False  # between set_defaults and the first loop
_early_pending: int | None = None  # the first stop signal of that window, not yet taken
_early_atexit = False


def _early_signals(install: bool) -> None:
    """Note stop signals until the first loop starts (``install``), or stop noting them."""
    global _early_open, _early_pending, _early_atexit
    if threading.current_thread() is not threading.main_thread():
        return
    for signum, before in list(_early_before.items()):  # give back what was taken
        if signal.getsignal(signum) is _on_early_signal:
            signal.signal(signum, before)
        del _early_before[signum]
    _early_open, _early_pending = install, None
    if not install:
        return
    for signum in _EARLY:
        before = signal.getsignal(signum)
        if before in (signal.SIG_DFL, signal.SIG_IGN):  # a job's own handler is left alone
            _early_before[signum] = before
            signal.signal(signum, _on_early_signal)
    if not _early_atexit:
        _early_atexit = True
        atexit.register(_say_unheeded)


def _on_early_signal(signum: int, frame: FrameType | None) -> None:
    global _early_pending
    if _early_open:
        if _early_pending is None:
            _early_pending = signum
        return
    before = _early_before.get(signum, signal.SIG_DFL)
    if before == signal.SIG_IGN:
        return
    # Without this handler the signal would have ended the process; for SIGTERM, the launcher's
    # own exit handler would have taken it over (it takes over SIGINT, SIGTERM and SIGHUP where
    # they have their default action, and is marked ``ends_process``): the run ends as it does.
    launcher = signal.getsignal(signal.SIGINT)
    if signum == signal.SIGTERM and callable(launcher) and getattr(launcher, "ends_process", False):
        launcher(signum, frame)
        return
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)


# a stopped loop on its way out with 75 ignores this signal then (engine.stopping.StopSignals)
_on_early_signal.ends_process = True  # type: ignore[attr-defined]


def take_early_signal() -> int | None:
    """The first loop starts (in the main thread): the stop signal noted before, if any."""
    global _early_open, _early_pending
    signum, _early_open, _early_pending = _early_pending, False, None
    return signum


def _say_unheeded() -> None:
    if _early_pending is not None:
        name = signal.Signals(_early_pending).name
        with contextlib.suppress(Exception):
            print(
                f"evocluster: {name} arrived while no engine loop was running, and none started "
                "after it: nothing was checkpointed for it (the job ran to its end)",
                file=sys.stderr,
                flush=True,
            )


#: The checkpoint path of a run that was not started by evocluster's launcher (under SCOOP, say):
#: what ``python -m evocluster submit --checkpoint PATH`` exports to the job.
CHECKPOINT_ENV = "EVOCLUSTER_CHECKPOINT"


def defaults() -> Defaults:
    """The options :func:`set_defaults` set (the launcher's ``--checkpoint``...); without them,
    a path in ``EVOCLUSTER_CHECKPOINT``; else none."""
    if _defaults.path is None and os.environ.get(CHECKPOINT_ENV):
        return Defaults(path=os.environ[CHECKPOINT_ENV])
    return _defaults
