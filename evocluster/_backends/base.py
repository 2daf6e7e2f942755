"""The small contract every backend implements, and the frame envelope they share.

A backend has two halves:

* a :class:`Transport`, on the master, that moves frames to and from ``n_workers`` workers and
  waits for incoming frames without spinning a core;
* a :class:`Channel`, in each worker, that receives and sends frames for the serve loop in
  :mod:`evocluster._worker` (defined below the worker, in :mod:`evocluster._channel`, and
  re-exported here).

Neither half knows what the frames mean: :mod:`evocluster._protocol` and the scheduler in
:mod:`evocluster._executor` do.  A message of frames ``[head, *buffers]`` travels as an *envelope*
(part count, part sizes and, when it is small, the head itself) followed by its parts, each part
cut into pieces of at most :data:`PIECE` bytes so that no single transfer exceeds what a 32-bit
count can describe (messages larger than 2 GiB work on any MPI).
"""

from __future__ import annotations

import abc
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any

from .._channel import Channel
from .._serialization import Frames

__all__ = [
    "PIECE",
    "Backoff",
    "Channel",
    "Event",
    "Transport",
    "decode_envelope",
    "encode_envelope",
    "pieces",
]

#: Largest single transfer (bytes).  1 GiB: far below the 2**31 - 1 limit of MPI's int counts.
PIECE = 1 << 30
#: A head up to this size travels inside the envelope (one message for a typical small task).
INLINE_MAX = 1 << 20

_COUNTS = struct.Struct("<QQ")

#: What :meth:`Transport.poll` returns: ``(worker, frames, None)`` for a message, or
#: ``(worker, None, reason)`` when the worker is gone (its process died, its pipe closed).
Event = tuple[int, "Frames | None", "str | None"]


def encode_envelope(frames: Sequence[Any]) -> tuple[bytes, list[memoryview]]:
    """Return ``(envelope, parts)``: the envelope bytes to send first, then each part."""
    head = memoryview(frames[0]).cast("B")
    inline = head.nbytes <= INLINE_MAX
    parts = [memoryview(f).cast("B") for f in (frames[1:] if inline else frames)]
    sizes = [p.nbytes for p in parts]
    env = _COUNTS.pack(len(sizes), 1 if inline else 0) + struct.pack(f"<{len(sizes)}Q", *sizes)
    return (env + head.tobytes() if inline else env), parts


def decode_envelope(env: Any) -> tuple[memoryview | None, list[int]]:
    """Return ``(inline_head_or_None, part_sizes)`` from an envelope."""
    view = memoryview(env).cast("B")
    n, inline = _COUNTS.unpack_from(view)
    sizes = list(struct.unpack_from(f"<{n}Q", view, _COUNTS.size))
    start = _COUNTS.size + 8 * n
    return (view[start:] if inline else None), sizes


def pieces(nbytes: int) -> list[tuple[int, int]]:
    """The ``(start, stop)`` byte ranges a part of ``nbytes`` is cut into (at least one)."""
    return [(a, min(a + PIECE, nbytes)) for a in range(0, nbytes, PIECE)] or [(0, 0)]


def assemble(head: memoryview | None, parts: list[Any]) -> Frames:
    """Frames from a decoded envelope's inline head (if any) and the received parts."""
    return [head, *parts] if head is not None else parts


