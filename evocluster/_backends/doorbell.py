"""Doorbells: one TCP connection from the master to each MPI worker, so that a worker waiting for
work sleeps in the kernel and wakes the moment a task is sent to it.

MPI cannot wait without spinning (a blocking ``Recv`` burns its core), so an MPI worker
sleep-polls with a backoff, and that trades wake-up latency for idle CPU: a worker that has
waited 100 ms for work sleeps ~20 ms at a time (benchmarks/RESULTS.md F9, 2026-12-02), and the
start of each generation waits for it.  A doorbell removes the trade.  The data still travels by
MPI; the doorbell only carries one byte, sent after each message::

    master (scheduler thread)                 worker r (serve loop, waiting for a task)
    Isend(task) to r; ring(r)  -- b"\\0" -->   Improbe: nothing; select() on its socket wakes;
                                              Improbe: the task

Rings go one way only: the master's scheduler never waits on sockets (a ring per result would
wake it once per evaluation, and on a few cores it would contend with the job's own thread).

Set-up (``MPITransport`` / ``MPIChannel``): the master listens on an ephemeral port of every
interface and sends ``(hosts, port, token)`` to each worker by MPI before anything else; a worker
connects to the first host that answers and presents ``token + rank``, then its pid and host name
(known to the master from then on: a worker that dies before the master has read its first MPI
message is still named by host).  The token travels only by
MPI, and the master never writes to a connection before it has presented the token: a stranger
(anything else that connects to the port) never learns it.  A connection that does not present
the run's token and a valid rank within ``HELLO_TIMEOUT`` is closed; the master reads every
connection at once, without blocking, so a silent or slow one holds up no worker's.  Anything
that fails (a firewall, a file-descriptor limit, a closed connection) leaves that worker polling
exactly as without doorbells: slower to wake, never wrong; and if any worker has no doorbell at
the end of the set-up (``SETUP_TIMEOUT``, or the end of a shorter run), the master says so in one
``evocluster:`` line, with why.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import select
import socket
import struct
import sys
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Bell", "Doorbells", "connect", "unavailable"]

_RANK = struct.Struct("<I")
_TOKEN_BYTES = 16
#: after the token and rank: the worker's pid and host name (NUL-padded; a longer name is cut)
_WHO = struct.Struct("<I64s")
#: what a worker sends first: the token, its rank, its pid and host
_GREETING = _TOKEN_BYTES + _RANK.size + _WHO.size
#: What a worker sends on its connection as it leaves normally; anything else it sends is the
#: report ``faulthandler`` writes as it dies of a fatal signal.
GOODBYE = b"B"
#: A fault report that has been quiet this long, its connection still open, is complete: the
#: worker lingers (:func:`_linger_after_fault`), and the master names it now, before the MPI
#: launcher, which kills every rank the moment one dies, can kill the master too.
REPORT_QUIET = 0.2
#: The fatal signals ``faulthandler`` reports.
_FATAL = ("SIGSEGV", "SIGFPE", "SIGABRT", "SIGBUS", "SIGILL")
#: Per candidate host: a worker that cannot connect within it just polls.
CONNECT_TIMEOUT = 2.0
#: A connection must present its greeting (token and rank) within this, or it is closed.  A worker
#: sends it right after connecting, so it takes a round trip; a stranger's silence costs only it.
HELLO_TIMEOUT = 2.0
#: Seconds after listening when the set-up ends: a worker without a doorbell by then is reported
#: (a worker tries each host for ``CONNECT_TIMEOUT`` right after the first message, and ranks may
#: start seconds apart on a busy node).  A run that ends sooner reports at its end instead.
SETUP_TIMEOUT = 15.0
#: At close: how long greetings already sent (the workers have all said goodbye by MPI) may take
#: to arrive before the count of missing doorbells is made.
CLOSE_GRACE = 0.2
#: Connections waiting for their greeting, at most (a worker's waits a round trip, so the oldest
#: are strangers'): past it the oldest is closed, so a flood cannot exhaust descriptors.
MAX_PENDING = 1024
#: The listener's queue holds this many connections more than there are workers.
_BACKLOG_SPARE = 128


def _raise_fd_limit() -> None:
    """A master of thousands of workers needs as many sockets: lift the soft limit to the hard."""
    with contextlib.suppress(Exception):
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _resolvable(host: str) -> str:
    """``host`` as getaddrinfo should get it: an ASCII name as bytes, which it takes as it is (a
    str makes it load the IDNA codec, ~2.5 ms per process: benchmarks/RESULTS.md F4, 2026-12-02);
    typed str, as typeshed lists only str."""
    return host.encode("ascii") if host.isascii() else host  # type: ignore[return-value]


def _hosts() -> list[str]:
    """Names and addresses the workers may reach this host by, most specific first."""
    name = socket.gethostname()
    found = [name]
    with contextlib.suppress(OSError):
        for info in socket.getaddrinfo(_resolvable(name), None, socket.AF_INET, socket.SOCK_STREAM):
            found.append(str(info[4][0]))
    found.append("127.0.0.1")
    return list(dict.fromkeys(found))


class Doorbells:
    """The master's side: accepts the workers' connections (in a thread of its own, so that a
    slow or bogus client never delays the scheduler) and rings them.

    ``warn`` receives the one-line report of workers left without a doorbell (default: printed
    on stderr after ``evocluster:``)."""

    def __init__(
        self,
        n_workers: int,
        warn: Callable[[str], None] | None = None,
        on_death: Callable[[int, str, bool], None] | None = None,
    ) -> None:
        _raise_fd_limit()
        #: called (from the watch thread) with a worker's index and its fault report ("" if it
        #: sent none) when its connection closes without its goodbye: the worker process died
        self.on_death = on_death
        self.quiet = False  # set when the master itself ends the job: deaths are expected then
        self.token = os.urandom(_TOKEN_BYTES)  # what secrets.token_bytes returns
        # room for every worker and more: a burst of strangers between two wake-ups of the
        # acceptor then cannot fill the queue, where a worker's connection would wait for the
        # kernel to retry it (1 s); the kernel caps it at net.core.somaxconn
        listener = socket.create_server(("", 0), backlog=min(n_workers + _BACKLOG_SPARE, 4096))
        self.port: int = listener.getsockname()[1]
        self.hosts = _hosts()
        self._n = n_workers
        self._warn = warn or _print_warning
        self._lock = threading.Lock()  # guards _peers, _closed, _ended, _close_by, _reported
        self._peers: dict[int, socket.socket] = {}  # worker index -> its connection
        self._who: dict[int, tuple[str, int]] = {}  # worker index -> its host and pid
        self._closed = False  # close() has begun
        self._ended = False  # close() has closed the doorbells
        self._close_by = math.inf  # set with _closed: when the acceptor stops reading greetings
        self._reported = False  # the set-up's outcome has been checked (and any warning given)
        self.rings = 0  # rings sent to a connected worker
        self._setup_end = time.monotonic() + SETUP_TIMEOUT
        # close() writes a byte here to end the acceptor's sleep (closing the listener from
        # another thread would not wake a poll() on it)
        try:
            wake, self._wake_w = socket.socketpair()
        except OSError:
            listener.close()
            raise
        # the death watch's wake-up: a new doorbell to watch (_admit), or close()
        self._watch_wake_r, self._watch_wake_w = socket.socketpair()
        self._greeter = _Greeter(listener, wake, self.token, n_workers, self._admit)
        self._acceptor = threading.Thread(
            target=self._accept_loop, name="evocluster-doorbells", daemon=True
        )
        self._acceptor.start()
        self._watcher = threading.Thread(
            target=self._watch_loop, name="evocluster-deathwatch", daemon=True
        )
        self._watcher.start()

    def address(self) -> tuple[list[str], int, bytes]:
        """What a worker needs to connect: ``(hosts, port, token)``."""
        return self.hosts, self.port, self.token

    @property
    def connected(self) -> int:
        """How many workers have a doorbell."""
        with self._lock:
            return len(self._peers)

    @property
    def strangers(self) -> int:
        """How many connections were closed without a valid greeting."""
        return self._greeter.strangers

    # ------------------------------------------------------------------ the acceptor thread
    def _accept_loop(self) -> None:
        """Until every worker has its doorbell or ``close()``: accept, read greetings, drop what
        is past its deadline, and end the set-up at ``SETUP_TIMEOUT``; sleeps in between."""
        g = self._greeter
        try:
            while True:
                with self._lock:
                    done = len(self._peers) >= self._n
                    closing, close_by = self._closed, self._close_by
                if done:
                    break
                now = time.monotonic()
                g.expire(now)
                if closing:
                    # close() waits for this: the workers have all tried by then, so read the
                    # greetings already on their way, for CLOSE_GRACE at most, then stop
                    g.accept_all()
                    g.greet_all()
                    if now >= close_by:
                        g.expire(math.inf)  # silent until the end: strangers too
                    if not g.pending:
                        break
                    until = close_by
                elif not self._reported and now >= self._setup_end:
                    self._report()
                    continue
                else:
                    until = math.inf if self._reported else self._setup_end
                g.wait(min(until, g.earliest()) - now)
        finally:
            g.close()

    def _admit(self, rank: int, conn: socket.socket, host: str, pid: int) -> None:
        """A connection presented the token and ``rank``: worker ``rank - 1``'s doorbell."""
        with self._lock:
            # while closing, still counted (its greeting was on its way); closed with the rest
            if self._ended or rank - 1 in self._peers:
                conn.close()
                return
            self._peers[rank - 1] = conn
            self._who[rank - 1] = (host, pid)
        with contextlib.suppress(OSError):  # the death watch watches it from now on
            self._watch_wake_w.send(b"\0")

    def who(self, worker: int) -> tuple[str, int] | None:
        """The host and pid ``worker`` gave with its doorbell (None: it has none)."""
        return self._who.get(worker)  # one dict read: atomic (the death watch's thread)

    def _report(self) -> None:
        """The set-up is over: if any worker has no doorbell, say how many and why, once."""
        with self._lock:
            if self._reported:
                return
            self._reported = True
            missing = self._n - len(self._peers)
        if missing <= 0:
            return
        g, why = self._greeter, []
        if g.strangers:
            why.append(
                f"{g.strangers} connection(s) to its doorbell port {self.port} never presented "
                "this run's token and were closed (strangers connected)"
            )
        if g.error:
            why.append(f"the master stopped accepting connections ({g.error})")
        if not why:
            why.append(
                f"no connection of theirs reached port {self.port} of {', '.join(self.hosts)} "
                "(a firewall between the nodes?)"
            )
        self._warn(
            f"{missing} of {self._n} MPI workers have no doorbell and poll for work instead "
            f"(slower to wake after idle time): {'; '.join(why)}; EVOCLUSTER_DOORBELL=0 turns "
            "doorbells off"
        )

    # ------------------------------------------------------------------ the death watch
    def _watch_loop(self) -> None:
        """Sleep in poll() on every worker's connection; what a worker writes there is its
        goodbye or, as it dies of a fatal signal, faulthandler's report.  A connection that
        closes without the goodbye is a worker process that died: ``on_death`` is told at once,
        before the MPI launcher (which noticed too) kills this process.  Woken by ``_admit``
        (a new doorbell to watch) and by ``close()``."""
        poller = select.poll()
        wake = self._watch_wake_r
        wake_fd = wake.fileno()  # kept: close() may close it (fileno() -1) before this ends
        poller.register(wake, select.POLLIN)
        watched: dict[int, tuple[int, socket.socket]] = {}  # fd -> (worker, connection)
        said: dict[int, bytes] = {}  # worker -> what it wrote
        writing: dict[int, float] = {}  # worker -> when its fault report last grew
        told: set[int] = set()  # workers whose death on_death has been told
        while not self._ended:
            with self._lock:
                new = [(w, c) for w, c in self._peers.items() if w not in said]
            for w, conn in new:
                said[w] = b""
                watched[conn.fileno()] = (w, conn)
                poller.register(conn, select.POLLIN)
            wait = -1
            if writing:
                wait = max(
                    1, math.ceil(1000 * (min(writing.values()) + REPORT_QUIET - time.monotonic()))
                )
            for fd, _ in poller.poll(wait):
                if fd == wake_fd:
                    with contextlib.suppress(OSError):
                        wake.recv(4096)
                    continue
                if fd not in watched:  # closed under it by close() (a slow watcher's end)
                    poller.unregister(fd)
                    continue
                w, conn = watched[fd]
                if self._read(conn, w, said):
                    if said[w] and said[w] != GOODBYE and w not in told:
                        writing[w] = time.monotonic()
                    continue
                poller.unregister(fd)
                del watched[fd]
                writing.pop(w, None)
                if said[w] != GOODBYE:
                    self._tell(w, said[w], told, lingering=False)
            self._tell_complete(writing, said, told)

    def _tell_complete(
        self, writing: dict[int, float], said: dict[int, bytes], told: set[int]
    ) -> None:
        """Tell the deaths of the workers whose fault report has not grown for
        ``REPORT_QUIET`` seconds: it is complete, and they linger."""
        now = time.monotonic()
        for w in [w for w, t in writing.items() if now - t >= REPORT_QUIET]:
            del writing[w]
            self._tell(w, said[w], told, lingering=True)

    def _tell(self, worker: int, report: bytes, told: set[int], lingering: bool) -> None:
        """``on_death(worker, report, lingering)``, once per worker, unless the master itself is
        ending the job.  ``lingering``: the worker has written its fault report and lingers
        (:func:`_linger_after_fault`), so it is still there; else its process has ended."""
        if worker in told or self.quiet or self._closed or self.on_death is None:
            return
        told.add(worker)
        self.on_death(worker, report.decode("utf-8", "replace"), lingering)

    @staticmethod
    def _read(conn: socket.socket, w: int, said: dict[int, bytes]) -> bool:
        """Read what worker ``w`` wrote; whether its connection is still open."""
        try:
            data = conn.recv(65536)
        except BlockingIOError:
            return True
        except OSError:
            return False
        said[w] += data
        return bool(data)

    # ------------------------------------------------------------------ the scheduler's side
    def ring(self, worker: int) -> None:
        """Wake ``worker`` if it waits (nothing happens without a doorbell)."""
        conn = self._peers.get(worker)  # one dict read: atomic, no lock needed
        if conn is not None:
            # a full buffer means unread rings are there already; a closed one, a worker gone
            # (the transport learns that from MPI)
            with contextlib.suppress(OSError):
                conn.send(b"\0")
                self.rings += 1

    def close(self) -> None:
        """End the doorbells (after the workers' goodbyes).  Reports missing doorbells first if the
        set-up had not ended yet (a run shorter than ``SETUP_TIMEOUT``)."""
        with self._lock:
            already, self._closed = self._closed, True
            self._close_by = time.monotonic() + CLOSE_GRACE
        if not already:
            with contextlib.suppress(OSError):  # the acceptor may have ended (all connected)
                self._wake_w.send(b"\0")
            # it closes the listener and whatever still waits for a greeting; a second more than
            # the grace for it to be scheduled at all (a daemon thread: never a hang at exit)
            self._acceptor.join(CLOSE_GRACE + 1.0)
            self._wake_w.close()
            self._report()
        with self._lock:
            peers, self._peers, self._ended = list(self._peers.values()), {}, True
        with contextlib.suppress(OSError):
            self._watch_wake_w.send(b"\0")
        self._watcher.join(1.0)
        for s in (self._watch_wake_w, self._watch_wake_r):
            s.close()
        for conn in peers:
            conn.close()


