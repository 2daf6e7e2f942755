"""The exit guard: a failed SCOOP run exits non-zero, and a worker that cannot start says so.

* **Exit status.**  SCOOP's launcher exits 0 whatever happens (``scoop.launch.__main__`` ignores the
  origin's exit code).  When the job ends with an uncaught exception, ``sys.exit(n)`` with n != 0,
  or after the pool lost a worker, the origin prints one ``evocluster:`` message and sends SIGTERM
  to the launcher (its grandparent, found and checked through ``/proc`` or ``ps``): the run ends
  with exit status 143 (a shell's ``$?``; -15 for ``subprocess``), and the launcher's children end
  with it.  This guard is installed when the job
  imports evocluster, so import evocluster before anything that can fail.
* **Exit 75** (EX_TEMPFAIL: an engine loop or ``evocluster.Checkpoint`` saved its state on SIGUSR1
  or SIGTERM, run the job again to resume) cannot come out of SCOOP 0.7.2.0: the launcher exits
  with the code of its launch process (``ScoopApp.run`` and ``main`` in ``scoop/launcher.py``),
  whose code ignores the origin's: 0 once the origin has ended, 1 on an error of its own, or,
  killed by a signal, 256 - signal (192 to 255; measured 241, 244, 247 for SIGTERM, SIGUSR2,
  SIGKILL); killed itself, the launcher gives 128 + signal.  No evocluster process can make any of
  them 75 short of patching SCOOP (or injecting code into it).  So a job that exits 75 ends the
  run with SIGUSR2 to the launcher instead: exit status **140** (-12 for ``subprocess``), which
  ``slurm/scoop.sbatch`` takes for 75.  Should the launcher ignore or catch SIGUSR2 (an inherited
  ``trap '' USR2``), it gets SIGTERM: 143, and the message says so.
* **Lost launcher or origin** (:mod:`~evocluster._backends.scoop.watch`).  SCOOP's launcher killed:
  the origin says so in one line and ends (if the job handles SIGTERM, as an engine loop that
  checkpoints does, it is asked to stop that way first, for up to :data:`_ORPHAN_GRACE` s); its
  launch process then terminates the workers, which also end by themselves
  :data:`_WORKER_GRACE` s after they see the launcher gone.  The origin killed (SIGKILL, the OOM
  killer) or ended by ``os._exit``: its sentinel ends the run with exit code 143 and one line.
  Both only on the launching host, with a Linux ``/proc``.  A worker on another host ends once
  SCOOP's broker is gone (the run is over, whichever way it ended), silently: it may have joined
  too late for the broker's SHUTDOWN, or the broker died with a killed launcher.
* **A worker that cannot import the job** would die quietly, and the origin wait for it forever:
  until SCOOP runs its first task, such a worker posts a failure report as a SCOOP shared constant
  (:func:`_report_failed_import`), which the broker relays to the origin, whose pool then breaks
  with it (:func:`_failure_reports`).

All are started by :func:`start_guards`, which ``evocluster/__init__`` calls in every process of
a SCOOP run, and only there (``scoop.IS_RUNNING``: :func:`evocluster._backends.scoop_running`).
SCOOP has no start-up hook: its bootstrap runs the job on the origin and imports it on the
workers, so the job's ``import evocluster`` is the first evocluster code to run there.  In any
other process ``import evocluster`` starts nothing: no atexit function, excepthook or thread.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import scoop
from scoop import _control, shared

from ...errors import BrokenPool
from . import proc
from .watch import _BrokerWatch, _LauncherWatch, _Sentinel, start_watches

#: Before the exit guard kills the launcher: time for SCOOP's broker to relay the SHUTDOWN that
#: the origin sent as it finished, so that workers on other hosts stop too.
_GRACE = 0.2
#: The code of a job that checkpointed and asks to be run again (EX_TEMPFAIL, sysexits.h).
EX_TEMPFAIL = 75
#: The launcher gone: how long a job that handles SIGTERM (an engine loop that checkpoints) has
#: to stop that way before the origin ends anyway: a bound, not a measurement, for writing one
#: checkpoint (evaluations in flight are abandoned: their broker died with the launcher).
_ORPHAN_GRACE = 10.0
#: A worker that sees the launcher gone waits this long for the origin to end first (SCOOP's
#: launch process then terminates the workers), then ends by itself, silently.
_WORKER_GRACE = 5.0
#: Prefix of the SCOOP constants by which workers report that they cannot serve.
_FAILURE = "evocluster_failed_"


# ====================================================================== exit status
class _ExitGuard:
    """On the origin: make a failed run exit non-zero although SCOOP's launcher would exit 0."""

    def __init__(self) -> None:
        self.root: Any = None
        self.lost: str | None = None
        self.pid = os.getpid()  # the origin's: a forked copy of it is no origin
        self.orphaned = False  # the launcher was lost: the origin said so and ends
        self.watch: _LauncherWatch | None = None
        self.sentinel: _Sentinel | None = None

    def check(self) -> None:
        """atexit: if the job failed or the pool lost a worker, say so and end the launcher."""
        if os.getpid() != self.pid:
            return
        if self.watch is not None:
            self.watch.disarm()  # the launcher this ends is not lost
        try:
            if not self.orphaned:
                self._check()
        finally:
            if self.sentinel is not None:
                self.sentinel.done()

    def _check(self) -> None:
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
        signum = signal.SIGTERM
        if isinstance(exc, SystemExit) and exc.code == EX_TEMPFAIL:
            what += " (EX_TEMPFAIL: it checkpointed; run it again to resume)"
            if proc.takes_signal(launcher, signal.SIGUSR2):
                signum = signal.SIGUSR2
                what += (
                    ". SCOOP's launcher would exit 0 and cannot exit 75: evocluster ends the run "
                    f"with exit code 140, which stands for 75 (SIGUSR2 to the launcher, pid "
                    f"{launcher}; slurm/scoop.sbatch requeues on it)"
                )
            else:
                what += (
                    ". SCOOP's launcher would exit 0 and cannot exit 75, and it ignores or catches "
                    "SIGUSR2 (exit code 140, which stands for 75): evocluster ends the run with "
                    f"exit code 143 (SIGTERM to the launcher, pid {launcher})"
                )
        else:
            what += (
                ". SCOOP's launcher would exit 0: evocluster ends the run with exit code 143 "
                f"(SIGTERM to the launcher, pid {launcher})"
            )
        proc.say(what)
        time.sleep(_GRACE)
        with contextlib.suppress(OSError):
            os.kill(launcher, signum)

    def launcher_lost(self, why: str) -> None:
        """The watch thread: SCOOP's launcher or launch process is gone.  Say so once and end the
        origin (its launch process, if alive, then terminates the workers)."""
        self.orphaned = True
        if self.sentinel is not None:
            self.sentinel.done(b"launcher lost")  # this end is not the origin's loss
        handler = signal.getsignal(signal.SIGTERM)
        ask = callable(handler)  # the job's own handler (an engine loop that checkpoints)
        then = (
            "the job is asked to stop (SIGTERM, as at a wall-time limit); the SCOOP origin ends "
            f"within {_ORPHAN_GRACE:g} s"
            if ask
            else "the SCOOP origin ends now"
        )
        proc.say(
            f"{why}: the run has nothing left to report its end or relay its evaluations, so "
            f"{then}; the workers on this host end with it"
        )
        if ask:
            with contextlib.suppress(OSError):
                os.kill(os.getpid(), signal.SIGTERM)
            # until the job's code is over (its root future is done); what SCOOP does next,
            # sending SHUTDOWN to the broker that died with the launcher, would block for good
            deadline = time.monotonic() + _ORPHAN_GRACE
            while not getattr(self.root, "isDone", False) and time.monotonic() < deadline:
                time.sleep(0.05)
        _end_now(1)