class Backoff:
    """Sleep lengths for a polling loop that must not spin.

    Each sleep is ``fraction`` of the time waited so far, clamped to ``[low, high]``.  A
    sleep-and-wake costs CPU (10-60 us: benchmarks/RESULTS.md F7, 2026-12-02), so wake-ups
    should be few while nothing happens; but work usually follows work, so the first ones come
    quickly, and the answer to a message never comes later than about ``fraction`` of the time
    the loop had waited for it.

    ``latency``, when given, caps each sleep at ``latency`` (something is expected that soon), or
    at :data:`LONG_WAIT_FRACTION` of the time waited once that is more: a wait far longer than
    expected (long evaluations after short ones) still wakes ever more rarely."""

    __slots__ = ("_fraction", "_high", "_latency", "_low", "_since")

    #: the sleep cap of a wait with a ``latency``, as a fraction of the time waited
    LONG_WAIT_FRACTION = 0.01

    def __init__(
        self, low: float, high: float, fraction: float, latency: float | None = None
    ) -> None:
        self._low, self._high, self._fraction, self._latency = low, high, fraction, latency
        self.reset()

    def reset(self) -> None:
        self._since = time.monotonic()

    def next(self) -> float:
        """The next sleep length."""
        waited = time.monotonic() - self._since
        sleep = self._fraction * waited
        if self._latency is not None:
            sleep = min(sleep, max(self._latency, self.LONG_WAIT_FRACTION * waited))
        return min(self._high, max(self._low, sleep))


class Transport(abc.ABC):
    """Master side of a backend.  Used by one thread only (the executor's scheduler thread),
    except :meth:`wakeup`, which any thread may call."""

    #: Number of workers this transport reaches (fixed for its lifetime).
    n_workers: int
    #: Whether a large message may be sent to a busy worker.  False where it would wait, whole,
    #: on the master until the worker reads it after its current evaluation (the local pool's
    #: sockets: :meth:`send` queues what the socket does not take, and the chunk would be tied
    #: to that worker while another may be idle sooner); True where the MPI library moves it.
    async_sends: bool = False
    #: Whether :meth:`send` evaluates a task before it returns (the serial backend): the
    #: scheduler then sends one task at a time, so each result is delivered before the next runs.
    evaluates_on_send: bool = False
    #: The master's host, named as its workers name theirs in their READY: a large shared version
    #: reaches the workers on it through shared memory (:class:`evocluster._sharing.Segment`).
    #: None: never (the workers are not separate processes, or may not share the master's
    #: ``/dev/shm``).
    host: str | None = None
    #: Set by the pool that drives this transport: what a worker is evaluating now, in words, for
    #: a transport that reports a worker's death itself (MPI, where the launcher then ends the
    #: job at once).  Called from another thread: it must only read.
    work_of: Callable[[int], str] | None = None
    #: Set likewise: a worker's label for messages, with its host and pid once it has said them
    #: (:meth:`describe` until then).
    label_of: Callable[[int], str] | None = None

    @abc.abstractmethod
    def send(self, worker: int, frames: Frames, idle: bool = True) -> None:
        """Start sending ``frames`` to ``worker``; keep the buffers alive until sent.

        ``idle`` says whether the worker has nothing else to do (so it is receiving now) or will
        read this only after its current work.  May block while the worker is not reading, so the
        scheduler sends large messages only to idle workers."""

    @abc.abstractmethod
    def poll(self, timeout: float | None, latency: float | None = None) -> list[Event]:
        """Wait up to ``timeout`` seconds (``None``: until something happens) for messages.

        Returns early, possibly with an empty list, after :meth:`wakeup`.  Must not spin a core.
        ``latency``: how late a message may be noticed, for a transport that sleep-polls (one
        that blocks in the kernel ignores it); the scheduler derives it from evaluation times."""

    @abc.abstractmethod
    def wakeup(self) -> None:
        """Make a current or the next :meth:`poll` return at once (thread-safe)."""

    @abc.abstractmethod
    def clear_wakeup(self) -> None:
        """Forget earlier :meth:`wakeup` calls (before the scheduler looks for work)."""

    @abc.abstractmethod
    def close(self, stop_frames: Frames) -> None:
        """Send ``stop_frames`` to every live worker and release the transport."""

    def stats(self) -> dict[str, int]:
        """Counters of the transport's own, beyond the messages the scheduler counts."""
        return {}

    def describe(self, worker: int) -> str:
        """A label for messages: which worker, where."""
        return f"worker {worker + 1} of {self.n_workers}"

    def abort(self, code: int) -> None:  # noqa: B027 - optional hook, default does nothing
        """End every worker at once after a fatal error (MPI: ``MPI_Abort``)."""
