"""An executor's ``initializer(*initargs)``, run once in each worker process before that executor's
first task there, as ``concurrent.futures.ProcessPoolExecutor`` and ``MPIPoolExecutor`` do.

The initializer travels with the callable: :class:`Initialized` wraps the function of every task
of an executor that has one, so it needs no message of its own, reaches the workers of every
backend (serial, local, MPI, SCOOP) the same way, and is cached on each worker with the function.
A worker runs a given executor's initializer once (per process, keyed by the executor's token);
when it raises, every task of that executor on that worker fails with :class:`BrokenPool`, and the
master marks the executor broken (``executor.py``).  Worker-side only: nothing here imports
``concurrent.futures`` until an initializer fails.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

__all__ = ["Initialized"]

#: executor token -> None once its initializer ran here, or why it failed (a worker process).
_ran: dict[str, str | None] = {}
_NOT_YET = "not yet"  # a sentinel that pickles and compares by identity within this process


class Initialized:
    """``fn``, called after ``initializer(*initargs)`` has run once in this process."""

    __slots__ = ("fn", "initargs", "initializer", "token")

    def __init__(
        self,
        fn: Callable[..., Any],
        initializer: Callable[..., Any],
        initargs: tuple[Any, ...],
        token: str,
    ) -> None:
        self.fn = fn
        self.initializer = initializer
        self.initargs = initargs
        self.token = token  # which executor: each has its own initializer state per worker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Initialized, (self.fn, self.initializer, self.initargs, self.token))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        failure = _ran.get(self.token, _NOT_YET)
        if failure is _NOT_YET:
            failure = self._initialize()
        if failure is not None:
            from ._broken_pool import BrokenPool  # only now: workers never load concurrent.futures

            raise BrokenPool(failure)
        return self.fn(*args, **kwargs)

    def _initialize(self) -> str | None:
        try:
            self.initializer(*self.initargs)
        except BaseException as e:  # SystemExit too: it must not end the worker
            name = getattr(self.initializer, "__qualname__", repr(self.initializer))
            tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
            _ran[self.token] = (
                f"the executor's initializer {name}() raised {type(e).__name__}: {e}; the "
                f"executor cannot run tasks any more (as concurrent.futures does)\n{tb}"
            )
        else:
            _ran[self.token] = None
        return _ran[self.token]