def _print_warning(message: str) -> None:
    print(f"evocluster: {message}", file=sys.stderr, flush=True)


def unavailable(n_workers: int, error: OSError) -> None:
    """The master could not set up doorbells at all (``Doorbells`` raised ``error``): say so."""
    _print_warning(
        f"{n_workers} of {n_workers} MPI workers have no doorbell and poll for work instead "
        f"(slower to wake after idle time): the master cannot listen on TCP ({error}); "
        "EVOCLUSTER_DOORBELL=0 turns doorbells off"
    )


#: ``accept()`` errors that concern only the client being accepted (it reset or vanished).
_TRANSIENT_ACCEPT_ERRORS = frozenset(
    getattr(errno, name)
    for name in (
        "ECONNABORTED",
        "EPROTO",
        "EPERM",
        "ENETDOWN",
        "ENOPROTOOPT",
        "EHOSTDOWN",
        "ENONET",
        "EHOSTUNREACH",
        "EOPNOTSUPP",
        "ENETUNREACH",
        "EINTR",
    )
    if hasattr(errno, name)
)
#: ``accept()`` errors of an exhausted resource: closing a connection frees one.
_RESOURCE_ERRORS = frozenset(
    getattr(errno, name)
    for name in ("EMFILE", "ENFILE", "ENOBUFS", "ENOMEM")
    if hasattr(errno, name)
)


