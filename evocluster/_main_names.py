"""The job's ``__main__`` names as the workers will see them (:mod:`evocluster._serialization`).

Workers import the job file, so an object of ``__main__`` is importable there when its name is
bound at the job's module level, outside ``if __name__ == "__main__":``
(:func:`set_worker_main_names`), and it *is* that definition: a function or class defined again
under the main guard (or anywhere its source lines are not those of the module-level definition of
its name) is not what the workers would find under that name (:func:`_not_on_workers` says why).
:func:`_importable` answers for any function or class; :func:`_main_has_hidden` whether
``__main__`` holds anything the workers will not have (only then is the slow path needed).

The way back is aliased, as ``multiprocessing`` aliases its main module: a worker pickles an
instance of the job's class ``Score`` as ``__mp_main__.Score``, so on the master ``__mp_main__`` is
a stand-in module (:func:`alias_worker_module`) whose names are looked up in whatever
``sys.modules["__main__"]`` is at that moment -- the job, also while the launcher runs it through
``runpy``, which swaps ``__main__`` for as long as the job runs.  :mod:`evocluster._jobfile`, which
finds, runs and imports the job, reads this module's names; this module knows nothing of it.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import sys
import types
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import ast

__all__ = [
    "WORKER_NAME",
    "alias_worker_module",
    "describe_definition",
    "is_main_guard",
    "set_worker_main_names",
]

#: The job's module name on workers (and in the processes ``multiprocessing`` spawns from them).
WORKER_NAME = "__mp_main__"

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


def is_main_guard(test: ast.expr) -> bool:
    """``__name__ == "__main__"`` (either way round)."""
    import ast

    if not (isinstance(test, ast.Compare) and len(test.ops) == 1):
        return False
    sides = [test.left, test.comparators[0]]
    names = [s.id for s in sides if isinstance(s, ast.Name)]
    consts = [s.value for s in sides if isinstance(s, ast.Constant)]
    return isinstance(test.ops[0], ast.Eq) and names == ["__name__"] and consts == ["__main__"]


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
            f"{describe_definition(obj)} is defined in the job's __main__ but not at its module "
            "level (outside `if __name__ == '__main__':`), so the workers cannot import it"
        )
    other = _module_level_definition(obj)
    if other is None:
        return None
    name = qualname.split(".")[0]
    return (
        f"{describe_definition(obj)} is not the {name!r} that the job defines at module level "
        f"({os.path.basename(other[0])}:{other[1]}), which is what the workers would import "
        f"under that name and run instead: it was defined again (under `if __name__ == "
        "'__main__':`, say); give the two different names"
    )


class _NotOnWorkers(pickle.PicklingError):
    """An object of ``__main__`` that exists on the master only."""


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


def describe_definition(obj: Any) -> str:
    """How a message names a function or class."""
    if isinstance(obj, type):
        return f"class {obj.__module__}.{obj.__qualname__}"
    code = obj.__code__
    where = f"{os.path.basename(code.co_filename)}:{code.co_firstlineno}"
    name = "<lambda>" if obj.__name__ == "<lambda>" else f"function {obj.__qualname__}"
    return f"{name} defined at {where}"


class _MainAlias(types.ModuleType):
    """The master's ``__mp_main__``: ``__mp_main__.X`` is ``__main__.X``, looked up when asked.

    Only plain names are forwarded: the alias's own ``__file__``, ``__path__``, ... stay unset, so
    that tools scanning ``sys.modules`` (``inspect.getmodule``, ``pickle.whichmodule``) do not
    take it for the job's module."""

    def __getattr__(self, name: str) -> Any:
        main = sys.modules.get("__main__")
        if main is None or main is self or (name.startswith("__") and name.endswith("__")):
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        return getattr(main, name)


def alias_worker_module() -> None:
    """On the master: make the names workers pickle the job's objects under (``__mp_main__.X``)
    resolve to the job's ``__main__``.  Idempotent; does nothing in a worker, where
    ``__mp_main__`` is the job itself.

    ``import multiprocessing`` makes ``__mp_main__`` whatever ``__main__`` is then: under the
    launcher, if it came first, evocluster's own ``__main__``, which is replaced here (a later
    import makes it the job's, while the job runs: the same names)."""
    existing = sys.modules.get(WORKER_NAME)
    if isinstance(existing, _MainAlias):
        return
    if (
        existing is not None
        and existing is sys.modules.get("__main__")
        and getattr(existing, "__name__", None) == WORKER_NAME
    ):
        return  # a worker: the job imported under that name (jobfile.import_for_worker)
    sys.modules[WORKER_NAME] = _MainAlias(WORKER_NAME, "the master's alias of the job's __main__")
