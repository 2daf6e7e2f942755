"""Everything that crosses between master and workers is serialised here, and nowhere else.

* :func:`dumps` / :func:`loads`: stdlib pickle, protocol 5, with out-of-band buffers: a numpy
  array's data is not copied into the pickle stream but travels as its own frame, so the transport
  can send it straight from the array's memory and the receiver rebuilds the array on the received
  buffer (no extra copy on either side).
* Policies (:data:`POLICIES`), for the callable and the arguments of every call:

  - ``upgrade`` (default): stdlib pickle; a function or class that pickle cannot send by
    reference (a lambda, a closure, a nested function, something of the job's ``__main__`` that
    the workers cannot import) is sent by value with cloudpickle -- the callable itself, or one
    found inside the arguments (a GP ephemeral built from a lambda).  Only those objects are
    upgraded: the rest of the payload, and every other object in it, is plain pickle.
  - ``strict``: no upgrade; what cannot travel by reference raises :class:`SerializationError`
    on the master, before anything is dispatched, naming the object and where it sits.
  - ``cloudpickle``: the callable and the arguments by value (interactive use).

  "The workers cannot import it" is decided, not guessed: workers import the job file, so an
  object of ``__main__`` is importable there when its name is bound at the job's module level,
  outside ``if __name__ == "__main__":`` (:func:`set_worker_main_names`), and it *is* that
  definition: a function or class defined again under the main guard (or anywhere its source
  lines are not those of the module-level definition of its name) is not what the workers would
  find under that name, so it is sent by value (``strict``: refused).  The same check runs on
  every backend, the serial one included, so a job that passes under serial passes on a cluster.
* Random generators (``random.Random``, numpy's ``Generator``, ``RandomState`` and bit
  generators, and their subclasses) are refused wherever they sit in the callable or the
  arguments, under every policy: each worker would draw from its own copy, so results would
  depend on the backend and the number of workers (:class:`_GeneratorFound`).  The picklers
  refuse them through a dispatch table, which the C pickler consults per object without a
  Python call: the check costs nothing per object.
* Results (:func:`dumps_results`), on the worker, whatever the policy: plain pickle.  Instances
  of the job's module-level classes go by reference as ``__mp_main__.X``, which the master resolves
  in its ``__main__`` (:func:`evocluster._main_names.alias_worker_module`).  Only if pickle refuses,
  each class the master cannot import by name (nested in a function, or rebuilt here by
  cloudpickle from what the master sent by value) goes back by value, as the payload it came with,
  and the master finds its own class again.  DEAP pickles its creator classes by value, rebinding
  ``deap.creator.<name>`` to a new class on every load; in results they travel as their creation
  arguments instead, and the master keeps its own class when it was created alike.
* :class:`FunctionTable`: each distinct callable is serialised once per master and identified by a
  digest of its serialised form; a task carries only that key, and a worker caches the callable.
  A callable bound to shared objects carries only references to their versions; its
  :class:`Payload` names them (:func:`note_needs`), and they travel on their own
  (:mod:`evocluster._sharing`).
* :func:`pack_exception` / :func:`unpack_exception`: a fitness exception comes home as itself when
  it survives a pickle round trip, otherwise as a :class:`~evocluster.errors.RemoteError` stand-in;
  either way with the worker's formatted traceback attached as ``__cause__``.

This module is the surface the rest of the package imports; the mechanism is in three below it,
each importing only the ones before it: :mod:`evocluster._main_names` (the job's ``__main__``
names, the ``__mp_main__`` alias), :mod:`evocluster._picklers` (the picklers, the generator guard,
the cloudpickle fallback) and :mod:`evocluster._unpicklable` (the search that names what cannot be
sent and where it sits).  None of them imports :mod:`evocluster._jobfile`, which is above them.
"""

from __future__ import annotations

import io
import pickle
import threading
import traceback
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ._config import POLICIES
from ._main_names import set_worker_main_names
from ._picklers import (
    _REFUSED,
    PROTOCOL,
    Frames,
    _CheckingPickler,
    _cloud_dumps,
    _GeneratorFound,
    _guard_table_now,
    dumps,
    dumps_args,
    dumps_results,
    loads,
)
from ._unpicklable import (
    _describe,
    _explain,
    _generator_message,
    _workers_own_generator,
    explain_load_error,
)
from .errors import RemoteError, RemoteTraceback, SerializationError

