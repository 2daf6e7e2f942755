"""The records exchanged between the master and its workers, and nothing else.

Every record is a tuple whose first element is its kind; it is serialised with
:func:`evocluster.serialization.dumps` and travels as frames over whatever transport the backend
has.  The conversation of one worker::

    master                                   worker
      | -- INIT (job, options) --------------> |  import the job under __worker__
      | <------------- READY (rank, host, pid) |  (or FAILED with the reason, then exit)
      | -- TASK (id, fn key, [fn], items) ---> |  up to ``prefetch`` TASKs in flight
      | <---- RESULT (id, values, errors, dt)  |  one RESULT per TASK, in any order across workers
      | -- STOP -----------------------------> |  leave the serve loop
      | <------------------------------- BYE  |  nothing more will come from this worker
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BYE",
    "DOORBELL",
    "FAILED",
    "INIT",
    "READY",
    "RESULT",
    "STOP",
    "TASK",
    "bye",
    "doorbell",
    "failed",
    "init",
    "ready",
    "result",
    "stop",
    "task",
]

DOORBELL = "doorbell"
INIT = "init"
TASK = "task"
STOP = "stop"
READY = "ready"
RESULT = "result"
FAILED = "failed"
BYE = "bye"


def doorbell(hosts: list[str], port: int, token: bytes) -> tuple[Any, ...]:
    """Master -> MPI worker, before INIT: where to connect for wake-up rings
    (``backends/doorbell.py``); consumed by the worker's channel, never by the serve loop."""
    return (DOORBELL, hosts, port, token)


def init(job: dict[str, Any], options: dict[str, Any]) -> tuple[Any, ...]:
    """Master -> worker, once: what to import (``job``) and the executor's options."""
    return (INIT, job, options)


def task(chunk_id: int, fn_key: bytes, fn_payload: Any, item_frames: Any) -> tuple[Any, ...]:
    """Master -> worker: evaluate ``fn(*args, **kwargs)`` for each ``args`` of a chunk.

    ``fn_payload`` is the serialised callable (frames) the first time this worker sees ``fn_key``,
    else None.  ``item_frames`` is the serialised ``(items, star, kwargs)`` (``star``: each item
    is a tuple of positional arguments, else the one argument): it is loaded by the worker
    separately, so that an item that cannot be unpickled fails its chunk, not the conversation.
    """
    return (TASK, chunk_id, fn_key, fn_payload, item_frames)


def stop() -> tuple[Any, ...]:
    """Master -> worker: leave the serve loop and exit."""
    return (STOP,)


def ready(rank: int, host: str, pid: int) -> tuple[Any, ...]:
    """Worker -> master: the job is imported, tasks can be evaluated."""
    return (READY, rank, host, pid)


def result(
    chunk_id: int, values: list[Any], errors: dict[int, dict[str, Any]], elapsed: float
) -> tuple[Any, ...]:
    """Worker -> master: ``values[i]`` for each item (None where ``errors`` has index ``i``).

    ``elapsed`` is the time spent in the fitness for the whole chunk, which drives automatic
    chunking on the master.
    """
    return (RESULT, chunk_id, values, errors, elapsed)


def bye() -> tuple[Any, ...]:
    """Worker -> master, the answer to STOP: the last message of this worker (so the master can
    drain every message before MPI is finalised: an unreceived one makes finalisation fail)."""
    return (BYE,)


def failed(message: str) -> tuple[Any, ...]:
    """Worker -> master: the worker cannot serve (job import failed, ...), with the reason."""
    return (FAILED, message)
