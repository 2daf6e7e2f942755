"""Local backends: ``serial`` (evaluate in the master process) and ``local`` (a process pool).

* :class:`InlineTransport` evaluates each chunk inside the master's scheduler thread, after a full
  serialisation round trip, so the serial backend is a faithful oracle: what does not pickle fails
  here as it would on a cluster.
* :class:`ProcessTransport` starts ``n`` worker interpreters (``python -m
  evocluster._backends.local FD RANK SIZE``), each connected by a socket pair.  Waiting is
  ``select`` on those sockets plus a wake-up pipe: both sides sleep in the kernel until something
  arrives (no sleep-and-retry loop, unlike MPI's).  A worker that dies is seen at once as
  end-of-file on its socket.

Who may block on what::

    master (scheduler thread, non-blocking socket)              worker (blocking socket)
    ----------------------------------------------              ------------------------
    send():  write what the socket takes now, queue the rest -> recv(): waits for a message
    poll():  select: readable (every live worker),
                     writable (workers with queued output) -> write more of the queue
             read what has arrived (a large part straight
             into its final buffer); return whole messages <- send(): waits until all is read

A worker blocks while it sends a result the master has not read, and while it waits for a task.
So the master must block on neither: were it blocked sending a chunk to a worker that was itself
blocked sending a result, neither would ever read again (a long ``map`` of cheap items, whose
chunks and results each outgrow a socket's buffer, did exactly that).  The master therefore never
blocks on a send or a read, and reads whatever arrives, always; then a worker's blocking send
always completes, and the worker keeps its simple blocking loop.

Messages are framed by :mod:`evocluster._framing` (the isolated child's socket uses the same).
"""

from __future__ import annotations

import contextlib
import os
import select
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, NoReturn

from .. import _framing, _leftovers
from .. import _protocol as protocol
from .._framing import Outbox, ProtocolError, Reader
from .._serialization import Frames, dumps, loads
from .._worker import Worker, serve
from .base import Channel, Event, Transport

if TYPE_CHECKING:
    from .._jobfile import JobSpec

__all__ = ["InlineTransport", "LocalChannel", "ProcessTransport"]


class InlineTransport(Transport):
    """The serial backend: one "worker", the master process itself."""

    n_workers = 1
    evaluates_on_send = True  # send() runs the task: one at a time, each result delivered

    def __init__(self, job: JobSpec | None = None) -> None:
        # job: what an isolated child imports (serial isolates when asked, or to time out)
        self._worker = Worker("serial worker (in the master process)", job)
        self._out: deque[Frames] = deque()
        self._wake = threading.Event()
        self._closed = False  # after close(), send() and poll() do nothing

    def send(self, worker: int, frames: Frames, idle: bool = True) -> None:
        if self._closed:
            return
        # copy every frame: the evaluation must not share memory with the master's arguments
        record = loads([bytes(f) for f in frames])
        if record[0] == protocol.TASK:
            cwd = _cwd()
            try:
                self._out.append(dumps(self._worker.run(record)))
            finally:  # a fitness that changes directory must not move the master's
                if cwd is not None and _cwd() != cwd:
                    with contextlib.suppress(OSError):
                        os.chdir(cwd)

    def poll(self, timeout: float | None, latency: float | None = None) -> list[Event]:
        if not self._out and not self._closed:
            self._wake.wait(timeout)
        events: list[Event] = [(0, f, None) for f in self._out]
        self._out.clear()
        return events

    def wakeup(self) -> None:
        self._wake.set()  # an Event: safe from any thread, before or after close()

    def clear_wakeup(self) -> None:
        self._wake.clear()

    def close(self, stop_frames: Frames) -> None:
        self._closed = True
        self._out.clear()
        # its isolated child, if it has one: stopped and waited for here, in the thread that
        # started it, rather than dropped (it would run on until collected)
        self._worker.close()

    def describe(self, worker: int) -> str:
        return "the serial worker (in the master process)"


def _cwd() -> str | None:
    try:
        return os.getcwd()
    except OSError:  # removed meanwhile
        return None


class _Link:
    """The master's end of one worker's socket pair: non-blocking, never waits.

    Output the socket does not take at once waits in an :class:`~evocluster._framing.Outbox`
    (views of the caller's frames: a large numpy buffer is never copied), written on as the
    socket becomes writable.  Input is whatever has arrived, cut into messages by a
    :class:`~evocluster._framing.Reader` (many small results in one read; a large part straight
    into its own buffer)."""

    __slots__ = ("_in", "_out", "sock")

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._out = Outbox()
        self._in = Reader(sock)

    def fileno(self) -> int:
        return self.sock.fileno()

    @property
    def queued(self) -> bool:
        """Whether output waits for the socket to become writable."""
        return bool(self._out)

    def send(self, frames: Frames) -> None:
        """Write ``frames`` as far as the socket takes them now; queue the rest."""
        self._out.send(self.sock, frames)

    def flush(self) -> None:
        """Write queued output until it is all written or the socket is full."""
        self._out.flush(self.sock)

    def receive(self, messages: list[Frames]) -> None:
        """Read what has arrived; append each message it completes to ``messages``.

        Raises:
            EOFError: the worker closed its end (messages read before that are appended).
            ProtocolError: the stream is not made of messages.
        """
        reader = self._in
        while True:
            while (frames := reader.next()) is not None:
                messages.append(frames)
            if not reader.fill():  # the socket is non-blocking: nothing more there now
                break
        if reader.eof:
            raise EOFError("the other end closed the connection")

    def close(self) -> None:
        self._out.clear()
        self.sock.close()


