"""The results of one map that the engine waits for in steps (``engine.PolicyExecutor``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from ._jobs import Job
from ._scheduling import PoolBase


class MapResults(Iterator[Any]):
    """The results of one map, in order (:meth:`Executor.map_results`): an iterator, whose
    :meth:`ready` waits for the next result with a timeout.  A result waited for is not taken:
    the next ``next()`` returns it (or raises what the slot holds)."""

    def __init__(
        self, job: Job, pool: PoolBase, take: Callable[[Job, int, float | None], Any]
    ) -> None:
        self._job, self._pool, self._take, self._next = job, pool, take, 0

    def ready(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the next result; whether it is in (true at the end)."""
        job, i = self._job, self._next
        if i >= job.n:
            return True
        deadline = time.monotonic() + timeout
        try:  # only the wait: a fitness's own TimeoutError is in the slot, raised by next()
            self._pool.wait_slot(job, i, deadline)
        except TimeoutError:
            # before the deadline: the pool cannot wait here (SCOOP's, off the main thread or
            # with nothing left in flight); next() then does what map's iterator does
            return time.monotonic() < deadline
        return True

    def __next__(self) -> Any:
        job, i = self._job, self._next
        if i >= job.n:
            raise StopIteration
        self._next = i + 1
        try:
            return self._take(job, i, None)
        except BaseException:  # as map's iterator: it ends there, and the rest is cancelled
            self.close()
            raise

    def close(self) -> None:
        """Abandon what is left: the items not yet dispatched are cancelled (as when map's
        iterator is dropped)."""
        job = self._job
        self._next = job.n
        if job.remaining > 0:
            job.cancelled = True
            self._pool.wakeup()
