"""The picklers (part of :mod:`evocluster._serialization`): plain pickle first, a Python hook only
when needed, cloudpickle only for what pickle cannot send by reference.

* :func:`dumps` / :func:`loads`: stdlib pickle, protocol 5, out-of-band buffers.
* :func:`dumps_args`: the arguments of a call under a policy.  The C pickler with random generators
  refused by its dispatch table (:class:`_GuardedPickler`: no Python call per object); only when
  pickle refuses something, or ``__main__`` hides a definition the workers will not have
  (:mod:`evocluster._main_names`), the checking (``strict``) or upgrading pickler, which looks at
  each object.  :class:`_UpgradingPickler` is the loky pattern: each function or class the
  workers cannot import by name travels by value with cloudpickle, in a small wrapper
  (:func:`_load_by_value`), cached.
* Random generators (``random.Random``, numpy's ``Generator``, ``RandomState`` and bit
  generators, and their subclasses) are refused wherever they sit, under every policy
  (:class:`_GeneratorFound`), through the dispatch table :func:`_guard_table_now` keeps up to date.
* :func:`dumps_results`, on the worker: plain pickle; only if it refuses, a class the master cannot
  import goes by value (as the payload it came with), a DEAP creator class as its creation
  arguments (:class:`_ResultPickler`).
"""

from __future__ import annotations

import contextlib
import copyreg
import io
import pickle
import random
import sys
import types
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

from ._main_names import _importable, _main_has_hidden, _not_on_workers, _NotOnWorkers

__all__ = ["PROTOCOL", "Frames", "dumps", "dumps_args", "dumps_results", "loads"]

#: A serialised object: the pickle stream first, then its out-of-band buffers.
Frames = list[Any]

PROTOCOL = 5


# ------------------------------------------------------------------ random generators
class _GeneratorFound(pickle.PicklingError):
    """A random generator in what would be sent to the workers: each worker would draw from its
    own copy of its state, so the numbers would repeat across workers and depend on the backend
    and the number of workers.  Refused under every policy."""


def _generator_name(obj: Any) -> str:
    """How a message names a random generator."""
    if obj is getattr(random, "_inst", None):
        return "the random module's own generator (behind random.random, random.uniform, ...)"
    cls = type(obj)
    module = cls.__module__
    if module.startswith("numpy.random"):
        module = "numpy.random"
    return f"{module}.{cls.__qualname__} object"


def _is_generator(obj: Any) -> bool:
    return _guard_table.get(type(obj)) is _refuse_generator


def _refuse_generator(obj: Any) -> Any:
    """The reduction of every random generator: refuse it."""
    raise _GeneratorFound(f"{_generator_name(obj)}, a random generator")


def _all_subclasses(classes: Iterable[type]) -> set[type]:
    found: set[type] = set()
    todo = list(classes)
    while todo:
        cls = todo.pop()
        if cls not in found:
            found.add(cls)
            todo.extend(cls.__subclasses__())
    return found


# The dispatch table of every pickler that serialises for the workers: copyreg's, with each
# generator class refused.  A dispatch table matches exact types, so every subclass is listed;
# rebuilt when copyreg's table, numpy's presence or the subclasses of random.Random change.
_guard_table: dict[Any, Any] = {}
_guard_key: tuple[int, int, int] = (-1, -1, -1)
_numpy_generators: set[type] = set()


def _guard_table_now() -> dict[Any, Any]:
    """The dispatch table that refuses random generators, brought up to date (about 2 us: once
    per callable, map and submit, not per chunk)."""
    global _guard_table, _guard_key, _numpy_generators
    nprandom = sys.modules.get("numpy.random")
    pythons = _all_subclasses([random.Random])
    key = (len(copyreg.dispatch_table), id(nprandom), len(pythons))
    if key != _guard_key:
        if nprandom is not None and not _numpy_generators:
            names = ("Generator", "RandomState", "BitGenerator")
            roots = [getattr(nprandom, name, None) for name in names]
            _numpy_generators = _all_subclasses([c for c in roots if isinstance(c, type)])
        generators = pythons | (_numpy_generators if nprandom is not None else set())
        _guard_table = {**copyreg.dispatch_table, **dict.fromkeys(generators, _refuse_generator)}
        _guard_key = key
        for cls in (_GuardedPickler, _CheckingPickler, _UpgradingPickler):
            cls.dispatch_table = _guard_table
    return _guard_table


class _GuardedPickler(pickle.Pickler):
    """The C pickler with random generators refused (its dispatch table, set by
    :func:`_guard_table_now`): no Python hook per object."""


class _CheckingPickler(pickle.Pickler):
    """The stdlib pickler, refusing ``__main__`` functions and classes the workers cannot import
    (pickle would store them by name and the workers would find none, or another one), and
    random generators."""

    #: the functions it stored by reference (a callable's: see :func:`_workers_own_generator`)
    by_reference: list[types.FunctionType] | None = None

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, (types.FunctionType, type)) and obj.__module__ == "__main__":
            why = _not_on_workers(obj)
            if why is not None:
                raise _NotOnWorkers(why)
        if self.by_reference is not None and isinstance(obj, types.FunctionType):
            self.by_reference.append(obj)
        return NotImplemented


