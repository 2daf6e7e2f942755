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
  in its ``__main__`` (:func:`evocluster.jobfile.alias_worker_module`).  Only if pickle refuses,
  each class the master cannot import by name (nested in a function, or rebuilt here by
  cloudpickle from what the master sent by value) goes back by value, as the payload it came with,
  and the master finds its own class again.  DEAP pickles its creator classes by value, rebinding
  ``deap.creator.<name>`` to a new class on every load; in results they travel as their creation
  arguments instead, and the master keeps its own class when it was created alike.
* :class:`FunctionTable`: each distinct callable is serialised once per master and identified by a
  digest of its serialised form; a task carries only that key, and a worker caches the callable.
  A callable bound to shared objects carries only references to their versions; its
  :class:`Payload` names them (:func:`note_needs`), and they travel on their own
  (:mod:`evocluster.sharing`).
* :func:`pack_exception` / :func:`unpack_exception`: a fitness exception comes home as itself when
  it survives a pickle round trip, otherwise as a :class:`~evocluster.errors.RemoteError` stand-in;
  either way with the worker's formatted traceback attached as ``__cause__``.
"""

from __future__ import annotations

import contextlib
import copyreg
import functools
import io
import os
import pickle
import random
import sys
import threading
import traceback
import types
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .config import POLICIES
from .errors import RemoteError, RemoteTraceback, SerializationError
from .jobfile import alias_worker_module, is_main_guard

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

#: A serialised object: the pickle stream first, then its out-of-band buffers.
Frames = list[Any]

PROTOCOL = 5


# Names bound at the job's module level, outside its main guard: what the workers' ``__main__``
# (the job imported as ``__mp_main__``) will have.  Empty until a launcher or pool sets it.
_worker_main_names: frozenset[str] = frozenset()


def set_worker_main_names(names: Iterable[str]) -> None:
    """Declare which ``__main__`` names the workers can import (the job's module-level names).

    Every master calls it as it starts its pool; it also makes ``__mp_main__.X``, the name a
    worker gives an object of the job, resolve here."""
    global _worker_main_names, _hidden_seen
    _worker_main_names = frozenset(names)
    _hidden_seen = (0, -1, False)
    _importable_cache.clear()
    _verdicts.clear()
    alias_worker_module()


# ------------------------------------------------------------------ the job's own definitions
# Where the job file defines each module-level name (outside its main guard): for each
# definition, (first line, decorators included; the ``def``/``class`` line; last line); and the
# names its main guard defines again.  Parsed once per job file (and again if it changes), on the
# master only.
_Spans = dict[str, list[tuple[int, int, int]]]
_spans_of: tuple[tuple[str, int, int], _Spans, frozenset[str]] | None = None


def _definitions(path: str) -> tuple[_Spans, frozenset[str]] | None:
    """The module-level definitions of the job file ``path``, and the names among them that its
    main guard defines again; None if it cannot be read."""
    global _spans_of
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = (path, st.st_mtime_ns, st.st_size)
    if _spans_of is not None and _spans_of[0] == key:
        return _spans_of[1], _spans_of[2]
    import ast

    try:
        with open(path, "rb") as fh:
            tree = ast.parse(fh.read())
    except (OSError, SyntaxError, ValueError):
        return None
    spans: _Spans = {}
    guarded: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for stmt in body:
            if isinstance(stmt, ast.If) and is_main_guard(stmt.test):
                visit(stmt.orelse)  # the guarded body never runs on a worker
                guarded.update(
                    node.name
                    for node in ast.walk(stmt)
                    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                )
            elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                first = min([stmt.lineno, *(d.lineno for d in stmt.decorator_list)])
                last = stmt.end_lineno or stmt.lineno
                spans.setdefault(stmt.name, []).append((first, stmt.lineno, last))
            else:  # module level still: the bodies of if / try / with / for at module level
                for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                    for part in getattr(stmt, field, None) or []:
                        visit([part] if isinstance(part, ast.stmt) else list(part.body))

    visit(tree.body)
    shadowed = frozenset(guarded & spans.keys())
    _spans_of = (key, spans, shadowed)
    return spans, shadowed


def _code_of(obj: Any) -> types.CodeType | None:
    """The code whose source lines place ``obj``: a function's own (through ``functools.wraps``
    wrappers), for a class one of its methods'; None when there is none."""
    if isinstance(obj, type):
        for member in vars(obj).values():
            inner = getattr(member, "__func__", None) or getattr(member, "fget", None) or member
            code = getattr(inner, "__code__", None)
            if isinstance(code, types.CodeType):
                return code
        return None
    for _ in range(100):
        inner = getattr(obj, "__wrapped__", None)
        if inner is None:
            break
        obj = inner
    code = getattr(obj, "__code__", None)
    return code if isinstance(code, types.CodeType) else None


