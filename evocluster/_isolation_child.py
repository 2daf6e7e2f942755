"""The isolated child's side (:mod:`evocluster._isolation` is its worker's): the process a worker
evaluates in under ``isolate``, its serve loop, and the messages the two exchange.

Started as ``python -c '... main()' FD WORKER_PID`` (a fresh interpreter: worker ranks are MPI
processes, never forked), it dies with the worker (:func:`evocluster._leftovers.die_with`),
imports the job as a worker does, then evaluates the chunks it is sent and replies once per item,
as each is done (:class:`_Child`).  Messages are framed by :mod:`evocluster._framing`; the first
frame of a chunk is :data:`CHUNK`, of a reply :data:`REPLY`.  It imports nothing of the worker
above it (what both need is in :mod:`evocluster._calls`): ~8 ms less to start.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import socket
import struct
import sys
import time
from collections.abc import Sequence
from typing import Any

from . import _calls, _leftovers
from ._calls import FN_CACHE_SIZE, FunctionCache, Unloadable, apply_item, unpicklable_result
from ._framing import Reader, send
from ._jobfile import JobSpec
from ._serialization import dumps_results, explain_load_error, loads
from ._serialization import pack_exception as _pack_exception
from .errors import SerializationError

__all__ = ["CHUNK", "ERROR", "FAILED_ALL", "NOJOB", "READY", "REPLY", "VALUE", "main", "pack"]

# worker -> child, first frame of a CHUNK: the item to start at, how many frames the callable has
# (0: the child has it cached).  Then the callable's key, its frames, and the items' frames.
CHUNK = struct.Struct("<II")
# child -> worker, first frame of every reply: kind, item index, seconds in the fitness, and
# time.monotonic() when it was sent (the next item's start; CLOCK_MONOTONIC is the host's)
REPLY = struct.Struct("<BIdd")
#: the kinds of replies: the child is ready (or could not import the job: NOJOB, with the
#: traceback), an item's value or error, or every item left of the chunk failed (unloadable)
READY, NOJOB, VALUE, ERROR, FAILED_ALL = range(5)


def pack(exc: BaseException, where: str) -> dict[str, Any]:
    """:func:`pack_exception`, which never raises (an exception whose ``__str__`` raises)."""
    try:
        return _pack_exception(exc, where)
    except BaseException:
        name = f"{type(exc).__module__}.{type(exc).__qualname__}"
        return {
            "type": name,
            "message": "(str() of the exception failed)",
            "traceback": f'\n"""\n{where}:\n{name} (its traceback could not be formatted)\n"""',
            "pickled": None,
        }


class _Child:
    """The child's serve loop: chunks in, one reply per item out."""

    def __init__(self, sock: socket.socket, reader: Reader, label: str) -> None:
        self.sock, self.reader, self.label = sock, reader, label
        self.pid = os.getpid()
        self.marker = _calls.evaluating  # a fitness calling evocluster.map is refused
        self.fns = FunctionCache(FN_CACHE_SIZE)

    def reply(self, kind: int, index: int, seconds: float, frames: Sequence[Any] = ()) -> None:
        for stream in (sys.stdout, sys.stderr):  # a fitness's prints before a later crash
            with contextlib.suppress(Exception):
                stream.flush()
        send(self.sock, [REPLY.pack(kind, index, seconds, time.monotonic()), *frames])

    def serve(self) -> None:
        while (frames := self.reader.recv()) is not None:
            self.chunk(frames)
            _leftovers.reap_zombies()

    def function(self, key: bytes, frames: Sequence[Any]) -> Any:
        if not frames:
            if not self.fns.touch(key):  # the worker had no frames for it: cannot happen
                err: Exception = LookupError(
                    "internal error: function key unknown to the evaluation process"
                )
                return Unloadable(pack(err, self.label))
            return self.fns.get(key)
        try:
            fn = loads(frames)
        except BaseException as e:  # SystemExit from a __reduce__ too
            err = SerializationError(explain_load_error(e, "the function"))
            fn = Unloadable(pack(err, self.label))
        self.fns.put(key, fn)
        return fn

    def chunk(self, frames: list[memoryview]) -> None:
        start, nfn = CHUNK.unpack(frames[0])
        key = bytes(frames[1])
        try:
            fn = self.function(key, frames[2 : 2 + nfn])
            if isinstance(fn, Unloadable):
                self.reply(FAILED_ALL, start, 0.0, [pickle.dumps(fn.info)])
                return
            items, star, kwargs = loads(frames[2 + nfn :])
        except BaseException as e:  # the items' own unpickling code
            err = SerializationError(explain_load_error(e, "the task's arguments"))
            self.reply(FAILED_ALL, start, 0.0, [pickle.dumps(pack(err, self.label))])
            return
        for i in range(start, len(items)):
            self.evaluate(i, fn, items[i], star, kwargs)

    def evaluate(self, i: int, fn: Any, item: Any, star: bool, kwargs: Any) -> None:
        self.marker.label = self.label
        t0 = time.perf_counter()
        try:
            try:
                value = apply_item(fn, item, star, kwargs)
            finally:
                if os.getpid() != self.pid:  # a forked copy of this process returned: it must
                    os._exit(0)  # never reply, nor go on serving
                self.marker.label = None
        # anything, SystemExit and KeyboardInterrupt included: that evaluation's failure
        except BaseException as e:
            dt = time.perf_counter() - t0
            self.reply(ERROR, i, dt, [pickle.dumps(pack(e, self.label))])
            return
        dt = time.perf_counter() - t0
        try:
            out = dumps_results(value)
        except BaseException as e:  # the result's own pickling code
            err = unpicklable_result(value, e)
            self.reply(ERROR, i, dt, [pickle.dumps(pack(err, self.label))])
            return
        self.reply(VALUE, i, dt, out)


