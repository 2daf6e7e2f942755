"""Messages on a stream socket: the one framing of the local backend's socket pairs (master and
worker) and of an isolated child's (worker and child).

A message is a list of frames (a pickle and its out-of-band buffers, or a record's parts)::

    <I frame count> <Q size> * count   frame 0 | frame 1 | ...

* :func:`send` writes a message and returns once the kernel took all of it (a worker's and a
  child's side: they have nothing else to do meanwhile);
* an :class:`Outbox` never waits: it writes what the socket takes now and keeps the rest, views
  of the caller's frames (a large numpy buffer is never copied), for the next :meth:`Outbox.flush`
  (the master's side, and a worker's towards its child: a side that must go on reading while its
  peer writes, or both would wait for ever);
* a :class:`Reader` cuts messages out of what arrives.  Small frames come through one receive
  buffer, so a read takes in every message waiting (many tiny results at once, one system call);
  a large frame that has not wholly arrived is read from then on straight into its own buffer
  (:data:`DIRECT` bytes or more: a 2 GiB array costs no second copy, benchmarks/RESULTS.md F23).
  Each frame it hands back is a writable ``memoryview`` that owns its memory (numpy arrays
  loaded from it are writable, and outlive the reader's buffer).
"""

from __future__ import annotations

import itertools
import socket
import struct
from collections import deque
from collections.abc import Sequence
from typing import Any

__all__ = ["DIRECT", "IOV_MAX", "Outbox", "ProtocolError", "Reader", "send"]

#: Most buffers handed to one ``sendmsg`` (the kernel refuses more than IOV_MAX, 1024 on Linux).
IOV_MAX = 512
#: More frames than this in one message: the stream is corrupt (a fitness wrote on the socket).
MAX_FRAMES = 1 << 16
#: Bytes a :class:`Reader` asks of the kernel per read (and the size of its receive buffer).
RECV_SIZE = 256 * 1024
#: A frame of this size or more, not wholly arrived, is read straight into its own buffer.
DIRECT = 64 * 1024
#: EPIPE rather than SIGPIPE on a closed peer, whatever MPI set; and never wait, for an Outbox
NOSIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)
DONTWAIT = NOSIGNAL | socket.MSG_DONTWAIT

_COUNT = struct.Struct("<I")
_HEADS: dict[int, struct.Struct] = {}


class ProtocolError(Exception):
    """The byte stream is not made of messages (a fitness wrote on its socket)."""


def _head(count: int) -> struct.Struct:
    """The header of a message of ``count`` frames: the count, then each frame's size."""
    head = _HEADS.get(count)
    if head is None:
        head = _HEADS[count] = struct.Struct(f"<I{count}Q")
    return head


def _views(frames: Sequence[Any]) -> list[memoryview]:
    """The message as the buffers to write, in order: its header, then its non-empty frames."""
    views = [memoryview(f).cast("B") for f in frames]
    sizes = [v.nbytes for v in views]
    return [memoryview(_head(len(sizes)).pack(len(sizes), *sizes)), *(v for v in views if v)]


def send(sock: socket.socket, frames: Sequence[Any]) -> None:
    """Send one message on a blocking socket; return once the kernel has taken all of it.

    Raises:
        OSError: the peer is gone (EPIPE, ECONNRESET).
    """
    sizes = [len(f) if type(f) is bytes else memoryview(f).nbytes for f in frames]
    head = _head(len(sizes)).pack(len(sizes), *sizes)
    sent = 0
    if len(frames) < IOV_MAX:
        sent = sock.sendmsg([head, *frames], [], NOSIGNAL)
        if sent == len(head) + sum(sizes):  # all of it at once: always, for a small message
            return
    pending = _views(frames)
    while True:
        while pending and sent >= pending[0].nbytes:
            sent -= pending.pop(0).nbytes
        if not pending:
            return
        if sent:
            pending[0] = pending[0][sent:]
        sent = sock.sendmsg(pending[:IOV_MAX], [], NOSIGNAL)


class Outbox:
    """Messages for a socket, written as far as it takes them, never waiting; the rest is kept
    in order (views of the caller's frames, which it keeps alive) until :meth:`flush`."""

    __slots__ = ("_out",)

    def __init__(self) -> None:
        self._out: deque[memoryview] = deque()  # bytes not yet written, in order

    def __bool__(self) -> bool:
        """Whether output waits for the socket to take it."""
        return bool(self._out)

    def put(self, frames: Sequence[Any]) -> None:
        """Queue one message (written by the next :meth:`flush`)."""
        self._out.extend(_views(frames))

    def send(self, sock: socket.socket, frames: Sequence[Any]) -> None:
        """Queue one message and write it as far as ``sock`` takes it now (nothing is written
        while earlier output waits: the socket is full, and the next flush goes on with it)."""
        queued = bool(self._out)
        self._out.extend(_views(frames))
        if not queued:
            self.flush(sock)

    def flush(self, sock: socket.socket) -> None:
        """Write queued output until all of it is written or ``sock`` is full.

        Raises:
            OSError: the peer is gone (the output stays queued: :meth:`clear` it).
        """
        out = self._out
        while out:
            try:
                n = sock.sendmsg(list(itertools.islice(out, IOV_MAX)), [], DONTWAIT)
            except BlockingIOError:
                return
            while n:
                if n >= out[0].nbytes:
                    n -= out.popleft().nbytes
                else:
                    out[0] = out[0][n:]
                    n = 0

    def clear(self) -> None:
        self._out.clear()