def _same_file(a: str, b: str) -> bool:
    return a == b or os.path.realpath(a) == os.path.realpath(b)


def _module_level_definition(obj: Any) -> tuple[str, int] | None:
    """For a function or class of ``__main__`` whose name the job's module level binds: the
    module-level definition of that name (file, line) when ``obj`` is *not* it (defined again
    under the main guard, say), else None (it is, or the source cannot tell)."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    code = _code_of(obj)
    if not main_file or code is None or not _same_file(code.co_filename, main_file):
        return None  # no source to compare with (or code from elsewhere): the name decides
    spans = (_definitions(main_file) or ({}, None))[0].get(obj.__qualname__.split(".", 1)[0])
    if not spans:
        return None  # bound by an assignment (``Point = namedtuple(...)``): the name decides
    line = getattr(obj, "__firstlineno__", None) or code.co_firstlineno
    whole = isinstance(obj, type) or "." in obj.__qualname__  # a method: anywhere in the class
    for first, header, last in spans:
        if first <= line <= (last if whole else header):
            return None
    return main_file, spans[-1][1]


_verdicts: weakref.WeakKeyDictionary[Any, str | None] = weakref.WeakKeyDictionary()


def _not_on_workers(obj: Any) -> str | None:
    """Why the workers cannot import this function or class of ``__main__`` by its name (None:
    they can).  Remembered per object."""
    try:
        return _verdicts[obj]
    except (KeyError, TypeError):
        pass
    why = _why_not_on_workers(obj)
    with contextlib.suppress(TypeError):
        _verdicts[obj] = why
    return why


def _why_not_on_workers(obj: Any) -> str | None:
    qualname = obj.__qualname__
    if "<" in qualname:
        return None  # a lambda or a local: pickle itself refuses it
    if qualname.split(".")[0] not in _worker_main_names:
        return (
            f"{_describe(obj)} is defined in the job's __main__ but not at its module level "
            "(outside `if __name__ == '__main__':`), so the workers cannot import it"
        )
    other = _module_level_definition(obj)
    if other is None:
        return None
    name = qualname.split(".")[0]
    return (
        f"{_describe(obj)} is not the {name!r} that the job defines at module level "
        f"({os.path.basename(other[0])}:{other[1]}), which is what the workers would import "
        f"under that name and run instead: it was defined again (under `if __name__ == "
        "'__main__':`, say); give the two different names"
    )


class _NotOnWorkers(pickle.PicklingError):
    """An object of ``__main__`` that exists on the master only."""


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


def _workers_own_generator(functions: list[types.FunctionType]) -> tuple[list[str], Any] | None:
    """A random generator that functions sent by reference carry without pickle seeing it: a
    default value, or a global of the job's that their code reads (each worker makes its own
    when it imports the job).  Returns where it sits and the generator, or None."""
    seen: set[int] = set()
    todo: list[tuple[types.FunctionType, tuple[Any, ...]]] = [(fn, (fn,)) for fn in functions]
    while todo:
        fn, path = todo.pop()
        if id(fn) in seen:
            continue
        seen.add(id(fn))
        found = _defaults(fn) if fn.__defaults__ or fn.__kwdefaults__ else []
        if fn.__module__ == "__main__":
            space = fn.__globals__
            found += [(f"global {n!r}", space[n]) for n in _names(fn.__code__) if n in space]
        for label, value in found:
            if _is_generator(value):  # the path in words only now: a callable's check is cheap
                where = [_describe(p) if isinstance(p, types.FunctionType) else p for p in path]
                return [*where, label], value
            if isinstance(value, types.FunctionType) and value.__module__ == "__main__":
                todo.append((value, (*path, label)))
    return None


def _names(code: types.CodeType) -> set[str]:
    """The global names ``code`` and the code nested in it (lambdas, comprehensions) read."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


def _defaults(fn: types.FunctionType) -> list[tuple[str, Any]]:
    """A function's default values, labelled by parameter."""
    code = fn.__code__
    defaults = fn.__defaults__ or ()
    positional = code.co_varnames[: code.co_argcount]
    named = positional[len(positional) - len(defaults) :]
    return [
        *((f"default of {n!r}", v) for n, v in zip(named, defaults, strict=False)),
        *((f"default of {k!r}", v) for k, v in (fn.__kwdefaults__ or {}).items()),
    ]


