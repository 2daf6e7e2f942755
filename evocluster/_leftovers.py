"""The processes a fitness leaves running: ended, and named in one line, when their worker stops.

A fitness may start a process and return without waiting for it (``subprocess.Popen``, a shell's
``cmd &``, a daemon that forks twice and calls ``setsid``).  Left alone, it outlived the run and
held it: a local worker's socket (the pool waited 10 s at exit), or the output pipes ``mpiexec``
waits for (the MPI run waited as long as it ran); with isolation it survived the run.

So every process that evaluates -- a worker, an isolated child -- becomes a *child subreaper*
(Linux: ``prctl(PR_SET_CHILD_SUBREAPER)``, :func:`adopt_orphans`): a descendant whose parent dies
(the grandchild of a double fork) is reparented to it rather than to init, and stays among its
descendants.  When it stops serving, :func:`end_leftovers` ends every descendant still running
(SIGTERM, then SIGKILL after :data:`GRACE` seconds) and names them on stderr, in one line.

An adopted process that exits during the run stays a zombie until its new parent reaps it, which
a fitness's code never does: :func:`reap_zombies`, called between chunks, reaps the zombie
children that were zombies already at its previous look (at least :data:`REAP_EVERY` s before),
so that a fitness that starts ``cmd &`` per evaluation does not fill the process table.  (A
process the fitness started itself, finished and still unwaited-for after that long, is reaped
too: a ``Popen`` kept across chunks then reads exit code 0.)

Processes are found in ``/proc`` (Linux); elsewhere none of this happens.

A worker ignores the signals its master handles (Ctrl-C reaches the whole process group; under
MPI, SIGTERM every rank), but ``SIG_IGN`` is inherited by every process it starts, through
``exec`` too: a fitness's ``Pool.terminate()`` (SIGTERM) then ended nothing, and the pool hung.
:func:`ignore_here` ignores them in this process only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time

__all__ = [
    "GRACE",
    "REAP_EVERY",
    "adopt_orphans",
    "die_with",
    "end_leftovers",
    "ignore_here",
    "kill_tree",
    "reap_zombies",
]

#: Seconds a leftover process has between SIGTERM and SIGKILL.
GRACE = 1.0
#: Seconds between two looks for zombie children (:func:`reap_zombies`).
REAP_EVERY = 10.0
#: prctl(2) option: orphaned descendants are reparented to this process.
_PR_SET_CHILD_SUBREAPER = 36
#: prctl(2) option: the signal this process gets when its parent (thread) ends.
_PR_SET_PDEATHSIG = 1
#: Processes named in the line (the rest are counted).
_NAMED = 5

_adopting = False  # this process is a subreaper (adopt_orphans succeeded)
_next_look = 0.0  # time.monotonic() of reap_zombies' next look
_zombies: set[int] = set()  # the zombie children seen at its last look


def adopt_orphans() -> bool:
    """Make this process a child subreaper (Linux); return whether it is one."""
    global _adopting, _next_look
    if not sys.platform.startswith("linux"):
        return False
    with contextlib.suppress(Exception):  # no libc to call: leftovers of a double fork escape
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        _adopting = libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
        _next_look = time.monotonic() + REAP_EVERY
    return _adopting


def die_with(parent: int) -> None:
    """Get SIGKILL when process ``parent`` (this one's parent) ends, however it ends, SIGKILL
    included (Linux, ``PR_SET_PDEATHSIG``); exit at once if it already has (its death came before
    the request).  ``parent`` 0: not tied to it (nothing done).

    The signal comes when the parent's *thread* that started this process ends: only a process
    started from its parent's main thread lives exactly as long as its parent.  Used by a local
    worker (tied to the master) and an isolated child (tied to its worker)."""
    if not parent:
        return
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):  # no libc to call: the closed socket still tells
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(0)


def ignore_here(*signums: int) -> None:
    """Ignore ``signums`` in this process, but not in the processes it starts: a handler that does
    nothing, which ``exec`` resets to the default action (``SIG_IGN`` would stay), and which in
    a forked copy (``os.fork``, a ``fork`` pool's process) takes the default action."""
    me = os.getpid()

    def ignored(signum: int, frame: object) -> None:
        if os.getpid() != me:  # a forked copy: as if it had never been caught
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    for signum in signums:
        with contextlib.suppress(ValueError):  # not the main thread: left as it is
            signal.signal(signum, ignored)


def _stop_multiprocessing_helpers() -> None:
    """Stop the resource tracker and the forkserver that a ``spawn`` or ``forkserver`` pool starts
    once per process, as ``multiprocessing`` does at exit (which a worker, leaving through
    ``os._exit``, never reaches): they are its own, not leftovers to name (the tracker ignores
    SIGTERM)."""
    helpers = (
        ("multiprocessing.forkserver", "_forkserver"),
        ("multiprocessing.resource_tracker", "_resource_tracker"),
    )
    for module, name in helpers:
        stop = getattr(getattr(sys.modules.get(module), name, None), "_stop", None)
        if stop is not None:
            with contextlib.suppress(Exception):  # a private method: may be gone one day
                stop()


def _stat(pid: int | str) -> tuple[int, str] | None:
    """``(parent pid, state)`` of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rpartition(b")")[2].split()
    except (OSError, ValueError):
        return None
    return int(fields[1]), fields[0].decode()


def _children_of(pid: int | str) -> list[int]:
    """The children of process ``pid``: each of its threads' ``/proc`` list of them (an adopted
    process is a child of whichever thread the kernel chose).  Empty if it is gone."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/children", "rb") as fh:
            found += [int(p) for p in fh.read().split()]
    return found


