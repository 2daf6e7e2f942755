"""What a worker and its isolated child both do to evaluate, below both (:mod:`evocluster._worker`
and :mod:`evocluster._isolation` import it; it imports neither): the callable cache the master
mirrors, one call of the fitness, the error of a result that does not pickle, and the marks of a
process that serves (:data:`serving`) and of a fitness running on this thread
(:func:`in_evaluation`).

``evocluster.rng`` and ``evocluster._sharing`` read the marks through ``sys.modules`` (never
importing this module: a fitness run in the master must not import the worker's modules).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Any

from .errors import SerializationError

__all__ = [
    "FN_CACHE_SIZE",
    "FunctionCache",
    "Unloadable",
    "apply_item",
    "evaluating",
    "forks",
    "in_evaluation",
    "serving",
    "unpicklable_result",
]

#: Callables a worker keeps (least recently used out).  The master mirrors this cache per worker
#: (same size, same order of use), so it knows without asking whether to send a callable again.
FN_CACHE_SIZE = 128

#: The evaluation running on this thread, if any (its worker's label): a fitness that calls
#: evocluster.map or submit would wait for itself (serial: in the scheduler thread) or start a pool
#: inside a worker; the executor refuses that with a clear error (:func:`in_evaluation`).
evaluating = threading.local()

#: True once this process serves a master (``worker.serve``, or an isolated child): it then only
#: evaluates.  Read by
#: ``evocluster.rng``, which skips restoring Python's ``random`` state after each evaluation here.
serving = False

#: How many times this process's ancestry forked into it (``os.fork``, multiprocessing's fork): a
#: hook run in the child of every fork adds one.  A worker notes it when it starts serving; a
#: value that differs after an evaluation means the fitness forked and this is the copy, which must
#: never go on serving.  It replaces an ``os.getpid()`` after every evaluation, a system call that
#: took about half of a worker's samples under W1 (py-spy, issue 24).  A fork made below Python (a
#: C library's ``fork()``) runs no hook: the worker still compares its pid once per chunk.
forks = 0


def _forked() -> None:
    global forks
    forks += 1


os.register_at_fork(after_in_child=_forked)


class Unloadable:
    """A cached callable whose payload failed to load: every chunk using it reports the failure."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.info = info


class FunctionCache:
    """A bounded, least-recently-used map from function key to callable (or mirror of one)."""

    def __init__(self, maxsize: int = FN_CACHE_SIZE) -> None:
        self.maxsize = maxsize
        self._d: OrderedDict[bytes, Any] = OrderedDict()

    def touch(self, key: bytes) -> bool:
        """Mark ``key`` used; return whether it was present."""
        if key in self._d:
            self._d.move_to_end(key)
            return True
        return False

    def put(self, key: bytes, value: Any) -> None:
        self._d[key] = value
        if len(self._d) > self.maxsize:
            self._d.popitem(last=False)

    def get(self, key: bytes) -> Any:
        return self._d[key]

    def clear(self) -> None:
        self._d.clear()


def unpicklable_result(value: Any, exc: BaseException) -> SerializationError:
    """The error of a result that pickling refused with ``exc`` (the master adds the function and
    the item, which a worker does not know)."""
    what = type(value).__module__ + "." + type(value).__qualname__
    return SerializationError(
        f"the fitness returned a {what}, which cannot be pickled ({type(exc).__name__}: {exc}): "
        "return what pickle can store (numbers, tuples, lists, dicts, numpy arrays, instances of "
        "the job's classes), not open files, locks, sockets, generators or objects that hold them"
    )


def apply_item(fn: Any, item: Any, star: bool, kwargs: Any) -> Any:
    """``fn(item)``, or ``fn(*item, **kwargs)`` for a starred call: one evaluation (here, and in
    an isolated child)."""
    if not star:
        return fn(item)
    if kwargs:
        return fn(*item, **kwargs)
    return fn(*item)


def in_evaluation() -> str | None:
    """The label of the worker evaluating a fitness on this thread now, else ``None``."""
    label: str | None = getattr(evaluating, "label", None)
    return label