_importable_cache: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def _importable(obj: Any) -> bool:
    """Whether a worker can find this function or class by its module and qualified name."""
    try:
        return _importable_cache[obj]
    except (KeyError, TypeError):
        pass
    qualname: str = getattr(obj, "__qualname__", "")
    module_name = getattr(obj, "__module__", None)
    if not qualname or "<" in qualname or module_name is None:
        found = False  # <lambda>, f.<locals>.g
    elif module_name == "__main__":
        found = _not_on_workers(obj) is None
    else:
        target: Any = sys.modules.get(module_name)
        for part in qualname.split("."):
            target = getattr(target, part, None)
        found = target is obj
    with contextlib.suppress(TypeError):
        _importable_cache[obj] = found
    return found


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
    return [out.getbuffer(), *(b.raw() for b in buffers)]


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
# redefined under the main guard does not grow it: a job whose main guard defines a module-level
# name again counts as hiding something from the start (its source says so).
_hidden_seen: tuple[int, int, bool] = (0, -1, False)


def _main_has_hidden() -> bool:
    """Whether ``__main__`` holds (or may come to hold, by a definition its main guard repeats)
    a function or class the workers will not have under its name.  Only then can a successful
    plain pickle still fail on a worker, or find another object there: objects nested in
    functions, and lambdas, already make plain pickle fail here."""
    global _hidden_seen
    main = sys.modules.get("__main__")
    space = vars(main) if main is not None else {}
    if _hidden_seen[:2] == (id(space), len(space)):
        return _hidden_seen[2]
    main_file = space.get("__file__")
    found = _definitions(main_file) if isinstance(main_file, str) else None
    hidden = bool(found and found[1]) or any(
        isinstance(obj, (types.FunctionType, type))
        and obj.__module__ == "__main__"
        and _not_on_workers(obj) is not None
        for obj in list(space.values())
    )
    _hidden_seen = (id(space), len(space), hidden)
    return hidden


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
    return [out.getbuffer(), *(b.raw() for b in buffers)]


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


def _describe(obj: Any) -> str:
    """A short, recognisable name for an object in a message."""
    if isinstance(obj, types.FunctionType):
        code = obj.__code__
        where = f"{os.path.basename(code.co_filename)}:{code.co_firstlineno}"
        name = "<lambda>" if obj.__name__ == "<lambda>" else f"function {obj.__qualname__}"
        return f"{name} defined at {where}"
    if isinstance(obj, type):
        return f"class {obj.__module__}.{obj.__qualname__}"
    if isinstance(obj, types.ModuleType):
        return f"module {obj.__name__}"
    if _is_generator(obj):
        return _generator_name(obj)
    return f"{type(obj).__qualname__} object"


