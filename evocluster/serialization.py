"""Everything that crosses between master and workers is serialised here, and nowhere else.

* :func:`dumps` / :func:`loads`: stdlib pickle, protocol 5, with out-of-band buffers: a numpy
  array's data is not copied into the pickle stream but travels as its own frame, so the transport
  can send it straight from the array's memory and the receiver rebuilds the array on the received
  buffer (no extra copy on either side).
* :class:`FunctionTable`: each distinct callable is serialised once per master and identified by a
  digest of its serialised form; a task carries only that key, and a worker caches the callable.
* :func:`pack_exception` / :func:`unpack_exception`: a fitness exception comes home as itself when
  it survives a pickle round trip, otherwise as a :class:`~evocluster.errors.RemoteError` stand-in;
  either way with the worker's formatted traceback attached as ``__cause__``.
"""

from __future__ import annotations

import hashlib
import pickle
import traceback
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from .errors import RemoteError, RemoteTraceback

__all__ = [
    "Frames",
    "FunctionTable",
    "dumps",
    "frames_nbytes",
    "loads",
    "nest",
    "pack_exception",
    "unpack_exception",
]

#: A serialised object: the pickle stream first, then its out-of-band buffers.
Frames = list[Any]

PROTOCOL = 5


def dumps(obj: Any) -> Frames:
    """Serialise ``obj`` to frames: ``[pickle_stream, *out_of_band_buffers]``."""
    buffers: list[pickle.PickleBuffer] = []
    head = pickle.dumps(obj, protocol=PROTOCOL, buffer_callback=buffers.append)
    return [head, *(b.raw() for b in buffers)]


def loads(frames: Sequence[Any]) -> Any:
    """Rebuild an object from the frames :func:`dumps` made (buffers are used in place)."""
    return pickle.loads(frames[0], buffers=frames[1:])


def nest(frames: Sequence[Any]) -> list[pickle.PickleBuffer]:
    """Wrap frames so that, inside another record, they travel out of band (never copied into its
    pickle stream); on the other side they come back as buffers that :func:`loads` accepts."""
    return [pickle.PickleBuffer(f) for f in frames]


def frames_nbytes(frames: Sequence[Any]) -> int:
    """Total size in bytes of a list of frames."""
    return sum(memoryview(f).nbytes for f in frames)


class FunctionTable:
    """Master-side registry of callables: serialise each once, name it by a digest.

    ``lookup(fn)`` returns ``(key, payload)``; ``payload`` is the serialised callable (frames),
    sent to a worker the first time that worker sees ``key``.  Callables that can be weakly
    referenced are remembered by identity, so a 50 MB closure is pickled once per run, not once
    per ``map``.
    """

    def __init__(self, maxsize: int = 256) -> None:
        self._maxsize = maxsize
        # id(fn) -> (weakref or strong ref, key, payload); bounded, least recently used first out.
        self._by_id: OrderedDict[int, tuple[Any, bytes, Frames]] = OrderedDict()

    def lookup(self, fn: Callable[..., Any]) -> tuple[bytes, Frames]:
        entry = self._by_id.get(id(fn))
        if entry is not None:
            held, key, payload = entry
            target = held() if isinstance(held, weakref.ref) else held
            if target is fn:  # the same object, not a new one that reuses a dead one's id
                self._by_id.move_to_end(id(fn))
                return key, payload
        payload = dumps(fn)
        digest = hashlib.blake2b(digest_size=16)
        for frame in payload:
            digest.update(frame)
        key = digest.digest()
        try:
            ref: Any = weakref.ref(fn)
        except TypeError:  # builtins, some callables: keep them alive instead
            ref = fn
        self._by_id[id(fn)] = (ref, key, payload)
        if len(self._by_id) > self._maxsize:
            self._by_id.popitem(last=False)
        return key, payload


def pack_exception(exc: BaseException, where: str) -> dict[str, Any]:
    """Describe ``exc`` (raised on a worker at ``where``) so that the master can rebuild it.

    The exception object itself is included only if it survives a pickle round trip *here*: an
    exception whose class has a custom ``__init__`` signature pickles fine but fails to unpickle,
    which must never reach the master (multiprocessing.Pool hangs on exactly that).
    """
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    info: dict[str, Any] = {
        "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "message": str(exc),
        "traceback": f'\n"""\n{where}:\n{tb}"""',
        "pickled": None,
    }
    try:
        blob = pickle.dumps(exc, protocol=PROTOCOL)
        pickle.loads(blob)
        info["pickled"] = blob
    except Exception:  # any failure: the stand-in below carries the type, message and traceback
        pass
    return info


def unpack_exception(info: dict[str, Any]) -> BaseException:
    """Rebuild the exception :func:`pack_exception` described; its cause is the remote traceback."""
    exc: BaseException | None = None
    if info.get("pickled") is not None:
        try:
            exc = pickle.loads(info["pickled"])
        except Exception:
            exc = None
    if not isinstance(exc, BaseException):
        exc = RemoteError(info["type"], info["message"])
    exc.__cause__ = RemoteTraceback(info["traceback"])
    return exc