class _Greeter:
    """The acceptor thread's own state: the listener, the connections waiting for their greeting
    (each with its deadline), and the ``poll()`` that sleeps on all of them.  Every socket here
    is non-blocking, so no client can hold up another."""

    def __init__(
        self,
        listener: socket.socket,
        wake: socket.socket,
        token: bytes,
        n_workers: int,
        admit: Callable[[int, socket.socket, str, int], None],
    ) -> None:
        import hmac  # the master's side only: a worker rank does not load it

        self._compare = hmac.compare_digest
        self.listener, self.wake = listener, wake
        self._token, self._n, self._admit = token, n_workers, admit
        listener.setblocking(False)
        wake.setblocking(False)
        self._poll = select.poll()  # not select(): no FD_SETSIZE limit on the descriptors
        self._poll.register(listener, select.POLLIN)
        self._poll.register(wake, select.POLLIN)
        self.accepting = True
        # fd -> (connection, deadline, greeting so far), in accept order: the first has the
        # earliest deadline (each is its accept time + HELLO_TIMEOUT)
        self.pending: dict[int, tuple[socket.socket, float, bytearray]] = {}
        self.strangers = 0  # connections closed without a valid greeting
        self.error: str | None = None  # why accepting stopped, if it did

    def earliest(self) -> float:
        """The first deadline of a connection waiting for its greeting (inf: none waits)."""
        return next(iter(self.pending.values()))[1] if self.pending else math.inf

    def expire(self, now: float) -> None:
        while self.pending and self.earliest() <= now:
            self._drop(next(iter(self.pending)))

    def wait(self, timeout: float) -> None:
        """Sleep until something arrives or ``timeout`` (inf: no limit) passes; handle it."""
        # whole milliseconds, rounded up, so that a deadline is never woken for too early
        ms = None if timeout == math.inf else max(0, math.ceil(timeout * 1000))
        for fd, _ in self._poll.poll(ms):
            if fd == self.listener.fileno():
                self.accept_all()
            elif fd == self.wake.fileno():
                with contextlib.suppress(OSError):
                    self.wake.recv(64)
            elif fd in self.pending:
                self.greet(fd)

    def accept_all(self) -> None:
        """Accept whatever waits in the backlog, without waiting for any greeting."""
        while self.accepting:
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in _TRANSIENT_ACCEPT_ERRORS:
                    continue  # that client is gone already
                if e.errno in _RESOURCE_ERRORS and self.pending:
                    self._drop(next(iter(self.pending)))  # the oldest waiting: surely a stranger
                    continue
                # out of descriptors with none to free (else the listener, still readable,
                # would wake the poll at once, again and again): the rest of the workers poll
                self.error = os.strerror(e.errno) if e.errno else str(e)
                self.accepting = False
                self._poll.unregister(self.listener)
                return
            conn.setblocking(False)
            fd = conn.fileno()
            self.pending[fd] = (conn, time.monotonic() + HELLO_TIMEOUT, bytearray())
            self._poll.register(fd, select.POLLIN)
            if len(self.pending) > MAX_PENDING:
                self._drop(next(iter(self.pending)))

    def greet_all(self) -> None:
        for fd in list(self.pending):
            self.greet(fd)

    def greet(self, fd: int) -> None:
        """Read what ``fd`` has sent; once its greeting is complete, admit it or close it.  The
        master writes nothing to a connection before this: a stranger never learns a thing."""
        conn, _, hello = self.pending[fd]
        try:
            chunk = conn.recv(_GREETING - len(hello))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # reset
            chunk = b""
        if not chunk:  # closed before its greeting
            self._drop(fd)
            return
        hello += chunk
        if len(hello) < _GREETING:
            return
        token, rank = bytes(hello[:_TOKEN_BYTES]), _RANK.unpack_from(hello, _TOKEN_BYTES)[0]
        pid, host = _WHO.unpack_from(hello, _TOKEN_BYTES + _RANK.size)
        if not self._compare(token, self._token) or not 1 <= rank <= self._n:
            self._drop(fd)  # not one of this run's workers
            return
        del self.pending[fd]
        self._poll.unregister(fd)
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            conn.close()
            return
        self._admit(rank, conn, host.rstrip(b"\0").decode("utf-8", "replace"), pid)

    def _drop(self, fd: int, stranger: bool = True) -> None:
        conn = self.pending.pop(fd)[0]
        self._poll.unregister(fd)
        conn.close()
        self.strangers += stranger

    def close(self) -> None:
        for fd in list(self.pending):
            self._drop(fd, stranger=False)
        self.listener.close()
        self.wake.close()


