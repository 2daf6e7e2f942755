"""The records exchanged between the master and its workers, and nothing else.

Every record is a tuple whose first element is its kind; it is serialised with
:func:`evocluster._serialization.dumps` and travels as frames over whatever transport the backend
has.  The conversation of one worker::

    master                                   worker
      | -- INIT (job, options) --------------> |  import the job under __mp_main__
      | <------------- READY (rank, host, pid) |  (or FAILED with the reason, then exit)
      | -- TASK (id, fn key, [fn], items,      |  up to ``prefetch`` TASKs in flight
      |          [shared versions]) ---------> |  (a shared version: once per worker)
      | <---- RESULT (id, values, errors, dt)  |  one RESULT per TASK, in any order across workers
      | -- STOP -----------------------------> |  leave the serve loop
      | <------------------------------- BYE  |  nothing more will come from this worker
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from ._jobfile import JobSpec

__all__ = [
    "BYE",
    "Bye",
    "Doorbell",
    "Failed",
    "Init",
    "Limits",
    "Ready",
    "Result",
    "Stop",
    "Task",
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

# Each record is a NamedTuple whose first field is its kind: a receiver dispatches on
# ``record[0]`` (or ``record.kind``) and then reads fields by name.  They pickle by reference to
# these classes, which every worker imports (this module is part of its serve loop).


class Doorbell(NamedTuple):
    kind: str
    hosts: list[str]
    port: int
    token: bytes


class Init(NamedTuple):
    kind: str
    job: JobSpec
    options: dict[str, Any]


class Task(NamedTuple):
    kind: str
    chunk_id: int
    fn_key: bytes
    fn_payload: Any  # the serialised callable (frames), or None when the worker has it cached
    item_frames: Any  # the serialised (items, star, kwargs)
    limits: Limits | None = None  # how to evaluate; None: in the worker, with no time limit
    # versions of shared objects the callable refers to and this worker lacks: (name, token,
    # frames), frames None where the worker fetches them itself (SCOOP); None: nothing to add
    shared: Any = None


class Limits(NamedTuple):
    """How a worker evaluates a task's items (``None`` in the task: the defaults, as here)."""

    timeout: float | None = None  # seconds per evaluation; a longer one is abandoned
    isolate: bool = False  # in a child process the worker keeps (a crash costs one evaluation)
    memory: int | None = None  # bytes of address space of that child (RLIMIT_AS)


class Stop(NamedTuple):
    kind: str


class Ready(NamedTuple):
    kind: str
    rank: int
    host: str
    pid: int


class Result(NamedTuple):
    kind: str
    chunk_id: int
    values: Any  # the serialised values (frames); None where ``errors`` has the index
    errors: dict[int, dict[str, Any]]  # item index (-1: the whole chunk) -> packed exception
    elapsed: float  # seconds in the fitness for the whole chunk


class Failed(NamedTuple):
    kind: str
    message: str


class Bye(NamedTuple):
    kind: str


def doorbell(hosts: list[str], port: int, token: bytes) -> Doorbell:
    """Master -> MPI worker, before INIT: where to connect for wake-up rings
    (``backends/doorbell.py``); consumed by the worker's channel, never by the serve loop."""
    return Doorbell(DOORBELL, hosts, port, token)


def init(job: JobSpec, options: dict[str, Any]) -> Init:
    """Master -> worker, once: what to import (``job``) and the executor's options."""
    return Init(INIT, job, options)


def task(
    chunk_id: int,
    fn_key: bytes,
    fn_payload: Any,
    item_frames: Any,
    limits: Limits | None = None,
    shared: Any = None,
) -> Task:
    """Master -> worker: evaluate ``fn(*args, **kwargs)`` for each ``args`` of a chunk.

    ``fn_payload`` is the serialised callable (frames) the first time this worker sees ``fn_key``,
    else None.  ``item_frames`` is the serialised ``(items, star, kwargs)`` (``star``: each item
    is a tuple of positional arguments, else the one argument): it is loaded by the worker
    separately, so that an item that cannot be unpickled fails its chunk, not the conversation.
    ``shared``: the versions of shared objects (:mod:`evocluster._sharing`) the callable refers
    to that this worker does not hold yet, ``(name, token, frames)`` each; the worker keeps one
    version per name.
    """
    return Task(TASK, chunk_id, fn_key, fn_payload, item_frames, limits, shared)


def stop() -> Stop:
    """Master -> worker: leave the serve loop and exit."""
    return Stop(STOP)


def ready(rank: int, host: str, pid: int) -> Ready:
    """Worker -> master: the job is imported, tasks can be evaluated."""
    return Ready(READY, rank, host, pid)


def result(chunk_id: int, values: Any, errors: dict[int, dict[str, Any]], elapsed: float) -> Result:
    """Worker -> master: ``values[i]`` for each item (None where ``errors`` has index ``i``).

    ``elapsed`` is the time spent in the fitness for the whole chunk, which drives automatic
    chunking on the master.
    """
    return Result(RESULT, chunk_id, values, errors, elapsed)


def bye() -> Bye:
    """Worker -> master, the answer to STOP: the last message of this worker (so the master can
    drain every message before MPI is finalised: an unreceived one makes finalisation fail)."""
    return Bye(BYE)


def failed(message: str) -> Failed:
    """Worker -> master: the worker cannot serve (job import failed, ...), with the reason."""
    return Failed(FAILED, message)
