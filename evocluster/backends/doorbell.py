"""Doorbells: one TCP connection from the master to each MPI worker, so that a worker waiting for
work sleeps in the kernel and wakes the moment a task is sent to it.

MPI cannot wait without spinning (a blocking ``Recv`` burns its core), so an MPI worker
sleep-polls with a backoff, and that trades wake-up latency for idle CPU: a worker that has
waited 100 ms for work sleeps ~20 ms at a time, and the start of each generation waits for it.  A
doorbell removes the trade.  The data still travels by MPI; the doorbell only carries one byte,
sent after each message::

    master (scheduler thread)                 worker r (serve loop, waiting for a task)
    Isend(task) to r; ring(r)  -- b"\\0" -->   Improbe: nothing; select() on its socket wakes;
                                              Improbe: the task

Rings go one way only: the master's scheduler never waits on sockets (a ring per result would
wake it once per evaluation, and on a few cores it would contend with the job's own thread).

Set-up (``MPITransport`` / ``MPIChannel``): the master listens on an ephemeral port of every
interface and sends ``(hosts, port, token)`` to each worker by MPI before anything else; a worker
connects to the first host that answers and presents ``token + rank``.  A connection that does
not present the run's token is closed.  Anything that fails (a firewall, a file-descriptor limit,
a closed connection) leaves that worker polling exactly as without doorbells: slower to wake,
never wrong.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import socket
import struct
import threading
import time

__all__ = ["Bell", "Doorbells", "connect"]

_RANK = struct.Struct("<I")
_TOKEN_BYTES = 16
#: Per candidate host: a worker that cannot connect within it just polls.
CONNECT_TIMEOUT = 2.0


def _raise_fd_limit() -> None:
    """A master of thousands of workers needs as many sockets: lift the soft limit to the hard."""
    with contextlib.suppress(Exception):
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _resolvable(host: str) -> str:
    """``host`` as getaddrinfo should get it: an ASCII name as bytes, which it takes as it is (a
    str makes it load the IDNA codec, ~2 ms per process); typed str, as typeshed lists only str."""
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
    slow or bogus client never delays the scheduler) and rings them."""

    def __init__(self, n_workers: int) -> None:
        _raise_fd_limit()
        self.token = os.urandom(_TOKEN_BYTES)  # what secrets.token_bytes returns
        self._listener = socket.create_server(("", 0), backlog=min(max(n_workers, 1), 4096))
        self.port: int = self._listener.getsockname()[1]
        self.hosts = _hosts()
        self._n = n_workers
        self._lock = threading.Lock()  # guards _peers and _closed
        self._peers: dict[int, socket.socket] = {}  # worker index -> its connection
        self._closed = False
        self.rings = 0  # rings sent to a connected worker
        self._acceptor = threading.Thread(
            target=self._accept, name="evocluster-doorbells", daemon=True
        )
        self._acceptor.start()

    def address(self) -> tuple[list[str], int, bytes]:
        """What a worker needs to connect: ``(hosts, port, token)``."""
        return self.hosts, self.port, self.token

    @property
    def connected(self) -> int:
        """How many workers have a doorbell."""
        with self._lock:
            return len(self._peers)

    def _accept(self) -> None:
        import hmac  # the master's side only: a worker rank does not load it

        while True:
            with self._lock:
                if self._closed or len(self._peers) >= self._n:
                    break
            try:
                conn, _ = self._listener.accept()
            except OSError:  # closed
                return
            try:
                conn.settimeout(CONNECT_TIMEOUT)
                hello = _recv_exactly(conn, _TOKEN_BYTES + _RANK.size)
                token, rank = hello[:_TOKEN_BYTES], _RANK.unpack(hello[_TOKEN_BYTES:])[0]
                if not hmac.compare_digest(token, self.token) or not 1 <= rank <= self._n:
                    raise ConnectionError("not one of this run's workers")
                conn.setblocking(False)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except (OSError, ConnectionError):
                conn.close()
                continue
            with self._lock:
                if self._closed or rank - 1 in self._peers:
                    conn.close()
                    continue
                self._peers[rank - 1] = conn
        with contextlib.suppress(OSError):
            self._listener.close()

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
        with self._lock:
            self._closed = True
            peers, self._peers = list(self._peers.values()), {}
        for conn in peers:
            conn.close()
        with contextlib.suppress(OSError):
            self._listener.close()


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
            conn.sendall(token + _RANK.pack(rank))
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            conn.close()
            continue
        return Bell(conn)
    return Bell(None)