__all__ = [
    "POLICIES",
    "Frames",
    "FunctionTable",
    "Payload",
    "check",
    "checked_dumps_args",
    "dumps",
    "dumps_args",
    "dumps_results",
    "explain_load_error",
    "frames_nbytes",
    "loads",
    "nest",
    "note_needs",
    "pack_exception",
    "serialize_callable",
    "set_worker_main_names",
    "unpack_exception",
]


def serialize_callable(fn: Callable[..., Any], policy: str) -> Frames:
    """Serialise ``fn`` under ``policy``.

    Raises:
        SerializationError: ``strict`` and ``fn`` cannot travel by reference, or nothing can
            serialise it.
    """
    _guard_table_now()
    if policy == "cloudpickle":
        try:
            return _cloud_dumps(fn)
        except _REFUSED as e:
            raise SerializationError(_explain(fn, "fn", e, policy)) from e
    try:
        buffers: list[pickle.PickleBuffer] = []
        out = io.BytesIO()
        pickler = _CheckingPickler(out, protocol=PROTOCOL, buffer_callback=buffers.append)
        pickler.by_reference = []
        pickler.dump(fn)
    except _REFUSED as e:
        if policy == "strict" or isinstance(e, _GeneratorFound):
            raise SerializationError(_explain(fn, "fn", e, policy)) from e
        try:
            return _cloud_dumps(fn)
        except _REFUSED as e2:
            raise SerializationError(_explain(fn, "fn", e2, policy)) from e2
    own = _workers_own_generator(pickler.by_reference)
    if own is not None:
        path, generator = own
        raise SerializationError(
            _generator_message("fn", " -> ".join(["fn", *path, _describe(generator)]), "")
        )
    return [memoryview(out.getvalue()), *(b.raw() for b in buffers)]  # no export (see _picklers)


def check(obj: Any, label: str, policy: str) -> None:
    """Raise :class:`SerializationError` now if ``obj`` (arguments) could not reach the workers."""
    checked_dumps_args(obj, obj, label, policy)


def checked_dumps_args(obj: Any, blame: Any, label: str, policy: str) -> Frames:
    """:func:`dumps_args`, raising :class:`SerializationError` that names the part of ``blame``
    (what the user passed, labelled ``label``) that cannot be pickled."""
    _guard_table_now()  # a generator class defined (or numpy imported) since the last call
    try:
        return dumps_args(obj, policy)
    except _REFUSED as e:
        raise SerializationError(_explain(blame, label, e, policy)) from e


NEST_INLINE_MAX = 64 * 1024


def nest(frames: Sequence[Any]) -> list[Any]:
    """Prepare frames to travel inside another record: a large frame goes out of band (never
    copied into the record's pickle stream), a small one in band, so that a small task is a
    single message.  On the other side both come back as buffers that :func:`loads` accepts."""
    return [
        bytes(f) if memoryview(f).nbytes <= NEST_INLINE_MAX else pickle.PickleBuffer(f)
        for f in frames
    ]


def frames_nbytes(frames: Sequence[Any]) -> int:
    """Total size in bytes of a list of frames."""
    return sum(memoryview(f).nbytes for f in frames)


# What serialising a callable found it needs besides its own frames (the versions of shared
# objects it refers to: evocluster._sharing), collected per thread while FunctionTable serialises.
_needs = threading.local()


def note_needs(needed: Iterable[Any]) -> None:
    """Called while an object is serialised (its ``__reduce__``): the payload being made needs
    ``needed`` too (:class:`Payload`).  Does nothing outside :meth:`FunctionTable.lookup`."""
    found: list[Any] | None = getattr(_needs, "found", None)
    if found is not None:
        found.extend(n for n in needed if n not in found)


class Payload(list[Any]):
    """A serialised callable's frames, with what it ``needs`` on each worker besides them (the
    versions of shared objects it refers to, which travel on their own: evocluster._sharing)."""

    __slots__ = ("needs",)

    def __init__(self, frames: Iterable[Any], needs: tuple[Any, ...]) -> None:
        super().__init__(frames)
        self.needs = needs


