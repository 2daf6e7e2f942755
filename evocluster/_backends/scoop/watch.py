"""The watches: dead workers, which SCOOP does not notice, and the processes SCOOP itself lost.

* **Worker loss.**  A worker that dies (a signal, the OOM killer, ``os._exit``) never answers, and
  SCOOP does not notice.  The origin watches a ZMQ monitor on its sockets (a worker's connection to
  the origin closes when its process dies, on any host) and, on its own host, the worker processes
  themselves; the pool is then broken and every pending evaluation raises
  :class:`~evocluster.errors.BrokenPool`.  SCOOP's own "a worker exited unexpectedly" shutdown ends
  the same way, and so does a worker whose import of the job fails after it imported evocluster
  (it posts a failure report that the broker relays to the origin:
  :mod:`~evocluster._backends.scoop.guard`).
* **Launcher loss** (:class:`_LauncherWatch`).  On the launching host every process of the run is
  a child of SCOOP's launch process (``python -m scoop.launch``), itself a child of the launcher
  (``python -m scoop``), whose thread is the broker.  Killed (SIGKILL, the OOM killer), the
  launcher takes the broker with it, and the launch process, the origin and the workers would stay
  alive and idle for good.  A thread in each of them looks at both processes every
  :data:`LAUNCHER_EVERY` s (``/proc``); once either is gone the guard ends the process.
* **Origin loss** (:class:`_Sentinel`).  Killed (SIGKILL, the OOM killer) or ended by ``os._exit``,
  the origin runs no exit guard, and SCOOP's launch process and launcher see it end and exit 0, in
  milliseconds.  A small process the origin starts (not one of SCOOP's: the launch process would
  terminate it with the workers) holds the read end of a pipe whose write end only the origin has;
  the origin writes to it on its way out (its exit guard).  End of file with nothing written means
  the origin ended abruptly: the sentinel sends the launcher SIGTERM at once, and then says why.
  It races SCOOP, which has the launcher exit 0 once the origin is gone; measured (a 2-core VM at
  load average 14, 2026-12-02, ``-n 3``, 8 runs each): SCOOP alone exits 78-185 ms after the
  origin's SIGKILL, the sentinel's SIGTERM lands 16-80 ms after it; 23 of 23 runs ended 143.
* **Broker loss, on the other hosts** (:class:`_BrokerWatch`).  A worker on another host than the
  launcher is no child of it: no launcher watch covers it, and nothing of SCOOP ends it but the
  SHUTDOWN its broker publishes (SCOOP terminates its ssh clients at the end; a real ``ssh -tt``
  may pass that on as a hang-up, an ssh stand-in or a killed launcher does not).  A worker that
  has not yet joined when the run ends (it connects to the broker only once it has imported the
  job) never sees that SHUTDOWN: it blocks for good in SCOOP's handshake with a broker that is gone
  (``scoop/_comm/scoopzmq.py``: ``send`` of INIT, or ``recv`` of the answer, without timeout), and
  its launch process waits for it.  Measured (a 2-core VM, 2026-12-02, 3 hosts emulated with
  network namespaces, 3 slots each: ``tests/scoop/test_scoop_multihost.py``): after a job of one
  small map, 2-8 such processes were left on the other hosts in 6 of 6 runs (stack dumps: all in
  that handshake); plain SCOOP with the same job, 11 of 14; a job of ~1 s, 0 of 6; a killed launcher
  left every worker on the other hosts running.  So a thread in each such worker asks the broker's
  host every :data:`BROKER_EVERY` s whether anything still listens at the broker's port (one TCP
  connect, closed at once); refused :data:`BROKER_MISSES` times in a row, the run is over and the
  guard ends the worker, silently (the origin, if it is still there, reports the run's end).  The
  other hosts are then empty 0.5-1.1 s after the launcher's end (same VM).  A host that vanished
  altogether answers nothing, and is not taken for a lost broker.

The pool polls its sockets through :meth:`_Watch.poll` and asks :meth:`_Watch.lost` after each
poll; the processes are read through :mod:`~evocluster._backends.scoop.proc`.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from . import proc

#: Seconds between two looks at SCOOP's launcher and launch process (two reads of ``/proc``).
LAUNCHER_EVERY = 0.25
#: Seconds between two looks at SCOOP's broker from a worker on another host (one TCP connect).
BROKER_EVERY = 0.5
#: Refusals in a row after which the broker counts as gone (one could be a port not yet bound).
BROKER_MISSES = 2


class _Watch:
    """Notices dead workers, which SCOOP does not.

    * A ZMQ monitor on the origin's direct socket: each worker connects to it when it receives its
      first task from the origin, and the connection closes when the worker's process dies, on any
      host.  The same on the socket to the broker (the broker dies with the launcher).
    * On the origin's host, the worker processes themselves (SCOOP starts them as siblings of the
      origin): one that exited, or is a zombie, is lost -- including one that died before it ever
      received a task, which no socket reveals.  They are looked at every ``check_every`` s at
      most.
    """

    def __init__(self, comm: Any, check_every: float) -> None:
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
        self._check_every = check_every
        self._next_check = 0.0
        self._reported: set[int] = set()  # dead workers said once (on_worker_loss="continue")
        # local workers found dead by a look at their processes: the close of each one's
        # connection, seen later, is not another worker lost
        self._explained = 0
        #: who the last loss was (a worker's label), and whether it was the broker's
        self.who = ""
        self.broker = False

    def poll(self, timeout: float) -> dict[Any, int]:
        """Block up to ``timeout`` s, in zmq, until any of the origin's sockets has a message."""
        return dict(self._poller.poll(int(timeout * 1000)))

    def lost(self, ready: dict[Any, int], labels: dict[int, str]) -> str | None:
        """Why a worker is lost, if one is (``ready``: what :meth:`poll` returned; ``labels``:
        pid -> label of the local workers that answered)."""
        for i, monitor in enumerate(self._monitors):
            if monitor in ready:
                from zmq.utils.monitor import recv_monitor_message

                recv_monitor_message(monitor)
                dead = self._dead_siblings(labels)
                if dead:
                    return dead
                if i == 0 and self._explained > 0:  # a local worker's, already reported
                    self._explained -= 1
                    continue
                if i == 0:
                    self.who, self.broker = "a SCOOP worker on another host", False
                    return (
                        "a SCOOP worker was lost: its connection to the origin closed (the process "
                        "died: killed, out of memory, or a crash)"
                    )
                self.who, self.broker = "the SCOOP broker", True
                return "the SCOOP broker was lost (its connection to the origin closed)"
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + self._check_every
            dead = self._dead_siblings(labels)
            if dead:  # its connection's close may be seen later: not another loss
                self._explained += 1
            return dead
        return None

    def _dead_siblings(self, labels: dict[int, str]) -> str | None:
        if os.getppid() != self._parent:  # re-parented: its children are not ours to watch
            self.who, self.broker = "SCOOP's launch process", True
            return "SCOOP's launch process, which started the workers on this host, is gone"
        self._siblings |= proc.children(self._parent) - {os.getpid()}
        for pid in sorted(self._siblings - self._reported):
            if not proc.alive(pid):
                self._reported.add(pid)
                name = labels.get(pid, proc.label("worker", pid))
                self.who, self.broker = name, False
                return f"{name} was lost: its process exited during the run"
        return None