_by_value_cache: weakref.WeakKeyDictionary[Any, bytes] = weakref.WeakKeyDictionary()

# Each class sent or received by value, by payload: the class a payload stands for in this
# process.  A class travels with every chunk that holds its instances, and it travels as the
# payload it came with (see _remember_class), so the master gets back the very bytes it sent and
# finds its own class here, without loading anything.  Loading would cost 40-100 us per chunk
# (benchmarks/RESULTS.md F6, 2026-12-02), and cloudpickle, reconciling the loaded class with the
# one it tracks, would reset that class's attributes and methods to the payload's copies
# (cloudpipe/cloudpickle#439).  Bounded: cleared when full (a class met again is then loaded once
# more).
_classes_by_payload: dict[bytes, type] = {}
_CLASSES_BY_PAYLOAD_MAX = 256


def _remember_class(cls: type, data: bytes) -> None:
    """``cls`` travels as ``data`` from this process, and ``data`` means ``cls`` here."""
    if len(_classes_by_payload) >= _CLASSES_BY_PAYLOAD_MAX:
        _classes_by_payload.clear()
    _classes_by_payload[data] = cls
    with contextlib.suppress(TypeError):
        _by_value_cache.setdefault(cls, data)


def _load_by_value(data: bytes) -> Any:
    """Receiving side of an upgraded object (module level, so pickle finds it by reference)."""
    cls = _classes_by_payload.get(data)
    if cls is not None:
        return cls
    obj = pickle.loads(data)
    if isinstance(obj, type):
        _remember_class(obj, data)
    return obj


