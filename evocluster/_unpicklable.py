"""Naming what cannot be sent, and where it sits (part of :mod:`evocluster._serialization`).

When pickle refuses the callable or the arguments of a call, :func:`_explain` walks down to the
innermost part that it refuses (:func:`_locate`, through what pickle would have to store:
:func:`_children`) and says, in one message, the path to it (``fn -> functools.partial.func ->
<lambda> defined at job.py:42``), why, and the ways out.  :func:`_workers_own_generator` finds a
random generator that functions sent by reference carry without pickle seeing it;
:func:`explain_load_error` says what to do when a worker cannot load what it received.
"""

from __future__ import annotations

import functools
import traceback
import types
from typing import Any

from ._main_names import _importable, describe_definition
from ._picklers import _REFUSED, _generator_name, _GeneratorFound, _is_generator, dumps_args

__all__ = ["explain_load_error"]


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


def _describe(obj: Any) -> str:
    """A short, recognisable name for an object in a message."""
    if isinstance(obj, (types.FunctionType, type)):
        return describe_definition(obj)
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