# the origin's guard (its root future is set by start_guards; lost by the pool, when it breaks)
_GUARD = _ExitGuard()
_installed = False  # start_guards ran in this process
_previous_hook: Callable[..., Any] | None = None  # the excepthook _report_failed_import defers to


def _end_now(code: int) -> None:
    """Flush what the job printed and end this process at once (from a watch thread)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _worker_launcher_lost(why: str) -> None:
    """A worker's watch thread: the launcher is gone.  The origin says so and ends, and SCOOP's
    launch process then terminates this worker; should neither happen, end silently."""
    time.sleep(_WORKER_GRACE)
    _end_now(1)


def _worker_broker_lost(why: str) -> None:
    """A worker's broker watch (on another host): the broker is gone, and with it the run; nothing
    is left to report to, and the origin (or its sentinel) reports the run's end: end silently."""
    _end_now(1)


def _start_watches(origin: bool) -> None:
    """The launcher watch of this process, and the origin's sentinel (on the launching host, with
    a Linux ``/proc``); on a worker that has none, the broker watch (never fatal)."""
    launcher = _find_launcher() if proc.HAS_PROC else None
    if launcher is None:
        if not origin:
            _start_broker_watch()
        return
    on_lost = _GUARD.launcher_lost if origin else _worker_launcher_lost
    try:
        watch, sentinel = start_watches(launcher, on_lost, sentinel=origin)
    except (OSError, RuntimeError) as e:  # no thread or no process to spare: run unwatched
        proc.say(f"cannot watch SCOOP's launcher ({type(e).__name__}: {e}); the run goes on")
        return
    if origin:
        _GUARD.watch, _GUARD.sentinel = watch, sentinel