# ====================================================================== launcher and broker loss
_W = TypeVar("_W", bound="_ThreadWatch")


class _ThreadWatch:
    """A daemon thread that looks every ``every`` s with :meth:`gone` and, the first time that
    says why something is gone, calls ``on_lost(why)`` once, unless :meth:`disarm` was called."""

    def __init__(self, every: float, name: str, on_lost: Callable[[str], object]) -> None:
        self._every = every
        self._on_lost = on_lost
        self._disarmed = threading.Event()  # set: the run is ending its own way, stop looking
        self._thread = threading.Thread(target=self._run, name=name)
        self._thread.daemon = True  # never holds the process's exit

    def start(self: _W) -> _W:
        self._thread.start()
        return self

    def disarm(self) -> None:
        self._disarmed.set()

    def gone(self) -> str | None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._disarmed.wait(self._every):
            why = self.gone()
            if why is not None:
                if not self._disarmed.is_set():
                    self._on_lost(why)
                return


class _LauncherWatch(_ThreadWatch):
    """Watches SCOOP's launcher (``launcher``) and launch process (``launch``, this process's
    parent).

    Gone: the launch process exited (this process was re-parented), or its parent is no longer the
    launcher (the launcher exited, even as a zombie nobody reaped yet: its children were re-parented
    as it died), or the launcher is no longer alive.  Only with a Linux ``/proc``
    (:data:`proc.HAS_PROC`): elsewhere a missing process cannot be told from an unreadable one.
    """

    def __init__(self, launcher: int, launch: int, on_lost: Callable[[str], object]) -> None:
        super().__init__(LAUNCHER_EVERY, "evocluster-scoop-launcher-watch", on_lost)
        self.launcher = launcher
        self.launch = launch

    def gone(self) -> str | None:
        """Why the launcher or the launch process is gone, or ``None`` while both are there."""
        if os.getppid() != self.launch:
            return f"SCOOP's launch process (pid {self.launch}), which started this one, is gone"
        if proc.parent_of(self.launch) != self.launcher or not proc.alive(self.launcher):
            return f"SCOOP's launcher (pid {self.launcher}, `python -m scoop`) is gone"
        return None


