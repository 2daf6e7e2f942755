"""Large read-only data sent to every worker once: :func:`share` on the master, :func:`shared` in
the fitness.

How it travels: while anything is shared, the executor sends each callable bound to the current
:class:`Bundle` (:func:`bind`).  A worker caches callables by digest (the master mirrors each
worker's cache, see ``worker.FunctionCache``), so the bundle crosses the wire once per worker and
callable, not once per task; numpy arrays in it travel as out-of-band pickle buffers, not copies.
On arrival the bundle becomes the worker's current one, and :func:`shared` reads it.

Sharing again (the same name or another) makes a new bundle: the next tasks carry it, once per
worker again.  Mapping two different fitness functions sends the bundle once with each.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Bound", "Bundle", "bind", "share", "shared", "unshare"]

_lock = threading.Lock()  # share() may be called from any master thread
_tokens = itertools.count(1)
_registry: dict[str, Any] = {}  # the master's shared objects, by name
_bundle: Bundle | None = None  # the master's current bundle (None: nothing shared)
_bound: dict[int, tuple[Callable[..., Any], Bound]] = {}  # id(fn) -> (fn, fn bound to _bundle)
_received: Bundle | None = None  # on a worker: the bundle of the last task that carried one
_MAX_BOUND = 256


class Bundle:
    """A snapshot of the shared objects, named by a token unique to the master process."""

    __slots__ = ("objects", "token")

    def __init__(self, objects: dict[str, Any], token: tuple[int, int]) -> None:
        self.objects = objects
        self.token = token

    def __reduce__(self) -> tuple[Any, ...]:
        return (Bundle, (self.objects, self.token))


class Bound:
    """``fn`` with the bundle it needs; calling it makes the bundle current, then calls ``fn``."""

    __slots__ = ("bundle", "fn")

    def __init__(self, fn: Callable[..., Any], bundle: Bundle) -> None:
        self.fn = fn
        self.bundle = bundle

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        global _received
        if _received is None or _received.token != self.bundle.token:
            _received = self.bundle
        return self.fn(*args, **kwargs)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Bound, (self.fn, self.bundle))

    def __repr__(self) -> str:
        return f"{self.fn!r} (with shared {sorted(self.bundle.objects)})"


def share(name: str, obj: Any) -> None:
    """Send ``obj`` to every worker once; a fitness reads it with ``shared(name)``.

    Call it on the master before evaluating (e.g. in the job's ``if __name__ == "__main__":``
    block).  The object is pickled when the next task leaves, so do not modify it afterwards:
    share it again instead.

    Args:
        name: the name the fitness uses.
        obj: any picklable object; numpy arrays travel without extra copies.

    Raises:
        TypeError: ``name`` is not a string.
    """
    if not isinstance(name, str):
        raise TypeError(f"share() needs a name (str), got {type(name).__name__}")
    global _bundle
    with _lock:
        _registry[name] = obj
        _bundle = Bundle(dict(_registry), (os.getpid(), next(_tokens)))
        _bound.clear()


def unshare(name: str | None = None) -> None:
    """Forget ``name`` (``None``: everything shared); later tasks no longer carry it."""
    global _bundle
    with _lock:
        if name is None:
            _registry.clear()
        else:
            _registry.pop(name, None)
        _bundle = Bundle(dict(_registry), (os.getpid(), next(_tokens))) if _registry else None
        _bound.clear()


def shared(name: str) -> Any:
    """The object shared as ``name`` (call it inside a fitness, or on the master).

    Raises:
        KeyError: nothing is shared under ``name``; the message says what is.
    """
    for objects in (_received.objects if _received is not None else {}, _registry):
        if name in objects:
            return objects[name]
    known = sorted({*(_received.objects if _received is not None else ()), *_registry})
    raise KeyError(
        f"nothing is shared as {name!r} (shared: {known or 'nothing'}): call "
        f"evocluster.share({name!r}, obj) on the master before the evaluations that read it"
    )


def bind(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` bound to the current bundle (the same object for the same ``fn`` until the next
    :func:`share`, so that it is serialised once); ``fn`` itself while nothing is shared."""
    bundle = _bundle
    if bundle is None or isinstance(fn, Bound):
        return fn
    with _lock:
        entry = _bound.get(id(fn))
        if entry is not None and entry[0] is fn and entry[1].bundle is bundle:
            return entry[1]
        bound = Bound(fn, bundle)
        if len(_bound) >= _MAX_BOUND:
            _bound.clear()
        _bound[id(fn)] = (fn, bound)
        return bound