def _start_broker_watch() -> None:
    """A worker on another host than SCOOP's launcher (no launcher watch covers it) ends once the
    broker is gone: it may have joined too late for the broker's SHUTDOWN (watch.py says why)."""
    broker: Any = getattr(scoop, "BROKER", None)  # (hostname, task_port, info_port, ...)
    # no broker known, no address, no thread to spare: unwatched, as under SCOOP alone
    with contextlib.suppress(AttributeError, TypeError, ValueError, OSError, RuntimeError):
        _BrokerWatch(broker.hostname, int(broker.info_port), _worker_broker_lost).start()


def pool_lost(reason: str) -> None:
    """The origin's pool broke (a worker or the broker was lost): the run has failed."""
    _GUARD.lost = reason


def _find_launcher() -> int | None:
    """SCOOP's launcher (``python -m scoop``): the origin's grandparent, checked by its command."""
    parent = os.getppid()
    grand = proc.parent_of(parent)
    if grand is None or grand <= 1:
        return None
    return grand if is_launcher_command(proc.cmdline(grand)) else None


#: The host names SCOOP itself treats as this host (any other makes it start workers by ssh).
LOCAL_NAMES = ("127.0.0.1", "localhost", "::1")


def workers_on_this_host() -> bool:
    """Whether SCOOP started every worker on the origin's host: its launcher's command line
    names no other host (``--hosts``/``--host``, ``--hostfile``) and no SLURM allocation of
    several nodes gave it some.  False when that cannot be known."""
    if int(os.environ.get("SLURM_JOB_NUM_NODES", os.environ.get("SLURM_NNODES", "1")) or 1) > 1:
        return False
    launcher = _find_launcher()
    if launcher is None:
        return False
    args = proc.cmdline(launcher)
    hosts: list[str] = []
    for i, arg in enumerate(args):
        if arg in ("--hosts", "--host"):
            for value in args[i + 1 :]:
                if value.startswith("-") or value.endswith(".py"):
                    break
                hosts.append(value)
        elif arg.startswith(("--hosts=", "--host=")):
            hosts.append(arg.partition("=")[2])
        elif arg == "--hostfile" or arg.startswith("--hostfile="):
            path = arg.partition("=")[2] or (args[i + 1] if i + 1 < len(args) else "")
            try:
                cwd = os.readlink(f"/proc/{launcher}/cwd")
                with open(os.path.join(cwd, path)) as fh:
                    hosts += [line.split()[0] for line in fh if line.split()]
            except OSError:
                return False
    short = socket.gethostname().partition(".")[0]
    return all(h in LOCAL_NAMES or h.partition(".")[0] == short for h in hosts)


# Python's options that take the next argument as their value (``python -W ignore -m scoop``)
_OPTIONS_WITH_VALUE = ("-W", "-X", "--check-hash-based-pycs")


def is_launcher_command(args: list[str]) -> bool:
    """Whether ``args`` (a process's command line) runs SCOOP's launcher, ``python [options] -m
    scoop ...``: the module the interpreter runs is ``scoop`` itself, not ``scoop.launch`` or
    ``scoop.bootstrap`` (SCOOP's own children), whatever the job's file or arguments are called."""
    rest = iter(args[1:])
    for arg in rest:
        if arg in _OPTIONS_WITH_VALUE:
            next(rest, None)
        elif arg == "-m":
            return next(rest, None) in ("scoop", "scoop.__main__")
        elif arg.startswith("-m"):  # -mscoop
            return arg[2:] in ("scoop", "scoop.__main__")
        elif not arg.startswith("-") or arg == "-" or arg.startswith("-c"):
            return False  # a script, stdin or -c: the interpreter runs no module
    return False


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
def start_guards() -> None:
    """Start the guards of this process of a SCOOP run; ``evocluster/__init__`` calls it when a
    process of the run imports evocluster (idempotent).  Never call it outside a SCOOP run.

    On the origin: the exit guard (:class:`_ExitGuard`), with the root future whose outcome is
    the job's, the launcher watch and the sentinel.  On a worker: the launcher watch and, while it
    still imports the job, an excepthook that reports a failed import.
    """
    global _installed, _previous_hook
    if _installed:
        return
    _installed = True
    if getattr(scoop, "IS_ORIGIN", False):
        _GUARD.root = _control.current
        atexit.register(_GUARD.check)
        _start_watches(origin=True)
        return
    if getattr(_control, "execQueue", None) is None:
        _previous_hook = sys.excepthook
        sys.excepthook = _report_failed_import
    _start_watches(origin=False)
