"""Local backends: ``serial`` (evaluate in the master process) and ``local`` (a process pool).

* :class:`InlineTransport` evaluates each chunk inside the master's scheduler thread, after a full
  serialisation round trip, so the serial backend is a faithful oracle: what does not pickle fails
  here as it would on a cluster.
* :class:`ProcessTransport` starts ``n`` worker interpreters (``python -m
  evocluster.backends.local FD RANK SIZE``), each connected by a socket pair.  Waiting is
  ``select`` on those sockets plus a wake-up pipe: no polling at all, on either side.  A worker
  that dies is seen at once as end-of-file on its socket.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections import deque
from typing import Any

from .. import protocol
from ..serialization import Frames, dumps, loads
from ..worker import Worker, serve
from .base import Channel, Event, Transport, assemble, decode_envelope, encode_envelope

__all__ = ["InlineTransport", "LocalChannel", "ProcessTransport"]


class InlineTransport(Transport):
    """The serial backend: one "worker", the master process itself."""

    n_workers = 1

    def __init__(self) -> None:
        self._worker = Worker("serial worker (in the master process)")
        self._out: deque[Frames] = deque()
        self._wake = threading.Event()

    def send(self, worker: int, frames: Frames, idle: bool = True) -> None:
        # copy every frame: the evaluation must not share memory with the master's arguments
        record = loads([bytes(f) for f in frames])
        if record[0] == protocol.TASK:
            self._out.append(dumps(self._worker.run(record)))

    def poll(self, timeout: float | None, latency: float | None = None) -> list[Event]:
        if not self._out:
            self._wake.wait(timeout)
        events: list[Event] = [(0, f, None) for f in self._out]
        self._out.clear()
        return events

    def wakeup(self) -> None:
        self._wake.set()

    def clear_wakeup(self) -> None:
        self._wake.clear()

    def close(self, stop_frames: Frames) -> None:
        pass

    def describe(self, worker: int) -> str:
        return "the serial worker (in the master process)"


_LEN = struct.Struct("<Q")


class _Socket:
    """One end of a socket pair carrying length-prefixed messages.

    Plain ``sendall`` / ``recv_into``: a part is received straight into its final buffer (the
    stdlib ``multiprocessing.Connection`` would first gather it in a ``BytesIO``, a second copy
    that costs seconds on a 2 GiB array)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, frames: Frames) -> None:
        env, parts = encode_envelope(frames)
        self.sock.sendall(_LEN.pack(len(env)) + env)
        for part in parts:  # sizes are in the envelope; no pieces needed on a stream
            self.sock.sendall(part)

    def _read_into(self, view: memoryview) -> None:
        while view.nbytes:
            n = self.sock.recv_into(view)
            if n == 0:
                raise EOFError("the other end closed the connection")
            view = view[n:]

    def recv(self) -> Frames:
        head = bytearray(_LEN.size)
        self._read_into(memoryview(head))
        env = bytearray(_LEN.unpack(head)[0])
        self._read_into(memoryview(env))
        inline, sizes = decode_envelope(env)
        parts: list[Any] = []
        for size in sizes:
            buf = bytearray(size)
            self._read_into(memoryview(buf))
            parts.append(buf)
        return assemble(inline, parts)

    def close(self) -> None:
        self.sock.close()


def _exit_reason(proc: subprocess.Popen[bytes]) -> str:
    try:
        code = proc.wait(timeout=2)
    except subprocess.TimeoutExpired:
        return "its connection closed while the process was still running"
    if code < 0:
        return f"the process was killed by {signal.Signals(-code).name}"
    return f"the process exited with code {code}"


class ProcessTransport(Transport):
    """A pool of ``n`` local worker processes."""

    def __init__(self, n: int, job: dict[str, Any], options: Any) -> None:
        self.n_workers = n
        self._conns: list[_Socket] = []
        self._procs: list[subprocess.Popen[bytes]] = []
        self._alive = [True] * n
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        for rank in range(1, n + 1):
            ours, theirs = socket.socketpair()
            fd = theirs.fileno()
            cmd = [sys.executable, "-m", "evocluster.backends.local", str(fd), str(rank), str(n)]
            self._procs.append(
                subprocess.Popen(cmd, pass_fds=(fd,), env=env, stdin=subprocess.DEVNULL)
            )
            theirs.close()
            self._conns.append(_Socket(ours))
        # the wake-up pipe: a byte written here ends a poll's select at once
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._wake_pending = False  # see wakeup()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ, -1)
        for w, conn in enumerate(self._conns):
            self._selector.register(conn, selectors.EVENT_READ, w)
        self._lost: list[Event] = []
        init = dumps(protocol.init(job, {}))
        for w in range(n):
            self.send(w, init)

    def describe(self, worker: int) -> str:
        return f"local worker {worker + 1} of {self.n_workers}"

    def send(self, worker: int, frames: Frames, idle: bool = True) -> None:
        if not self._alive[worker]:
            return
        try:
            self._conns[worker].send(frames)
        except OSError:
            self._mark_lost(worker)

    def _mark_lost(self, worker: int) -> None:
        if self._alive[worker]:
            self._alive[worker] = False
            self._selector.unregister(self._conns[worker])
            self._lost.append((worker, None, _exit_reason(self._procs[worker])))

    def poll(self, timeout: float | None, latency: float | None = None) -> list[Event]:
        events, self._lost = self._lost, []
        if events:
            return events
        for key, _ in self._selector.select(timeout):
            w = key.data
            if w < 0:  # the wake-up pipe
                continue
            try:
                events.append((w, self._conns[w].recv(), None))
            except (EOFError, OSError):
                self._mark_lost(w)
        events += self._lost
        self._lost = []
        return events

    def wakeup(self) -> None:
        # one byte per wake-up, not per submit: the flag says a byte is (or is about to be) in
        # the pipe.  The scheduler clears it before it takes the queued jobs, so a job queued
        # after that finds it clear and writes.
        if self._wake_pending:
            return
        self._wake_pending = True
        with contextlib.suppress(BlockingIOError):  # a full pipe: a wake-up is pending anyway
            os.write(self._wake_w, b"x")

    def clear_wakeup(self) -> None:
        self._wake_pending = False
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self, stop_frames: Frames) -> None:
        for w in range(self.n_workers):
            self.send(w, stop_frames)
        for proc in self._procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for conn in self._conns:
            conn.close()
        self._selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def abort(self, code: int) -> None:
        for proc in self._procs:
            proc.kill()


class LocalChannel(Channel):
    """A local worker's end of its socket pair."""

    def __init__(self, fd: int, rank: int, size: int) -> None:
        self._conn = _Socket(socket.socket(fileno=fd))
        self.rank, self.size, self.host = rank, size, socket.gethostname()

    def label(self) -> str:
        return f"local worker {self.rank} of {self.size} on host {self.host} (pid {os.getpid()})"

    def recv(self) -> Frames:
        return self._conn.recv()  # a blocking read: the process sleeps in the kernel

    def send(self, frames: Frames) -> None:
        self._conn.send(frames)


def main(argv: list[str]) -> int:
    """Entry point of a local worker process: ``FD RANK SIZE``."""
    fd, rank, size = (int(a) for a in argv)
    try:
        return serve(LocalChannel(fd, rank, size))
    except (EOFError, ConnectionError):  # the master is gone: nothing left to serve
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
