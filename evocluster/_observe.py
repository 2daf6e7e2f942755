"""What the run's observers (the progress display and the run log, :mod:`evocluster._monitor`)
are told, and the pools they look at.

The layers that know something worth observing tell it here, and never print it: the scheduler
(a failure), the engine (a loop started, a generation's statistics row, a checkpoint written or
resumed from), the pools (one opened; one closed, with its last figures).  :func:`emit` costs
one test of a list while nobody observes: on every worker, and on a quiet master without a log.
Counters that change per result (items, busy seconds, bytes) are not events: the pools keep them
(:meth:`evocluster._scheduling.PoolBase.snapshot`) and the monitor reads them at intervals.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["emit", "observing", "pool_opened", "pools", "subscribe", "unsubscribe"]

Sink = Callable[[str, dict[str, Any]], None]

_sinks: list[Sink] = []
_lock = threading.Lock()

#: every pool the master opened, while it lives (the monitor reads their snapshots)
pools: weakref.WeakSet[Any] = weakref.WeakSet()


def subscribe(sink: Sink) -> None:
    with _lock:
        _sinks.append(sink)


def unsubscribe(sink: Sink) -> None:
    with _lock, contextlib.suppress(ValueError):
        _sinks.remove(sink)


def observing() -> bool:
    """Whether anybody listens (an event that costs something to make can be skipped)."""
    return bool(_sinks)


def emit(kind: str, **fields: Any) -> None:
    """Tell every observer of ``kind`` (``"failure"``, ``"loop"``, ``"generation"``,
    ``"checkpoint"``); an observer's failure is never the caller's."""
    if not _sinks:
        return
    for sink in list(_sinks):
        with contextlib.suppress(Exception):
            sink(kind, fields)


def pool_opened(pool: Any) -> None:
    """A pool of the master's opened: the monitor reads it from now on."""
    pools.add(pool)