#: Whether the kernel lists each thread's children (CONFIG_PROC_CHILDREN): then only this
#: process's own tree is read, not every process of the host.
_LISTS_CHILDREN = os.path.exists(f"/proc/self/task/{os.getpid()}/children")


def descendants(root: int) -> dict[int, str]:
    """Every descendant of process ``root`` (pid -> state, ``"Z"`` for a zombie), from ``/proc``."""
    if not _LISTS_CHILDREN:
        return _scan(root)
    found: dict[int, str] = {}
    todo = [root]
    while todo:
        for pid in _children_of(todo.pop()):
            stat = _stat(pid)
            if stat is not None and pid not in found:
                found[pid] = stat[1]
                todo.append(pid)
    return found


def _scan(root: int) -> dict[int, str]:
    """:func:`descendants`, from the parent of every process of the host."""
    children: dict[int, list[int]] = {}
    states: dict[int, str] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return {}
    for entry in entries:
        if entry.isdigit() and (stat := _stat(entry)) is not None:
            pid = int(entry)
            children.setdefault(stat[0], []).append(pid)
            states[pid] = stat[1]
    found: dict[int, str] = {}
    todo = [root]
    while todo:
        for pid in children.get(todo.pop(), ()):
            if pid not in found:
                found[pid] = states[pid]
                todo.append(pid)
    return found


def _command(pid: int) -> str:
    """A process's command line, shortened for one line of text."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            raw = fh.read()
    except OSError:
        return "?"
    text = raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace") or "?"
    return text if len(text) <= 60 else text[:57] + "..."


def _signal(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):  # gone meanwhile
            os.kill(pid, signum)


def _reap_children() -> None:
    """Reap every child of this process that has exited (it stops serving: none is wanted)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _live(root: int) -> list[int]:
    return [pid for pid, state in descendants(root).items() if state != "Z"]


def end_leftovers(label: str, grace: float = GRACE) -> list[int]:
    """This process stops serving: end every descendant still running (SIGTERM, SIGKILL after
    ``grace`` s), reap them, and name them on stderr in one line.  Returns their pids.

    Call it once the processes evocluster started itself (an isolated child) are stopped: every
    descendant left is the fitness's."""
    if not sys.platform.startswith("linux"):
        return []
    me = os.getpid()
    _stop_multiprocessing_helpers()
    _reap_children()
    live = _live(me)
    if not live:
        return []
    commands = {pid: _command(pid) for pid in live}
    _signal(live, signal.SIGTERM)
    deadline = time.monotonic() + grace
    delay = 0.005
    while True:  # sleeps with backoff: a leftover that handles SIGTERM may take a moment
        _reap_children()
        left = _live(me)
        for pid in left:  # started meanwhile (by one on its way out)
            commands.setdefault(pid, _command(pid))
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(delay)
        delay = min(2 * delay, 0.1)
    if left:
        _signal(left, signal.SIGKILL)
        deadline = time.monotonic() + grace
        while _live(me) and time.monotonic() < deadline:  # SIGKILL takes effect at once, but
            _reap_children()  # an exit is not instant on a loaded machine
            time.sleep(0.01)
    _reap_children()  # those that ended since the last look
    _say(label, commands)
    return sorted(commands)


def _say(label: str, commands: dict[int, str]) -> None:
    named = [f"pid {pid} ({commands[pid]})" for pid in sorted(commands)[:_NAMED]]
    more = len(commands) - len(named)
    listing = ", ".join(named) + (f" and {more} more" if more > 0 else "")
    with contextlib.suppress(Exception):  # stderr closed: nothing to tell
        print(
            f"evocluster: {label} ended {len(commands)} process(es) a fitness had left running: "
            f"{listing}; a fitness should wait for the processes it starts",
            file=sys.stderr,
            flush=True,
        )


def kill_tree(root: int) -> None:
    """SIGKILL process ``root`` and every descendant it has (an isolated child that overran its
    time limit, a worker killed at once): what it started must not outlive it."""
    if sys.platform.startswith("linux"):  # the tree first: killed, root's orphans would move
        _signal([pid for pid, state in descendants(root).items() if state != "Z"], signal.SIGKILL)
    _signal([root], signal.SIGKILL)


def reap_zombies() -> None:
    """Between chunks, in a subreaper (:func:`adopt_orphans`): reap the zombie children that were
    zombies at the previous look already (:data:`REAP_EVERY` s or more ago).  Costs a clock
    read until then."""
    global _next_look, _zombies
    if not _adopting or time.monotonic() < _next_look:
        return
    _next_look = time.monotonic() + REAP_EVERY
    me = os.getpid()
    mine = _children_of(me) if _LISTS_CHILDREN else list(_scan(me))
    zombies = {pid for pid in mine if (stat := _stat(pid)) is not None and stat == (me, "Z")}
    for pid in zombies & _zombies:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    _zombies = zombies - _zombies
