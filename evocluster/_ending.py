"""How a master's run ends, whatever ends it: the pools of the process (the launcher's shared
ones, and those executors own) at interpreter exit, and on SIGINT, SIGTERM and SIGHUP.

* At interpreter exit (:func:`_at_interpreter_exit`, before threads are joined) no new work is
  taken; a pool shut down without waiting is killed; one never shut down finishes what is still
  wanted, and what the job abandoned is killed after :data:`EXIT_GRACE` seconds.
* A signal (:func:`install_exit_signals`) unwinds the job as Ctrl-C does; uncaught, one line,
  every pool's workers killed, exit code 128 + the signal's number (:func:`_die`).

:mod:`evocluster._executor` registers the pools here (:data:`shared`, :data:`owned`); nothing
else does.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from . import _config as config
from . import _monitor as monitor

if TYPE_CHECKING:
    from ._jobs import ExecutorState
    from ._pool import Pool
    from ._scheduling import PoolBase

__all__ = ["EXIT_GRACE", "finish", "install_exit_signals", "owned", "shared"]

#: pools started by the launcher, used by every Executor (by backend name)
shared: dict[str, Pool] = {}
#: pools of executors' own that have not ended, and their executor's state
owned: dict[PoolBase, ExecutorState] = {}
#: set when the interpreter begins to exit: submit and map then raise RuntimeError
interpreter_exiting = False


#: Seconds an ended job's abandoned evaluations (of a map or result it stopped waiting for) may
#: still run before their workers are killed: they may be writing something, but nobody can
#: collect what they return.
EXIT_GRACE = 3.0


def _at_interpreter_exit() -> None:
    """Before the interpreter joins its threads (as the stdlib's executors do): no new work; an
    executor shut down with ``wait=False`` whose pool still runs is stopped, its evaluations
    killed, so that it never holds the exit; one never shut down finishes its work first, except
    the evaluations the job abandoned (:func:`finish`)."""
    global interpreter_exiting
    interpreter_exiting = True
    for pool, owner in list(owned.items()):
        if owner.shutdown:
            pool.kill()
        elif not finish(pool, EXIT_GRACE):
            _note_abandoned()
            pool.kill()
            pool.close(wait=True, timeout=5.0)  # the scheduler ends on the killed workers' EOFs


# threading's own exit hook runs before atexit's and before non-daemon threads are joined
getattr(threading, "_register_atexit", atexit.register)(_at_interpreter_exit)


def _note_abandoned() -> None:
    print(
        f"evocluster: the job ended while evaluations it had stopped waiting for (a timeout) were "
        f"still running after {EXIT_GRACE:g} s: their workers were killed",
        file=sys.stderr,
        flush=True,
    )


def finish(pool: PoolBase, grace: float) -> bool:
    """Close ``pool`` once the work still wanted is done; return ``False`` instead when only work
    the job abandoned (a cancelled map or future) has been left running for ``grace`` seconds:
    the caller then kills it.  Work still wanted (a future not waited for) is waited for, as the
    stdlib's executors do; a signal ends that wait (:func:`install_exit_signals`)."""
    since: float | None = None
    # joins with a short timeout: between them, look whether what is left is wanted at all
    while not pool.close(wait=True, timeout=0.1):
        if not pool.abandoned_only():
            since = None
        elif since is None:
            since = time.monotonic()
        elif time.monotonic() - since > grace:
            return False
    return True


class _Interrupted(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP in the main thread: the job unwinds as from Ctrl-C, and the run
    ends with one line and exit code 128 + ``signum`` (the launcher, or :func:`_excepthook`)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


#: The signals that end a run whose master holds workers; each is taken over only if it has its
#: default handler (a job's own handler, or SIGHUP ignored under nohup, is left alone).
_EXIT_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_signals_installed = False


def install_exit_signals() -> None:
    """The master of workers (the launcher's, or a job that started a pool): SIGINT, SIGTERM and
    SIGHUP raise :class:`_Interrupted` in the main thread; uncaught, it prints one line, kills
    every pool's workers and exits 128 + the signal's number.  Once the interpreter exits (no
    code left to unwind) a signal does that at once.  Main thread only (where signals are
    handled); an engine loop that checkpoints replaces the SIGTERM handler while it runs."""
    global _signals_installed
    if _signals_installed or threading.current_thread() is not threading.main_thread():
        return
    _signals_installed = True
    for signum in _EXIT_SIGNALS:
        default = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
        if signal.getsignal(signum) is default:
            signal.signal(signum, _on_exit_signal)
    previous = sys.excepthook

    def _excepthook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        if isinstance(value, KeyboardInterrupt):
            _die(getattr(value, "signum", signal.SIGINT))
        previous(kind, value, tb)

    sys.excepthook = _excepthook


def _on_exit_signal(signum: int, frame: Any) -> None:
    if interpreter_exiting:  # in the exit hooks: nothing of the job's left to unwind
        _die(signum)
    raise _Interrupted(signum)


# the handler of a process that ends on the signal: a stopped engine loop, on its way out with
# exit code 75, ignores what would end it so (engine.stopping.StopSignals)
_on_exit_signal.ends_process = True  # type: ignore[attr-defined]


def _die(signum: int) -> None:
    """One line, every pool's workers killed (MPI: ``MPI_Abort`` with the code), exit now with
    128 + ``signum``."""
    code = 128 + signum
    monitor.abandon()
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    if (config.mpi_rank_from_env() or 0) == 0:
        name = signal.Signals(signum).name
        print(f"evocluster: interrupted ({name})", file=sys.stderr, flush=True)
    for pool in [*shared.values(), *owned]:
        transport = getattr(pool, "transport", None)
        if transport is not None:
            with contextlib.suppress(Exception):
                transport.abort(code)  # MPI: does not return; local: SIGKILL
    os._exit(code)