class _UpgradingPickler(pickle.Pickler):
    """The stdlib pickler, sending by value (cloudpickle) each function or class that the
    workers could not find by name: the loky pattern, one wrapper per object, cached."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, (types.FunctionType, type)) and not _importable(obj):
            data = _by_value_cache.get(obj)
            if data is None:
                data = _cloud_bytes(obj)
                if isinstance(obj, type):
                    _remember_class(obj, data)
                else:
                    with contextlib.suppress(TypeError):
                        _by_value_cache[obj] = data
            return (_load_by_value, (data,))
        return NotImplemented


def _creator_args(cls: type) -> tuple[Any, ...] | None:
    """DEAP's creation arguments ``(name, base, attributes)`` of a class made by
    ``creator.create``; ``None`` for any other class."""
    meta = getattr(sys.modules.get("deap.creator"), "MetaCreator", None)
    if meta is None or not isinstance(cls, meta):
        return None
    args: tuple[Any, ...] | None = getattr(cls, "reduce_args", None)
    return args


def _creator_class(name: str, base: type, attributes: dict[str, Any]) -> Any:
    """Receiving side of a DEAP creator class: this process's own ``deap.creator.<name>`` when it
    was created alike (same base, same attributes), else a new one, as DEAP itself would."""
    from deap import creator

    existing = getattr(creator, name, None)
    try:
        same = bool(getattr(existing, "reduce_args", None) == (name, base, attributes))
    except Exception:  # an attribute whose == is not a truth value (a numpy array): not the same
        same = False
    return existing if same else creator.meta_create(name, base, attributes)


def _reduce_creator_class(cls: Any) -> tuple[Any, ...]:
    return (_creator_class, cls.reduce_args)


class _CreatorPickler(pickle.Pickler):
    """The C pickler with DEAP's reduction of creator classes replaced by
    :func:`_reduce_creator_class`: still no Python hook per object (a dispatch table is a dict
    lookup per object, like ``copyreg``'s).  Its class-level ``dispatch_table`` is set by
    :func:`_creator_pickler`."""


# _CreatorPickler's dispatch table, and len(copyreg.dispatch_table) when it was copied from it: a
# library that registers a reduction later (copyreg.pickle) makes it copy again
_creator_table: dict[Any, Any] = {}
_creator_table_from = -1


def _creator_pickler(meta: type) -> type[pickle.Pickler]:
    """:class:`_CreatorPickler`, its dispatch table up to date with ``copyreg``'s."""
    global _creator_table, _creator_table_from
    if len(copyreg.dispatch_table) != _creator_table_from or meta not in _creator_table:
        _creator_table = {**copyreg.dispatch_table, meta: _reduce_creator_class}
        _creator_table_from = len(copyreg.dispatch_table)
        _CreatorPickler.dispatch_table = _creator_table
    return _CreatorPickler


class _ResultPickler(_UpgradingPickler):
    """A worker's results when plain pickle refused them: a class the master cannot import goes
    by value, a DEAP creator class as its creation arguments.  Functions are not upgraded: a
    fitness that returns a lambda is told that its result cannot be pickled.  A generator in a
    result is no one's concern (the master gets a copy): copyreg's table, not the guard's."""

    dispatch_table = copyreg.dispatch_table

    def reducer_override(self, obj: Any) -> Any:
        if not isinstance(obj, type):
            return NotImplemented
        if _creator_args(obj) is not None:
            return _reduce_creator_class(obj)
        return super().reducer_override(obj)


_guard_table_now()  # the picklers refuse random.Random from the start (numpy's: once imported)


def _dumps_with(pickler_class: Any, obj: Any) -> Frames:
    buffers: list[pickle.PickleBuffer] = []
    out = io.BytesIO()
    pickler_class(out, protocol=PROTOCOL, buffer_callback=buffers.append).dump(obj)
    # getvalue(), not getbuffer(): no export is left on the BytesIO, which Python 3.13 reports
    # ("Exception ignored ... BufferError: Existing exports of data") when a frame outlives
    # it at exit; getvalue() hands over its bytes without a copy when nothing exports them
    return [memoryview(out.getvalue()), *(b.raw() for b in buffers)]


_cloud_pickler: type[pickle.Pickler] | None = None


def _guarded_cloud_pickler() -> type[pickle.Pickler]:
    """cloudpickle's pickler with random generators refused, as :class:`_GuardedPickler`."""
    global _cloud_pickler
    import cloudpickle  # lazily: most runs never need it

    table = _guard_table_now()
    if _cloud_pickler is None or _cloud_pickler.dispatch_table.maps[0] is not table:  # type: ignore[attr-defined]
        from collections import ChainMap

        base: Any = cloudpickle.CloudPickler
        _cloud_pickler = type(
            "_GuardedCloudPickler",
            (base,),
            {"dispatch_table": ChainMap(table, base.dispatch_table)},
        )
    return _cloud_pickler


def _cloud_dumps(obj: Any) -> Frames:
    return _dumps_with(_guarded_cloud_pickler(), obj)


def _cloud_bytes(obj: Any) -> bytes:
    """``obj`` by value, in one stream (cloudpickle, random generators refused)."""
    out = io.BytesIO()
    _guarded_cloud_pickler()(out, protocol=PROTOCOL).dump(obj)
    return out.getvalue()


#: What pickle raises for an object it cannot store.
_REFUSED = (pickle.PicklingError, AttributeError, TypeError, ValueError, RecursionError)


def dumps(obj: Any) -> Frames:
    """Serialise ``obj`` to frames: ``[pickle_stream, *out_of_band_buffers]``."""
    buffers: list[pickle.PickleBuffer] = []
    head = pickle.dumps(obj, protocol=PROTOCOL, buffer_callback=buffers.append)
    return [head, *(b.raw() for b in buffers)]


def loads(frames: Sequence[Any]) -> Any:
    """Rebuild an object from the frames :func:`dumps` made (buffers are used in place)."""
    return pickle.loads(frames[0], buffers=frames[1:])


_ARGS_PICKLER = {"upgrade": _UpgradingPickler, "strict": _CheckingPickler}


def dumps_args(obj: Any, policy: str) -> Frames:
    """Serialise call arguments under ``policy``.

    Fast path: the C pickler, no Python hook per object (random generators refused by its
    dispatch table).  Its output is kept unless pickle refused something, or ``__main__``
    defines a function or class the workers will not have and the stream names ``__main__``:
    only then can such an object be involved, and the checking (strict) or upgrading pickler,
    which looks at each object, does the work.

    Raises:
        pickle.PicklingError: a random generator (:class:`_GeneratorFound`), or what the policy
            refuses; or whatever the objects' own pickling code raises.
    """
    if policy == "cloudpickle":
        return _cloud_dumps(obj)
    try:  # the guard's table as of the last check (checked_dumps_args), not walked per chunk
        buffers: list[pickle.PickleBuffer] = []
        out = io.BytesIO()
        _GuardedPickler(out, protocol=PROTOCOL, buffer_callback=buffers.append).dump(obj)
        head = out.getvalue()  # bytes, not copied: the stream is searched below
        if not _main_has_hidden() or b"__main__" not in head:
            return [head, *(b.raw() for b in buffers)]
    except _GeneratorFound:
        raise
    except _REFUSED:
        pass
    return _dumps_with(_ARGS_PICKLER[policy], obj)


def dumps_results(obj: Any) -> Frames:
    """Serialise a worker's results for the master (the same for every policy: the worker does
    not know the task's).

    Fast path: the C pickler, no Python hook per object (with DEAP loaded, its creator classes go
    as :func:`_creator_class` calls).  Only if pickle refuses something -- a class the master
    cannot import by name: nested in a function, or rebuilt here by cloudpickle from what the
    master sent by value -- does the upgrading pickler, which looks at each object, do the work."""
    meta = getattr(sys.modules.get("deap.creator"), "MetaCreator", None)
    try:
        return dumps(obj) if meta is None else _dumps_with(_creator_pickler(meta), obj)
    except _REFUSED:
        return _dumps_with(_ResultPickler, obj)


# (id, size) of the __main__ namespace last scanned, and the answer: the namespace grows when the
# job defines something, so the scan runs again only then, not for every chunk.  A definition
