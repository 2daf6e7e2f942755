"""The processes of a SCOOP run: who they are, what they tell the user, what the kernel says.

* Every process of the run has a label, ``SCOOP worker on host H (pid P)`` (or ``SCOOP origin
  ...``): made here, and read back here (:func:`pid_of`), so that the origin can name a local
  worker that died by the label it answered with.
* All of the backend's reading of ``/proc`` is here: a process's state, parent and start time
  (``/proc/PID/stat``), its children (``/proc/PID/task/*/children``), its command line
  (``/proc/PID/cmdline``) and the signals it ignores or catches (``/proc/PID/status``).  Where
  ``/proc`` cannot tell (not Linux: :data:`HAS_PROC` false), the parent and the command line come
  from ``ps``; children and liveness are then unknown (none, and not alive), and so are the rest.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys

HOST = socket.gethostname()
#: Whether this system has a Linux ``/proc``: the watches that need liveness run only then.
HAS_PROC = os.path.exists("/proc/self/stat")


def say(message: str) -> None:
    """Tell the user, on stderr, after what the job printed so far."""
    sys.stdout.flush()
    print(f"evocluster: {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ labels
def label(role: str, pid: int | None = None) -> str:
    """How a process of the run is named (``role``: ``worker`` or ``origin``; default: this
    process)."""
    return f"SCOOP {role} on host {HOST} (pid {os.getpid() if pid is None else pid})"


def pid_of(name: str) -> int | None:
    """The pid a :func:`label` names, if it names one."""
    head, _, tail = name.rpartition("(pid ")
    return int(tail.rstrip(")")) if head and tail.rstrip(")").isdigit() else None


def on_this_host(name: str) -> bool:
    """Whether a :func:`label` names a process on this host."""
    return f"host {HOST} " in name


# ------------------------------------------------------------------ /proc (or ps)
def _stat(pid: int) -> list[str]:
    """The fields of ``/proc/PID/stat`` after the command name (which may hold spaces and
    parentheses): state, ppid, ...; none when it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()
    except OSError:
        return []


def _ps(pid: int, field: str) -> str:
    """``ps``'s column ``field`` for ``pid`` (empty if there is no such process).

    Raises:
        OSError: ``ps`` could not be run.
    """
    args = ["ps", "-o", f"{field}=", "-p", str(pid)]
    return subprocess.run(args, capture_output=True, text=True, check=False).stdout


def alive(pid: int) -> bool:
    """Whether ``pid`` runs: it exists and is not a zombie (Linux ``/proc``; elsewhere never)."""
    fields = _stat(pid)
    return bool(fields) and fields[0] not in ("Z", "X")


def start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot, ``/proc``): with the pid, names one process
    for good, although pids are reused."""
    fields = _stat(pid)
    with contextlib.suppress(IndexError, ValueError):
        return int(fields[19])
    return None


def takes_signal(pid: int, signum: int) -> bool:
    """Whether ``signum`` sent to ``pid`` does what it does by default: neither ignored nor caught
    by a handler (``SigIgn``/``SigCgt`` of ``/proc/PID/status``; unknown elsewhere: assumed)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            masks = dict(line.split(":", 1) for line in fh if line.startswith(("SigIgn", "SigCgt")))
        set_bits = int(masks["SigIgn"], 16) | int(masks["SigCgt"], 16)
    except (OSError, KeyError, ValueError):
        return True
    return not set_bits & (1 << (signum - 1))


def children(pid: int) -> set[int]:
    """Child processes of ``pid`` (Linux ``/proc``; elsewhere none are known)."""
    found: set[int] = set()
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                found.update(int(p) for p in fh.read().split())
    return found


def parent_of(pid: int) -> int | None:
    """The parent of ``pid`` (``/proc``, else ``ps``), or ``None`` if neither can tell."""
    fields = _stat(pid)
    with contextlib.suppress(IndexError, ValueError):
        return int(fields[1])
    try:
        return int(_ps(pid, "ppid").strip())
    except (OSError, ValueError):
        return None


def cmdline(pid: int) -> list[str]:
    """The command line of ``pid`` (``/proc``, else ``ps``: split at spaces), or none."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
    except OSError:
        pass
    try:
        return _ps(pid, "args").split()
    except OSError:
        return []