def _exit_reason(proc: subprocess.Popen[bytes]) -> str:
    try:
        code = proc.wait(timeout=2)
    except subprocess.TimeoutExpired:
        return "its connection closed while the process was still running"
    if code < 0:
        return f"the process was killed by {signal.Signals(-code).name}"
    return f"the process exited with code {code}"


#: How long close() lets the workers finish what they are doing and exit, before killing them.
_STOP_GRACE = 10.0


class ProcessTransport(Transport):
    """A pool of ``n`` local worker processes."""

    # False although send() never blocks: a worker reads only between evaluations, so all of a
    # large message but a socket buffer's worth (~230 KiB: benchmarks/RESULTS.md F14, 2026-12-02)
    # would wait, serialised, in the master's memory until the worker's current chunk ends --
    # nothing gained over sending it then, but one
    # more serialised chunk pinned per worker (up to chunk_max_bytes, or a whole large item), and
    # the chunk bound early to a worker that another one may beat to idleness.  So the scheduler
    # keeps sending large chunks to idle workers only (a policy now, no longer what keeps the
    # pool from deadlocking).
    async_sends = False

    def __init__(self, n: int, job: JobSpec, options: Any) -> None:
        self.n_workers = n
        self.host = socket.gethostname()  # as its workers name theirs (LocalChannel)
        self._links: list[_Link] = []
        self._procs: list[subprocess.Popen[bytes]] = []
        self._alive = [True] * n
        self._closed = False  # set by close(); send() and poll() do nothing after it
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        # the workers die with the master (SIGKILL included) through PR_SET_PDEATHSIG, whose
        # signal comes when the *thread* that started them ends: only the main thread lives as
        # long as the process.  Started from another thread, they notice only the closed socket
        # (once their evaluation returns).
        master = os.getpid() if threading.current_thread() is threading.main_thread() else 0
        for rank in range(1, n + 1):
            ours, theirs = socket.socketpair()
            fd = theirs.fileno()
            cmd = [sys.executable, "-m", "evocluster._backends.local"]
            cmd += [str(fd), str(rank), str(n), str(master)]
            self._procs.append(
                subprocess.Popen(cmd, pass_fds=(fd,), env=env, stdin=subprocess.DEVNULL)
            )
            theirs.close()
            self._links.append(_Link(ours))  # ours only turns non-blocking; theirs stays blocking
        # the wake-up pipe: a byte written here ends a poll's select at once
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._wake_pending = False  # see wakeup()
        # makes wakeup()'s "is the pipe open? write a byte" one step against close()'s closing of
        # the pipe: else a late wakeup() could write into a closed fd, or into whatever file
        # reuses its number.  Only a wakeup() that writes takes it (once per wake-up).
        self._wake_lock = threading.Lock()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ, -1)
        for w, link in enumerate(self._links):
            self._selector.register(link, selectors.EVENT_READ, w)
        self._lost: list[Event] = []
        init = dumps(protocol.init(job, {}))
        for w in range(n):
            self._send(w, init)

    def describe(self, worker: int) -> str:
        return f"local worker {worker + 1} of {self.n_workers}"

    def send(self, worker: int, frames: Frames, idle: bool = True) -> None:
        if not self._closed:
            self._send(worker, frames)

    def _send(self, worker: int, frames: Frames) -> None:
        if not self._alive[worker]:
            return
        link = self._links[worker]
        was_queued = link.queued
        try:
            link.send(frames)
        except OSError:
            self._mark_lost(worker)
            return
        if link.queued and not was_queued:  # the socket is full: watch for room in it
            self._selector.modify(link, selectors.EVENT_READ | selectors.EVENT_WRITE, worker)

    def _on_ready(self, worker: int, mask: int, messages: list[Frames]) -> None:
        """Serve what ``select`` found on a worker's socket: read what arrived (complete messages
        into ``messages``), write queued output if it has room.  Raises EOFError / OSError."""
        link = self._links[worker]
        if mask & selectors.EVENT_READ:  # first: what a worker said before it hung up arrives
            link.receive(messages)
        if mask & selectors.EVENT_WRITE:
            link.flush()
            if not link.queued:  # all written: stop watching for room, or select never sleeps
                self._selector.modify(link, selectors.EVENT_READ, worker)

    def _drop(self, worker: int) -> None:
        """Stop serving a worker whose connection ended."""
        self._alive[worker] = False
        self._selector.unregister(self._links[worker])
        self._links[worker].close()

    def _mark_lost(self, worker: int) -> None:
        if self._alive[worker]:
            self._drop(worker)
            self._lost.append((worker, None, _exit_reason(self._procs[worker])))

    def poll(self, timeout: float | None, latency: float | None = None) -> list[Event]:
        events, self._lost = self._lost, []
        if events or self._closed:
            return events
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            ready = self._selector.select(timeout)
            woken = False
            for key, mask in ready:
                w = key.data
                if w < 0:  # the wake-up pipe
                    woken = True
                    continue
                messages: list[Frames] = []
                try:
                    self._on_ready(w, mask, messages)
                except (EOFError, OSError, ProtocolError):
                    self._mark_lost(w)
                events += [(w, frames, None) for frames in messages]
            events += self._lost
            self._lost = []
            if events or woken or not ready:  # (nothing ready: the timeout passed)
                return events
            # only queued output was written: wait on, rather than make the scheduler go round
            # its loop once per socket buffer of a large message
            if deadline is not None:
                timeout = max(0.0, deadline - time.monotonic())

    def wakeup(self) -> None:
        # one byte per wake-up, not per submit: the flag says a byte is (or is about to be) in
        # the pipe.  The scheduler clears it before it takes the queued jobs, so a job queued
        # after that finds it clear and writes.  close() leaves it set: later calls return here.
        if self._wake_pending:
            return
        self._wake_pending = True
        with self._wake_lock:
            if self._wake_w < 0:  # closed meanwhile
                return
            with contextlib.suppress(BlockingIOError):  # a full pipe: a wake-up is pending anyway
                os.write(self._wake_w, b"x")

    def clear_wakeup(self) -> None:
        if self._closed:
            return
        self._wake_pending = False
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self, stop_frames: Frames) -> None:
        if self._closed:  # a second call: everything is released already
            return
        self._closed = True
        self._selector.unregister(self._wake_r)  # wake-ups no longer matter (and would spin)
        for w in range(self.n_workers):
            self._send(w, stop_frames)
        deadline = time.monotonic() + _STOP_GRACE
        self._drain(deadline)
        for proc in self._procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _leftovers.kill_tree(proc.pid)  # with what its fitness started
                proc.wait()
        for w in range(self.n_workers):
            if self._alive[w]:
                self._drop(w)
        self._selector.close()
        with self._wake_lock:
            self._wake_pending = True  # wakeup() from now on returns without the lock
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_r = self._wake_w = -1

    def _drain(self, deadline: float) -> None:
        """Until every worker has hung up (or ``deadline``): write the queued output, STOP last,
        and read and drop what the workers still send.  A worker blocked sending a result (after
        a lost worker broke the pool) reads its STOP only once that result is read."""
        while any(self._alive):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            for key, mask in self._selector.select(left):
                try:
                    self._on_ready(key.data, mask, [])
                except (EOFError, OSError, ProtocolError):  # hung up: after its BYE, or it died
                    self._drop(key.data)

    def abort(self, code: int) -> None:
        for proc in self._procs:
            if proc.poll() is None:  # (reaped, its pid may be another process's)
                _leftovers.kill_tree(proc.pid)  # with what its fitness started