def _limit_memory(memory: int) -> None:
    import resource

    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))


def _import_job(job: JobSpec | None, memory: int | None) -> str | None:
    """Import the job as a worker does; the formatted traceback if that fails."""
    from . import _jobfile as jobfile

    try:
        if job is not None:
            jobfile.import_for_worker(job)
        jobfile.in_worker = True
    except BaseException as e:  # anything, SystemExit from the job's module level too
        import traceback

        text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        if memory is not None:
            text += f"(the evaluation process is limited to {memory / (1 << 20):g} MiB)\n"
        return text
    return None


def main() -> None:
    """The child: ``python -c '... main()' FD PARENT_PID``.  Never returns."""
    fd, parent = int(sys.argv[1]), int(sys.argv[2])
    sys.argv = sys.argv[:1]
    # Ctrl-C is the worker's to handle (not the fitness's processes': ignored here only)
    _leftovers.ignore_here(signal.SIGINT)
    _leftovers.die_with(parent)  # killed when the worker ends (its thread that started us)
    # what the fitness leaves running is ended when this child stops (killed: by its worker)
    _leftovers.adopt_orphans()
    label = "an isolated evaluation process"
    sock = socket.socket(fileno=fd)
    sock.set_inheritable(False)  # not into the fitness's own subprocesses
    reader = Reader(sock)
    try:
        setup = reader.recv()
        if setup is None:
            return
        job, label, memory = loads(setup)
        label = f"{label} (isolated, pid {os.getpid()})"
        if memory is not None:
            _limit_memory(memory)
        failure = _import_job(job, memory)
        if failure is not None:
            send(sock, [REPLY.pack(NOJOB, 0, 0.0, 0.0), failure.encode()])
            return
        _calls.serving = True  # this process only evaluates (evocluster.rng reads it)
        child = _Child(sock, reader, label)
        send(sock, [REPLY.pack(READY, 0, 0.0, 0.0)])
        child.serve()
    except OSError:  # the worker is gone
        pass
    finally:
        _leftovers.end_leftovers(label)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(0)  # not joining threads a fitness left behind, nor running its atexit hooks