class FunctionTable:
    """Master-side registry of callables: serialise each once, name it by a digest.

    ``lookup(fn)`` returns ``(key, payload)``; ``payload`` is the serialised callable (frames),
    sent to a worker the first time that worker sees ``key``.  Callables that can be weakly
    referenced are remembered by identity, so a 50 MB closure is pickled once per run, not once
    per ``map``.  A callable that refers to shared objects gets a :class:`Payload` naming their
    versions; the table refers to those weakly (a new ``share`` frees the old version once the
    jobs that use it are done).
    """

    def __init__(self, maxsize: int = 256) -> None:
        self._maxsize = maxsize
        # id(fn) -> (weakref or strong ref, key, payload, weak references to its needs);
        # bounded, least recently used first out.
        self._by_id: OrderedDict[tuple[int, str], tuple[Any, bytes, Frames, tuple[Any, ...]]] = (
            OrderedDict()
        )

    def lookup(self, fn: Callable[..., Any], policy: str = "upgrade") -> tuple[bytes, Frames]:
        """Return ``(key, payload)`` for ``fn`` under ``policy``.

        Raises:
            TypeError: ``fn`` is not callable.
            SerializationError: ``fn`` cannot be sent under ``policy``.
        """
        if not callable(fn):
            raise TypeError(f"{fn!r} is not callable")
        ident = (id(fn), policy)
        entry = self._by_id.get(ident)
        if entry is not None:
            held, key, payload, weak_needs = entry
            target = held() if isinstance(held, weakref.ref) else held
            needed = tuple(r() for r in weak_needs)
            # the same object, not a new one that reuses a dead one's id
            if target is fn and None not in needed:
                self._by_id.move_to_end(ident)
                return key, Payload(payload, needed) if needed else payload
        found: list[Any] = []
        _needs.found = found
        try:
            payload = serialize_callable(fn, policy)
        finally:
            _needs.found = None
        # here, not at the top: only the master digests (~6 ms per worker rank:
        # benchmarks/RESULTS.md F3, 2026-12-02)
        import hashlib

        digest = hashlib.blake2b(digest_size=16)
        for frame in payload:
            digest.update(frame)
        key = digest.digest()
        try:
            ref: Any = weakref.ref(fn)
        except TypeError:  # builtins, some callables: keep them alive instead
            ref = fn
        self._by_id[ident] = (ref, key, payload, tuple(weakref.ref(n) for n in found))
        if len(self._by_id) > self._maxsize:
            self._by_id.popitem(last=False)
        return key, Payload(payload, tuple(found)) if found else payload


def pack_exception(exc: BaseException, where: str) -> dict[str, Any]:
    """Describe ``exc`` (raised on a worker at ``where``) so that the master can rebuild it.

    The exception object itself is included only if it survives a pickle round trip *here*: an
    exception whose class has a custom ``__init__`` signature pickles fine but fails to unpickle,
    which must never reach the master (multiprocessing.Pool hangs on exactly that).
    """
    try:  # an exception's own __str__ may raise too: it must not end the worker
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        message = str(exc)
    except BaseException as e:
        message = f"<str() of the exception raised {type(e).__name__}>"
        tb = f"{type(exc).__module__}.{type(exc).__qualname__}: {message}\n"
    info: dict[str, Any] = {
        "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "message": message,
        "traceback": f'\n"""\n{where}:\n{tb}"""',
        "pickled": None,
        "where": where,
    }
    try:
        blob = pickle.dumps(exc, protocol=PROTOCOL)
        pickle.loads(blob)
        info["pickled"] = blob
    except BaseException:  # any failure: the stand-in below carries the type, message, traceback
        pass
    return info


def unpack_exception(info: dict[str, Any]) -> BaseException:
    """Rebuild the exception :func:`pack_exception` described; its cause is the remote traceback."""
    exc: BaseException | None = None
    if info.get("pickled") is not None:
        try:
            exc = pickle.loads(info["pickled"])
        except BaseException:  # its class's own unpickling code: fall back to the stand-in
            exc = None
    if not isinstance(exc, BaseException):
        exc = RemoteError(info["type"], info["message"])
    exc.__cause__ = RemoteTraceback(info["traceback"])
    return exc
