"""The worker's serve loop, the same for every backend: receive a chunk, evaluate it, reply.

A worker never dies because of a fitness: every call is wrapped, and what it raised travels home
with its formatted traceback and the worker's rank and host.  What the worker cannot do at all --
import the job -- is reported once as FAILED, and the worker then exits.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from collections import OrderedDict
from typing import Any

from . import jobfile, protocol
from .backends.base import Channel
from .errors import SerializationError
from .serialization import dumps, dumps_results, explain_load_error, loads, nest, pack_exception

__all__ = ["FN_CACHE_SIZE", "FunctionCache", "Worker", "in_evaluation", "serve"]

#: Callables a worker keeps (least recently used out).  The master mirrors this cache per worker
#: (same size, same order of use), so it knows without asking whether to send a callable again.
FN_CACHE_SIZE = 128

#: The evaluation running on this thread, if any (its worker's label): a fitness that calls
#: evocluster.map or submit would wait for itself (serial: in the scheduler thread) or start a pool
#: inside a worker; the executor refuses that with a clear error (:func:`in_evaluation`).
_evaluating = threading.local()

#: True once this process serves a master (:func:`serve`): it then only evaluates.  Read by
#: ``evocluster.rng``, which skips restoring Python's ``random`` state after each evaluation here.
serving = False


class _Unloadable:
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


class Worker:
    """Evaluates TASK records.  Holds the function cache; knows its label for tracebacks."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.functions = FunctionCache()

    def _function(self, key: bytes, payload: Any) -> Any:
        if self.touch_or_load(key, payload):
            return self.functions.get(key)
        raise LookupError("internal error: function key unknown to this worker")

    def touch_or_load(self, key: bytes, payload: Any) -> bool:
        if self.functions.touch(key):
            return True
        if payload is None:
            return False
        try:
            fn: Any = loads(payload)
        except BaseException as e:  # SystemExit from a __reduce__ too: it must not end the worker
            err = SerializationError(explain_load_error(e, "the function"))
            fn = _Unloadable(pack_exception(err, self.label))
        self.functions.put(key, fn)
        return True

    def run(self, record: protocol.Task) -> protocol.Result:
        """Evaluate one TASK record; return the RESULT record (values still as frames)."""
        chunk_id, key, payload, item_frames = (
            record.chunk_id,
            record.fn_key,
            record.fn_payload,
            record.item_frames,
        )
        errors: dict[int, dict[str, Any]] = {}
        values: list[Any] = []
        t0 = time.perf_counter()
        try:
            fn = self._function(key, payload)
            if isinstance(fn, _Unloadable):
                return protocol.result(chunk_id, nest(dumps([])), {-1: fn.info}, 0.0)
            items, star, kwargs = loads(item_frames)
        except BaseException as e:  # whatever the arguments' own unpickling code raises
            err = SerializationError(explain_load_error(e, "the task's arguments"))
            info = pack_exception(err, self.label)
            return protocol.result(chunk_id, nest(dumps([])), {-1: info}, 0.0)
        t0 = time.perf_counter()
        _evaluating.label = self.label
        try:
            for i, item in enumerate(items):
                try:
                    if not star:
                        values.append(fn(item))
                    elif kwargs:
                        values.append(fn(*item, **kwargs))
                    else:
                        values.append(fn(*item))
                # any BaseException (SystemExit, KeyboardInterrupt, GeneratorExit, a class of the
                # job's): that evaluation's failure, reported; one bad individual never kills the
                # worker (a worker that left its loop would leave the master waiting for ever)
                except BaseException as e:
                    values.append(None)
                    errors[i] = pack_exception(e, self.label)
        finally:
            _evaluating.label = None
        elapsed = time.perf_counter() - t0
        try:
            out = dumps_results(values)
        except BaseException:  # a result's own pickling code may raise anything
            out = self._dump_each(values, errors)
        return protocol.result(chunk_id, nest(out), errors, elapsed)

    def _dump_each(self, values: list[Any], errors: dict[int, dict[str, Any]]) -> Any:
        """Some result cannot be pickled: report those items as errors, keep the others."""
        for i, v in enumerate(values):
            try:
                dumps_results(v)
            except BaseException as e:
                values[i] = None
                err = SerializationError(
                    f"the result of this call cannot be pickled ({type(e).__name__}: {e}): "
                    "return what pickle can store (numbers, tuples, lists, dicts, numpy arrays, "
                    "instances of the job's classes), not open files, locks, sockets, generators "
                    "or objects that hold them"
                )
                errors[i] = pack_exception(err, self.label)
        return dumps_results(values)


def in_evaluation() -> str | None:
    """The label of the worker evaluating a fitness on this thread now, else ``None``."""
    label: str | None = getattr(_evaluating, "label", None)
    return label


def _import_job(job: jobfile.JobSpec) -> str | None:
    """Import the job as a worker does; return the formatted traceback if that fails."""
    try:
        jobfile.import_for_worker(job)
    except BaseException as e:  # report anything, even SystemExit from the job's module level
        return "".join(traceback.format_exception(type(e), e, e.__traceback__))
    return None


def serve(channel: Channel, job: jobfile.JobSpec | None = None) -> int:
    """Serve the master over ``channel`` until STOP.  Returns the process exit code.

    ``job``: the job as this worker's own command line describes it.  It is imported at once,
    while the master starts up, rather than after INIT arrives (with many ranks on few cores the
    two overlap); if INIT then names another job, that one is imported instead."""
    early = _import_job(job) if job is not None else None
    record = loads(channel.recv())
    if record[0] == protocol.STOP:  # the master gave up before starting (bad command line)
        channel.send(dumps(protocol.bye()))
        return 0
    sent = record.job
    label = channel.label()
    if job is not None and jobfile.same_job(job, sent):
        jobfile.add_import_path(sent)  # the master's import path, in case it differs
        failure = early
    else:
        failure = _import_job(sent)
    if failure is not None:
        channel.send(dumps(protocol.failed(f"{label} could not import the job:\n{failure}")))
        # wait for the master to stop us: exiting now could end an MPI job before the master
        # has printed why.  Then exit 0: the master reports the failure and sets the run's exit
        # code (a worker exiting non-zero makes the MPI launcher kill the others, code 9)
        while loads(channel.recv())[0] != protocol.STOP:
            pass
        channel.send(dumps(protocol.bye()))
        return 0
    channel.send(dumps(protocol.ready(channel.rank, channel.host, os.getpid())))
    global serving
    serving = True
    worker = Worker(label)
    while True:
        record = loads(channel.recv())
        if record[0] == protocol.STOP:
            channel.send(dumps(protocol.bye()))
            return 0
        channel.send(dumps(worker.run(record)))