class LocalChannel(Channel):
    """A local worker's end of its socket pair: blocking (the process sleeps in the kernel)."""

    def __init__(self, fd: int, rank: int, size: int) -> None:
        self._sock = socket.socket(fileno=fd)
        self._reader = Reader(self._sock)
        self._ahead: Frames | None = None  # a whole message read ahead of its turn
        self.rank, self.size, self.host = rank, size, socket.gethostname()
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)

    def label(self) -> str:
        return f"local worker {self.rank} of {self.size} on host {self.host} (pid {os.getpid()})"

    def recv(self) -> Frames:
        frames, self._ahead = self._ahead, None
        if frames is None:
            frames = self._reader.recv()  # a blocking read: the process sleeps in the kernel
        if frames is None:
            raise EOFError("the other end closed the connection")
        return frames

    def send(self, frames: Frames) -> None:
        # a blocking write: it always completes, since the master reads whatever arrives
        _framing.send(self._sock, frames)

    def fileno(self) -> int:
        return self._sock.fileno()

    def ready(self) -> bool:
        # a message the last read took in along with the one before it; else the socket:
        # readable means a message (or the master's end, which recv() then reports)
        if self._ahead is None:
            self._ahead = self._reader.next()
        return self._ahead is not None or bool(self._poll.poll(0))


def main(argv: list[str]) -> int:
    """Entry point of a local worker process: ``FD RANK SIZE [MASTER_PID]`` (0: not tied to the
    master's life)."""
    fd, rank, size, *master = (int(a) for a in argv)
    # Ctrl-C reaches the whole process group: the master ends the run and stops its workers
    # (a traceback from each worker would bury its one line); so does a terminal's hangup
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    _leftovers.die_with(master[0] if master else 0)
    try:
        return serve(LocalChannel(fd, rank, size))
    except (EOFError, ConnectionError):  # the master is gone: nothing left to serve
        return 0


def _exit(code: int) -> NoReturn:
    """Leave the worker process now, output flushed: a thread a fitness started (not a daemon)
    must not keep it alive after its BYE (the master would wait for it, then kill it)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    _exit(main(sys.argv[1:]))