class Reader:
    """Messages from a stream socket: :meth:`fill` reads what is there, :meth:`next` cuts one
    message off (``None`` until one is whole), :meth:`recv` waits for one.

    Attributes:
        eof: the peer closed its end (or the connection was reset); what it sent before is
            still cut into messages by :meth:`next`.
    """

    __slots__ = ("_buf", "_end", "_frames", "_part", "_sizes", "_start", "_view", "eof", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.eof = False
        self._buf = bytearray(RECV_SIZE)
        self._view = memoryview(self._buf)
        self._start = 0  # first byte not yet cut into a message
        self._end = 0  # end of what was read into the buffer
        # the message being cut out: its frame sizes (once its header is in), its frames so far,
        # and the rest of a large frame being read straight into its own buffer
        self._sizes: tuple[int, ...] | None = None
        self._frames: list[memoryview] = []
        self._part: memoryview | None = None

    # ------------------------------------------------------------------ reading
    def fill(self, flags: int = 0) -> bool:
        """One read (blocking unless the socket or ``flags`` say not); False at end of file, or
        when nothing was there to read."""
        try:
            part = self._part
            if part is not None:
                n = self.sock.recv_into(part, 0, flags)
                if n:
                    self._part = part[n:] if n < part.nbytes else None
            else:
                if self._end == len(self._buf):
                    self._room(1)
                n = self.sock.recv_into(self._view[self._end :], 0, flags)
                self._end += n
        except BlockingIOError:
            return False
        except OSError:  # ECONNRESET: the peer died with unread data
            n = 0
        if n == 0:
            self.eof = True
            return False
        return True

    def drain(self) -> None:
        """Read what is already there without waiting (the peer has exited)."""
        while not self.eof and self.fill(socket.MSG_DONTWAIT):
            pass

    def recv(self) -> list[memoryview] | None:
        """The next message, waiting for it; ``None`` at end of file."""
        while (frames := self.next()) is None:
            if not self.fill():
                return None
        return frames

    # ------------------------------------------------------------------ cutting
    def next(self) -> list[memoryview] | None:
        """The next complete message from what has been read, or ``None``.

        Raises:
            ProtocolError: the stream is not made of messages.
        """
        if self._part is not None:  # a large frame is still arriving
            return None
        view, start = self._view, self._start
        if self._sizes is None:
            avail = self._end - start
            if avail < 4:
                self._room(4)
                return None
            (count,) = _COUNT.unpack_from(view, start)
            if count > MAX_FRAMES:
                raise ProtocolError(f"a message of {count} frames")
            head = 4 + 8 * count
            if avail < head:
                self._room(head)
                return None
            sizes = _head(count).unpack_from(view, start)[1:]
            start += head
            total = sum(sizes)
            if self._end - start >= total:  # all here (a small message): one copy, cut up
                msg = memoryview(bytearray(view[start : start + total]))
                self._consumed(start + total)
                frames, off = [], 0
                for size in sizes:
                    frames.append(msg[off : off + size])
                    off += size
                return frames
            self._start, self._sizes = start, sizes
        return self._cut(self._sizes)

    def _cut(self, sizes: tuple[int, ...]) -> list[memoryview] | None:
        """The frames of a message whose header is in, each into its own buffer, as they come."""
        frames, view = self._frames, self._view
        while len(frames) < len(sizes):
            size, start = sizes[len(frames)], self._start
            avail = self._end - start
            if avail >= size:
                frames.append(memoryview(bytearray(view[start : start + size])))
                self._consumed(start + size)
            elif size >= DIRECT:  # what is here, then the rest straight from the socket
                buf = bytearray(size)
                buf[:avail] = view[start : self._end]
                self._consumed(self._end)
                frames.append(memoryview(buf))
                self._part = memoryview(buf)[avail:]
                return None
            else:
                self._room(size)
                return None
        self._sizes, self._frames = None, []
        return frames

    def _consumed(self, start: int) -> None:
        """Everything before ``start`` is cut off."""
        if start == self._end:
            self._start = self._end = 0
        else:
            self._start = start

    def _room(self, needed: int) -> None:
        """Make room for ``needed`` bytes from ``_start`` on, and for one more read: move what is
        left to the front of the buffer, or into a larger one (a header larger than the buffer,
        or what :meth:`drain` reads without cutting it)."""
        start, end, size = self._start, self._end, len(self._buf)
        if size - start >= needed and end < size:
            return
        keep = end - start
        want = max(needed, keep + 1)
        if want > size:  # (the old buffer goes once the views of it are gone)
            buf = bytearray(max(want, 2 * size))
            buf[:keep] = self._view[start:end]
            self._buf, self._view = buf, memoryview(buf)
        else:
            self._buf[:keep] = self._buf[start:end]
        self._start, self._end = 0, keep