def _recv_exactly(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed during the greeting")
        data += chunk
    return data


class Bell:
    """A worker's side: sleep until the master rings or a timeout passes."""

    def __init__(self, conn: socket.socket | None) -> None:
        self._conn = conn
        self._poll = select.poll()  # not select(): no FD_SETSIZE limit on the descriptor
        if conn is not None:
            self._poll.register(conn, select.POLLIN)

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def report_faults(self) -> None:
        """Should this process die of a fatal signal (a segfault in a fitness), let
        ``faulthandler`` write its report into the connection: the master reads it before the
        MPI launcher tears the job down, and names the worker and the evaluation."""
        if self._conn is not None:
            import faulthandler

            _linger_after_fault()  # first: faulthandler passes the signal on to what it finds
            faulthandler.enable(file=self._conn.fileno(), all_threads=False)
            # a copy a fitness forks is not this worker: its fault must not be reported as this
            # worker's death (the master would end the job), nor linger
            os.register_at_fork(after_in_child=_forked)

    def goodbye(self) -> None:
        """This worker leaves normally (after its BYE): tell the master's death watch, which
        would otherwise take the closed connection for a death, and close."""
        if self._conn is not None:
            import faulthandler

            faulthandler.disable()
            _die_at_once_after_fault()
            with contextlib.suppress(OSError):
                self._conn.setblocking(True)
                self._conn.sendall(GOODBYE)
        self.close()

    def fileno(self) -> int:
        """The connection's descriptor, readable on a ring (-1: none)."""
        return self._conn.fileno() if self._conn is not None else -1

    def drain(self) -> None:
        """Consume the rings that have come (never waits); a closed connection is closed here."""
        conn = self._conn
        if conn is None or not self._poll.poll(0):
            return
        try:
            if not conn.recv(4096):
                raise ConnectionError("closed")
        except BlockingIOError:
            pass
        except OSError:  # the master closed it: sleep-poll from now on
            self.close()

    def wait(self, timeout: float) -> bool:
        """Sleep until a ring (consumed here) or ``timeout``; return whether it rang.  Without a
        connection, just sleep."""
        conn = self._conn
        if conn is None or timeout < 1e-3:  # poll() counts whole milliseconds; a ring that
            time.sleep(timeout)  # comes meanwhile is read by the next, longer wait
            return False
        if not self._poll.poll(max(1, math.ceil(timeout * 1000))):
            return False
        try:
            if conn.recv(4096):
                return True
            raise ConnectionError("closed")
        except BlockingIOError:
            return False
        except OSError:  # the master closed it: sleep-poll from now on
            self.close()
            return False

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._poll.unregister(self._conn)
            with contextlib.suppress(OSError):
                self._conn.close()
            self._conn = None


def _linger_after_fault() -> None:
    """A worker dying of a fatal signal lingers a few seconds after ``faulthandler`` has written
    its report, so that the master can name it first.  The MPI launcher kills every rank the
    moment one dies (MPICH's hydra sends SIGKILL at once, no SIGTERM first), and the master's line
    used to race with that SIGKILL and lose it now and then.

    How: the handler ``faulthandler`` passes each fatal signal on to (it restores the one it found
    and raises the signal again) becomes libc's ``sleep``, installed one-shot
    (``sysv_signal``: ``SA_RESETHAND``): it sleeps ``signum`` seconds (4 for SIGILL to 11 for
    SIGSEGV; no Python runs in the crashed process), the disposition is back to the default, and
    the fault repeats and ends the process as before.  Never fatal: without libc it dies at once.
    """
    with contextlib.suppress(Exception):
        import ctypes
        import signal

        libc = ctypes.CDLL(None)
        install = libc.sysv_signal
        install.restype = ctypes.c_void_p
        install.argtypes = [ctypes.c_int, ctypes.c_void_p]
        sleep = ctypes.cast(libc.sleep, ctypes.c_void_p)
        for name in _FATAL:
            install(int(getattr(signal, name)), sleep)


def _forked() -> None:
    """In a process forked from a worker: faults are its own, reported nowhere, not lingering."""
    import faulthandler

    faulthandler.disable()
    _die_at_once_after_fault()


def _die_at_once_after_fault() -> None:
    """Leaving normally (after the goodbye, the death watch no longer listens): a fault from now
    on ends the process at once, as by default."""
    import signal

    for name in _FATAL:
        with contextlib.suppress(OSError, ValueError):
            signal.signal(getattr(signal, name), signal.SIG_DFL)


def _loopback(host: str) -> bool:
    return host == "localhost" or host.startswith("127.") or host == "::1"


def connect(hosts: list[str], port: int, token: bytes, rank: int) -> Bell:
    """Connect worker ``rank`` to the master's doorbells; a :class:`Bell` without a connection
    (plain sleeping) if no host answers.  ``hosts[0]`` is the master's host name: a worker on
    another host skips the loopback addresses (there they are its own node's, where another
    program may listen on the same port)."""
    if hosts and hosts[0] != socket.gethostname():
        hosts = [h for h in hosts if not _loopback(h)]
    for host in hosts:
        try:
            conn = socket.create_connection((_resolvable(host), port), timeout=CONNECT_TIMEOUT)
        except OSError:
            continue
        try:
            who = _WHO.pack(os.getpid(), socket.gethostname().encode("utf-8", "replace"))
            conn.sendall(token + _RANK.pack(rank) + who)
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            conn.close()
            continue
        return Bell(conn)
    return Bell(None)