def _children(obj: Any, policy: str) -> list[tuple[str, Any]]:
    """The parts of ``obj`` pickle would have to store under ``policy``, labelled as a path
    segment."""
    if isinstance(obj, functools.partial):
        return [
            ("functools.partial.func", obj.func),
            *((f"functools.partial.args[{i}]", a) for i, a in enumerate(obj.args)),
            *((f"functools.partial.keywords[{k!r}]", v) for k, v in obj.keywords.items()),
        ]
    if isinstance(obj, types.MethodType):
        return [(".__self__", obj.__self__), (".__func__", obj.__func__)]
    if isinstance(obj, types.FunctionType):
        code = obj.__code__
        cells = obj.__closure__ or ()
        found = [
            (f"closure variable {name!r}", cell.cell_contents)
            for name, cell in zip(code.co_freevars, cells, strict=False)
            if _cell_filled(cell)
        ]
        found += _defaults(obj)
        if policy != "strict" and (obj.__module__ == "__main__" or not _importable(obj)):
            # sent by value (cloudpickle): with the globals its code reads (modules by name)
            space = obj.__globals__
            found += [
                (f"global {n!r}", space[n])
                for n in sorted(_names(code))
                if n in space and not isinstance(space[n], types.ModuleType)
            ]
        return found
    if isinstance(obj, types.BuiltinMethodType) and not isinstance(
        obj.__self__, (types.ModuleType, type(None))
    ):
        return [(".__self__", obj.__self__)]  # random.random: a method of random's generator
    if isinstance(obj, (list, tuple)):
        return [(f"[{i}]", v) for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        return [(f"[{k!r}]", v) for k, v in obj.items()]
    if isinstance(obj, (set, frozenset)):
        return [("{element}", v) for v in obj]
    state = getattr(obj, "__dict__", None)
    if isinstance(state, dict):
        return [(f".{k}", v) for k, v in state.items()]
    return []


def _cell_filled(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty cell raises
    except ValueError:
        return False
    return True


def _locate(
    obj: Any,
    path: list[str],
    policy: str,
    depth: int = 0,
    kind: type[BaseException] | tuple[type[BaseException], ...] = _REFUSED,
) -> tuple[list[str], Any, str]:
    """Walk down to the innermost part of ``obj`` that cannot be pickled (for a reason of
    ``kind``); return its path, the part itself, and pickle's reason."""
    reason = ""
    for label, child in _children(obj, policy) if depth < 30 else []:
        try:
            dumps_args(child, policy)
        except kind as e:
            reason = str(e)
            return _locate(child, [*path, label], policy, depth + 1, kind)
        except _REFUSED:
            continue  # refused for another reason: not what is looked for
    if not reason:
        try:
            dumps_args(obj, policy)
        except _REFUSED as e:
            reason = str(e)
    return path, obj, reason


def _explain(obj: Any, root: str, exc: BaseException, policy: str) -> str:
    kind = _GeneratorFound if isinstance(exc, _GeneratorFound) else _REFUSED
    path, culprit, reason = _locate(obj, [root], policy, kind=kind)
    reason = (reason or str(exc) or type(exc).__name__).splitlines()[0]
    chain = " -> ".join([*path, _describe(culprit)])
    if isinstance(exc, _GeneratorFound) or _is_generator(culprit):
        return _generator_message(root, chain, "" if _is_generator(culprit) else reason)
    if root == "fn" and policy == "strict":
        ways = (
            "define it at module level of the job file (outside `if __name__ == '__main__':`) "
            "so that the workers import it by name, or use the serialization policy 'upgrade' "
            "(the default), which sends such callables by value with cloudpickle"
        )
    elif root == "fn":
        ways = "make it a module-level function of the job file"
    elif root.startswith("shared object"):
        ways = (
            "share data pickle can store (numbers, containers, numpy arrays, instances of "
            "module-level classes of the job file), not what holds a lock, a file, a socket or "
            "a process; make those inside the fitness instead"
        )
    else:
        ways = (
            "define its class or function at module level of the job file (outside "
            "`if __name__ == '__main__':`), or keep it out of the arguments (the callable may "
            "close over it: callables are upgraded to cloudpickle and sent once per worker)"
        )
    return (
        f"cannot send {root} to the workers under serialization policy {policy!r}: {chain} "
        f"cannot be pickled ({reason}). Ways out: {ways}."
    )


def _generator_message(root: str, chain: str, inside: str) -> str:
    inside = f" (inside it: {inside})" if inside else ""
    return (
        f"cannot send {root} to the workers: {chain} is a random generator{inside}. Each worker "
        "would draw from its own copy of it, so the numbers would repeat across workers and the "
        "results depend on the backend and the number of workers. Draw from evocluster.rng() "
        "inside the fitness instead (a generator seeded for each evaluation: the engine's loops "
        "seed it; with map, call the fitness through evocluster.rng.call), or pass a seed, not a "
        "generator, and make the generator inside the fitness."
    )


def explain_load_error(exc: BaseException, what: str) -> str:
    """Say what to do when a worker cannot load what the master sent, by the cause: a module it
    cannot import, a name pickle cannot find (the job's definitions), or the object's own
    unpickling code (``__setstate__``, ``__reduce__``'s callable) raising."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, ModuleNotFoundError):
        hint = (
            f"module {exc.name!r} cannot be imported on this worker: install it there, or make "
            "sure the worker's sys.path (PYTHONPATH, the job's directory) reaches it"
        )
    elif isinstance(exc, AttributeError) and str(exc).startswith("Can't get attribute"):
        hint = (
            "define creator classes, the primitive set and everything the fitness uses at module "
            "level of the job file, outside `if __name__ == '__main__':`, so that the workers, "
            "which import the job file, have them too"
        )
    else:
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" in {frames[-1].name}() at {frames[-1].filename}:{frames[-1].lineno}"
        hint = (
            f"the object's own unpickling code raised it{where if frames else ''}: its "
            "__setstate__, or the callable its __reduce__ names, fails on this worker; make it "
            "work there (it runs on every worker, with the worker's files and environment)"
        )
    return f"the worker cannot load {what} ({text}): {hint}"


#: Frames smaller than this travel inside the record that carries them (one message, not two).
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
# objects it refers to: evocluster.sharing), collected per thread while FunctionTable serialises.
_needs = threading.local()


def note_needs(needed: Iterable[Any]) -> None:
    """Called while an object is serialised (its ``__reduce__``): the payload being made needs
    ``needed`` too (:class:`Payload`).  Does nothing outside :meth:`FunctionTable.lookup`."""
    found: list[Any] | None = getattr(_needs, "found", None)
    if found is not None:
        found.extend(n for n in needed if n not in found)


class Payload(list[Any]):
    """A serialised callable's frames, with what it ``needs`` on each worker besides them (the
    versions of shared objects it refers to, which travel on their own: evocluster.sharing)."""

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
