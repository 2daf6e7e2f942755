"""The exit guard: a failed SCOOP run exits non-zero, and a worker that cannot start says so.

* **Exit status.**  SCOOP's launcher exits 0 whatever happens (``scoop.launch.__main__`` ignores the
  origin's exit code).  When the job ends with an uncaught exception, ``sys.exit(n)`` with n != 0,
  or after the pool lost a worker, the origin prints one ``evocluster:`` message and sends SIGTERM
  to the launcher (its grandparent, found and checked through ``/proc`` or ``ps``): the run ends
  with exit status 143 (a shell's ``$?``; -15 for ``subprocess``), and the launcher's children end
  with it.  This guard is installed when the job
  imports evocluster, so import evocluster before anything that can fail.
* **A worker that cannot import the job** would die quietly, and the origin wait for it forever:
  until SCOOP runs its first task, such a worker posts a failure report as a SCOOP shared constant
  (:func:`_report_failed_import`), which the broker relays to the origin, whose pool then breaks
  with it (:func:`_failure_reports`).

Both are installed by :func:`install_guards`, which ``evocluster/__init__`` calls once in every
process of a SCOOP run.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import scoop
from scoop import _control, shared

from ...errors import BrokenPool
from . import proc

#: Before the exit guard kills the launcher: time for SCOOP's broker to relay the SHUTDOWN that
#: the origin sent as it finished, so that workers on other hosts stop too.
_GRACE = 0.2
#: Prefix of the SCOOP constants by which workers report that they cannot serve.
_FAILURE = "evocluster_failed_"


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
            proc.say(
                f"{what}. SCOOP's launcher exits 0 whatever happens, and evocluster could not "
                "find it to end the run with a non-zero code: check this message, not the code"
            )
            return
        proc.say(
            f"{what}. SCOOP's launcher would exit 0: evocluster ends the run with exit code 143 "
            f"(SIGTERM to the launcher, pid {launcher})"
        )
        time.sleep(_GRACE)
        with contextlib.suppress(OSError):
            os.kill(launcher, signal.SIGTERM)


# the origin's guard (its root future is set by install_guards; lost by the pool, when it breaks)
_GUARD = _ExitGuard()
_installed = False  # install_guards ran in this process
_previous_hook: Callable[..., Any] | None = None  # the excepthook _report_failed_import defers to


def pool_lost(reason: str) -> None:
    """The origin's pool broke (a worker or the broker was lost): the run has failed."""
    _GUARD.lost = reason


def _find_launcher() -> int | None:
    """SCOOP's launcher (``python -m scoop``): the origin's grandparent, checked by its command."""
    parent = os.getppid()
    grand = proc.parent_of(parent)
    if grand is None or grand <= 1:
        return None
    args = proc.cmdline(grand)
    if "scoop" not in args or "-m" not in args or any("scoop." in a for a in args):
        return None
    return grand


# ====================================================================== failure reports
def _report_failed_import(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
    """sys.excepthook of a SCOOP worker while it imports the job.

    SCOOP would let the worker die quietly and the origin wait for it forever.  Post the failure
    as a SCOOP shared constant instead: the broker relays it to the origin, and keeps it for an
    origin that connects later; the origin's pool breaks with this message.
    """
    if getattr(_control, "execQueue", None) is not None:  # SCOOP runs: its own hook handles it
        (_previous_hook or sys.__excepthook__)(exc_type, exc, tb)
        return
    label = proc.label("worker")
    text = "".join(traceback.format_exception(exc_type, exc, tb))
    proc.say(f"{label} could not import the job:\n{text}")
    last = text.rstrip().splitlines()[-1] if text.strip() else exc_type.__name__
    with contextlib.suppress(Exception):
        _post_failure(f"{label} could not import the job ({last}); its stderr has the traceback")


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
        name = f"{_FAILURE}{proc.HOST}_{os.getpid()}"
        owner = f"evocluster:{proc.HOST}:{os.getpid()}".encode()
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


# ====================================================================== installing them
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