class _BrokerWatch(_ThreadWatch):
    """Watches SCOOP's broker at ``port`` on ``host``: gone once nothing listens there any more
    (:data:`BROKER_MISSES` refused connections in a row).

    The look is a TCP connect to the broker's info (PUB) socket, closed at once with a reset (no
    ``TIME_WAIT`` left behind); ZMQ drops a peer that never greets, and the broker sees nothing.
    A connect that times out or fails otherwise tells nothing (a busy or unreachable host) and is
    not counted.  The address is resolved once, as SCOOP resolves it.
    """

    def __init__(self, host: str, port: int, on_lost: Callable[[str], object]) -> None:
        found = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
        family, kind, protocol, _, address = found[0]
        super().__init__(BROKER_EVERY, "evocluster-scoop-broker-watch", on_lost)
        self._open = (family, kind, protocol)
        self._address = address
        self._where = f"{host}:{port}"
        self._misses = 0

    def gone(self) -> str | None:
        self._misses = self._misses + 1 if self.refused() else 0
        return f"SCOOP's broker ({self._where}) is gone" if self._misses >= BROKER_MISSES else None

    def refused(self) -> bool:
        """One look: whether the broker's host refused the connection (nothing listens there)."""
        try:
            with socket.socket(*self._open) as s:
                s.settimeout(max(1.0, 2 * BROKER_EVERY))
                s.connect(self._address)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except ConnectionRefusedError:
            return True
        except OSError:  # timed out, unreachable, ...: no answer is not an answer
            pass
        return False


# ====================================================================== origin loss
#: The sentinel's program (``python -I -S -c``: no site, nothing imported but the builtins it
#: needs, about 10 ms to start).  argv: the pipe's read end, the launcher's pid and start time,
#: the origin's label.  SIGINT is ignored: Ctrl-C reaches the whole process group, and what the
#: sentinel does then is decided by what the origin wrote, not by the key.
_SENTINEL = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
fd, launcher, started, origin = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
said = b""
while True:
    chunk = os.read(fd, 64)  # blocks until the origin writes or ends (end of file)
    if not chunk:
        break
    said += chunk
if said:
    sys.exit(0)  # the origin ended through its exit guard, which did what had to be done
try:
    with open("/proc/%d/stat" % launcher) as fh:
        fields = fh.read().rpartition(")")[2].split()
except OSError:
    fields = []
if not fields or fields[0] in ("Z", "X") or fields[19] != started:
    sys.exit(0)  # the launcher is gone already: nothing to end, nothing to tell
os.kill(launcher, signal.SIGTERM)  # first: the launcher would exit 0 within milliseconds
sys.stderr.write(
    "evocluster: the %s, which ran the job, was lost: it ended without running its exit path "
    "(killed by a signal such as SIGKILL or the OOM killer, or os._exit); what it had not yet "
    "printed is lost. SCOOP's launcher would exit 0: evocluster ends the run with exit code 143 "
    "(SIGTERM to the launcher, pid %d)\\n" % (origin, launcher)
)
sys.stderr.flush()
"""


class _Sentinel:
    """The origin's sentinel process (see the module's docstring): :meth:`done` before the origin
    ends through its exit path, or the sentinel ends the run with exit code 143."""

    def __init__(self, launcher: int) -> None:
        started = proc.start_time(launcher)
        read, self._write = os.pipe()  # neither is inherited by exec'd children (PEP 446)
        try:
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-I",
                    "-S",
                    "-c",
                    _SENTINEL,
                    str(read),
                    str(launcher),
                    str(started),
                    proc.label("origin"),
                ],
                pass_fds=(read,),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,  # stderr: the origin's, for its one line
            )
        finally:
            os.close(read)
        self._pid = os.getpid()  # a forked copy of the origin is not the origin

    def done(self, why: bytes = b"exit") -> None:
        """The origin ends its own way (idempotent): the sentinel stays quiet."""
        if os.getpid() == self._pid:
            with contextlib.suppress(OSError):  # the sentinel was killed: nothing to tell it
                os.write(self._write, why[:64] or b".")


def start_watches(
    launcher: int, on_lost: Callable[[str], object], sentinel: bool
) -> tuple[_LauncherWatch, _Sentinel | None]:
    """The launcher watch of this process (the origin or a worker, started by SCOOP's launch
    process on the launching host) and, on the origin (``sentinel``), its sentinel."""
    watch = _LauncherWatch(launcher, os.getppid(), on_lost).start()
    return watch, (_Sentinel(launcher) if sentinel else None)
