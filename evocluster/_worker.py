"""The worker's serve loop, the same for every backend: receive a chunk, evaluate it, reply.

A worker never dies because of a fitness: every call is wrapped, and what it raised travels home
with its formatted traceback and the worker's rank and host.  What the worker cannot do at all --
import the job -- is reported once as FAILED, and the worker then exits.

A task may carry :class:`~evocluster._protocol.Limits`: a time limit per evaluation, which
interrupts pure-Python code here (SIGALRM, in the main thread), and isolation, under which the
items are evaluated in a child process the worker keeps (:mod:`evocluster._isolation`): a
timeout kills it, and a crash (a signal, ``os._exit``, a memory limit) costs that evaluation
only.  A fitness that forks and returns in the copy never gets that copy into the serve loop.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from . import _calls, _leftovers
from . import _jobfile as jobfile
from . import _protocol as protocol
from ._calls import FunctionCache, Unloadable, apply_item, in_evaluation, unpicklable_result
from ._channel import Channel
from ._serialization import dumps, dumps_results, explain_load_error, loads, nest, pack_exception
from .errors import EvaluationCrashed, EvaluationTimeout, SerializationError, WorkerError

if TYPE_CHECKING:
    from ._isolation import Isolated, Wake

__all__ = ["Worker", "in_evaluation", "serve"]


class _Alarm:
    """A time limit on each evaluation, in pure Python: SIGALRM raises
    :class:`~evocluster.errors.EvaluationTimeout` inside the fitness.  Only in the main thread
    (where Python runs signal handlers); code stuck in C is not interrupted (isolation kills it).

    The timer is set once per chunk, not around each evaluation: two ``setitimer`` calls cost
    more than a cheap fitness (W1 ran at half its rate, benchmarks/RESULTS.md, 2026-12-02).  Each
    evaluation only notes when it started; when the timer rings, an evaluation that has not yet
    had its ``timeout`` gets the timer set again for what it has left, and between evaluations
    the timer just starts over.  A ring between evaluations never raises: it only notes that the
    timer is no longer set, and the next evaluation sets it again (as after a timeout), so that
    every evaluation of the chunk has its limit, and a limit shorter than the worker's own steps
    between evaluations (``eval_timeout=1e-6``) never fails the chunk outside the fitness."""

    def __init__(self) -> None:
        self.timeout = 0.0
        self.started = 0.0  # time.monotonic() when the running evaluation started
        self.running = False  # an evaluation is running (the ring may interrupt it)
        self.stopped = False  # the timer is not set: the next evaluation sets it
        signal.signal(signal.SIGALRM, self._ring)

    def _ring(self, signum: int, frame: Any) -> None:
        if not self.running:
            self.stopped = True
            return
        left = self.started + self.timeout - time.monotonic()
        if left > 1e-3:
            signal.setitimer(signal.ITIMER_REAL, left)
            return
        self.running = False
        self.stopped = True
        raise EvaluationTimeout(
            f"the evaluation ran longer than {self.timeout:g} s (eval_timeout) and was interrupted"
        )

    def arm(self, timeout: float) -> None:
        """Before a chunk's first evaluation."""
        self.timeout = timeout
        self.running = False
        self.stopped = False
        signal.setitimer(signal.ITIMER_REAL, timeout)

    def start(self) -> None:
        """Before each evaluation."""
        self.started = time.monotonic()
        self.running = True
        if self.stopped:
            self.stopped = False
            signal.setitimer(signal.ITIMER_REAL, self.timeout)

    def disarm(self) -> None:
        """After its last."""
        self.running = False
        signal.setitimer(signal.ITIMER_REAL, 0)


class _ExitGuard:
    """``os._exit`` while a fitness runs in a worker: that evaluation's failure
    (:class:`~evocluster.errors.EvaluationCrashed` naming the code), not the worker's end -- under
    MPI a worker's exit ends the whole job.  A copy forked by the fitness still exits for real."""

    def __init__(self) -> None:
        self.real = os._exit
        self.pid = os.getpid()

    def __call__(self, code: int) -> None:
        if os.getpid() != self.pid or threading.current_thread() is not threading.main_thread():
            self.real(code)
        raise EvaluationCrashed(
            f"the fitness called os._exit({code}): intercepted, the worker goes on (it would have "
            "ended the worker, and under MPI the whole job)"
        )


def _can_alarm() -> bool:
    return threading.current_thread() is threading.main_thread()


class Worker:
    """Evaluates TASK records.  Holds the function cache; knows its label for tracebacks."""

    def __init__(self, label: str, job: jobfile.JobSpec | None = None) -> None:
        self.label = label
        self.job = job  # what an isolated child imports
        self.functions = FunctionCache()
        # the callables' frames as received, for an isolated child (a new one after a crash)
        self.payloads = FunctionCache()
        # a fitness that forks: its copy must never go on serving (:meth:`_evaluate_from`)
        self.pid = os.getpid()
        self.forks = _calls.forks
        self._alarm: _Alarm | None = None
        # a worker process's os._exit while a fitness runs (never the serial master's)
        self._guard = _ExitGuard() if _calls.serving else None
        self._isolated: Isolated | None = None

    def _function(self, key: bytes, payload: Any) -> Any:
        if self.touch_or_load(key, payload):
            return self.functions.get(key)
        raise LookupError("internal error: function key unknown to this worker")

    def touch_or_load(self, key: bytes, payload: Any) -> bool:
        if self.functions.touch(key):
            self.payloads.touch(key)  # the same order of use: both caches drop the same keys
            return True
        if payload is None:
            return False
        self.payloads.put(key, payload)
        try:
            fn: Any = loads(payload)
        except BaseException as e:  # SystemExit from a __reduce__ too: it must not end the worker
            err = SerializationError(explain_load_error(e, "the function"))
            fn = Unloadable(pack_exception(err, self.label))
        self.functions.put(key, fn)
        return True

    def run(self, record: protocol.Task) -> protocol.Result:
        """Evaluate one TASK record; return the RESULT record (values still as frames).  What
        fails here outside the fitness fails the chunk (:meth:`failed_chunk`), never the
        worker."""
        try:
            return self._run(record)
        except BaseException as e:  # the worker's own code: the master must hear of it
            return self.failed_chunk(record.chunk_id, e)

    def failed_chunk(self, chunk_id: int, exc: BaseException) -> protocol.Result:
        """The RESULT that fails every item of a chunk because this worker failed while serving
        it, outside the fitness (a timer that cannot be set, an internal error): a
        :class:`~evocluster.errors.WorkerError` naming ``exc``, with this traceback as its
        cause.  A worker that died of it instead would leave the master a lost worker (under
        MPI, the whole job) and no word of why."""
        try:
            what = f"{type(exc).__name__}: {exc}"
        except BaseException:  # its __str__ may raise too
            what = type(exc).__name__
        err = WorkerError(
            f"{self.label} failed outside the fitness while serving this chunk ({what}): the "
            "chunk fails, the worker goes on.  The worker's traceback is the cause; unless the "
            "job changed what the worker relies on (signal.setitimer, SIGALRM), please report it "
            "as an evocluster bug"
        )
        info = pack_exception(err, self.label)
        info["traceback"] = pack_exception(exc, self.label)["traceback"]
        return protocol.result(chunk_id, nest(dumps([])), {-1: info}, 0.0)

    def _run(self, record: protocol.Task) -> protocol.Result:
        limits = record.limits
        if limits is not None and (limits.isolate or not _can_alarm()):
            done = self.submit_isolated(record)  # a timeout outside the main thread: isolated
            return done if done is not None else self.isolated_result(record.chunk_id, None)
        prepared = self._prepare(record)
        if isinstance(prepared, protocol.Result):
            return prepared
        items, star, kwargs = prepared
        fn = self.functions.get(record.fn_key)
        timeout = limits.timeout if limits is not None else None
        values, errors, elapsed = self._evaluate(fn, items, star, kwargs, timeout)
        return self._result(record.chunk_id, values, errors, elapsed)

    def _prepare(self, record: protocol.Task) -> protocol.Result | tuple[list[Any], bool, Any]:
        """The task's callable loaded (and cached), and its ``(items, star, kwargs)``; or the
        RESULT that fails the whole chunk when either cannot be loaded."""
        if record.shared:  # versions of shared objects this worker lacks: before the callable
            failed = self._install_shared(record)
            if failed is not None:
                return failed
        try:
            fn = self._function(record.fn_key, record.fn_payload)
            if isinstance(fn, Unloadable):
                return protocol.result(record.chunk_id, nest(dumps([])), {-1: fn.info}, 0.0)
            items, star, kwargs = loads(record.item_frames)
        except BaseException as e:  # whatever the arguments' own unpickling code raises
            err = SerializationError(explain_load_error(e, "the task's arguments"))
            info = pack_exception(err, self.label)
            info["split"] = True  # the master sends the chunk's items again one by one
            return protocol.result(record.chunk_id, nest(dumps([])), {-1: info}, 0.0)
        return items, star, kwargs

    def _install_shared(self, record: protocol.Task) -> protocol.Result | None:
        """Hold the shared versions ``record`` carries (:func:`evocluster._sharing.install`: one
        version per name); the RESULT that fails the chunk if one cannot be loaded."""
        from . import _sharing as sharing

        try:
            isolate = record.limits is not None and record.limits.isolate
            sharing.install(record.shared, keep_frames=isolate)
        except BaseException as e:  # the object's own unpickling code
            err = e if isinstance(e, SerializationError) else SerializationError(str(e))
            info = pack_exception(err, self.label)
            return protocol.result(record.chunk_id, nest(dumps([])), {-1: info}, 0.0)
        return None

    def _result(
        self, chunk_id: int, values: list[Any], errors: dict[int, dict[str, Any]], elapsed: float
    ) -> protocol.Result:
        try:
            out = dumps_results(values)
        except BaseException:  # a result's own pickling code may raise anything
            out = self._dump_each(values, errors)
        return protocol.result(chunk_id, nest(out), errors, elapsed)

    # ------------------------------------------------------------------ isolated, pipelined
    def pipelines(self, record: Any) -> bool:
        """Whether ``record`` is a TASK that can go to this worker's child behind the chunks it
        has already (isolated, with the same memory limit)."""
        if record[0] != protocol.TASK or record.limits is None or not record.limits.isolate:
            return False
        child = self._isolated
        return child is None or not child.pending() or child.memory == record.limits.memory

    def submit_isolated(self, record: protocol.Task) -> protocol.Result | None:
        """Send an isolated TASK to the child at once (:meth:`Isolated.submit`); its RESULT then
        comes from :meth:`isolated_result`, in order.  Returns the RESULT at once instead when
        the chunk cannot be loaded here."""
        prepared = self._prepare(record)
        if isinstance(prepared, protocol.Result):
            return prepared
        items, star, kwargs = prepared
        limits = record.limits
        assert limits is not None
        child = self._child(limits.memory)
        from . import (
            _sharing as sharing,  # the callable with the shared versions it reads, for the child
        )

        key, fn_frames = sharing.for_child(record.fn_key, self.payloads.get(record.fn_key))
        child.submit(
            key, fn_frames, items, star, kwargs, limits.timeout, item_frames=record.item_frames,
        )  # fmt: skip
        return None

    def isolated_result(self, chunk_id: int, wake: Wake | None) -> protocol.Result:
        """The RESULT of the oldest chunk submitted to the child (:meth:`submit_isolated`)."""
        assert self._isolated is not None
        values, errors, elapsed = self._isolated.result(wake)
        return self._result(chunk_id, values, errors, elapsed)

    def _evaluate(
        self, fn: Any, items: list[Any], star: bool, kwargs: Any, timeout: float | None
    ) -> tuple[list[Any], dict[int, dict[str, Any]], float]:
        """Call ``fn`` on each item here; every failure is that item's (values[i] is None)."""
        errors: dict[int, dict[str, Any]] = {}
        values: list[Any] = []
        alarm = None
        if timeout is not None:
            alarm = self._alarm = self._alarm or _Alarm()
        t0 = time.perf_counter()
        with self._evaluating():
            if alarm is not None:
                alarm.arm(timeout)  # type: ignore[arg-type]
            try:
                i = 0
                while i < len(items):  # one pass per failure: each resumes after the item
                    i = self._evaluate_from(fn, items, i, star, kwargs, alarm, values, errors)
            finally:
                if alarm is not None:
                    alarm.disarm()
        if os.getpid() != self.pid:  # once per chunk: a fork below Python runs no at-fork hook
            os._exit(0)
        return values, errors, time.perf_counter() - t0

    @contextlib.contextmanager
    def _evaluating(self) -> Iterator[None]:
        """While fitness code runs here: a nested map is refused (:func:`in_evaluation`), and in a
        worker process ``os._exit`` is that evaluation's failure (never in the serial master)."""
        _calls.evaluating.label = self.label
        guard = self._guard
        if guard is not None:
            os._exit = guard  # type: ignore[assignment]
        try:
            yield
        finally:
            _calls.evaluating.label = None
            if guard is not None:
                os._exit = guard.real

    def _evaluate_from(
        self,
        fn: Any,
        items: list[Any],
        i: int,
        star: bool,
        kwargs: Any,
        alarm: _Alarm | None,
        values: list[Any],
        errors: dict[int, dict[str, Any]],
    ) -> int:
        """Evaluate ``items[i:]`` into ``values`` until one fails (its packed failure goes into
        ``errors``, its value is None); return the index to go on from.

        The per-item path is what W1 measures (about 1 us of fitness): one clock read (a
        failure's ``seconds``; a vDSO call, no system call) and one look at :data:`_calls.forks`
        (a fitness that forked: its copy leaves at once, silently -- it must not answer the
        master, nor run the job's exit handlers, nor go on serving)."""
        forks = self.forks
        clock = time.perf_counter
        j, started = i, 0.0
        try:
            if alarm is None and not star:  # the common case, without a call per item around it
                for j in range(i, len(items)):
                    started = clock()
                    value = fn(items[j])
                    if _calls.forks != forks:
                        os._exit(0)
                    values.append(value)
                return len(items)
            for j in range(i, len(items)):
                started = clock()
                try:
                    if alarm is not None:
                        alarm.start()
                    value = apply_item(fn, items[j], star, kwargs)
                finally:  # a ring until the alarm knows the evaluation is over is its timeout
                    if alarm is not None:
                        alarm.running = False
                if _calls.forks != forks:
                    os._exit(0)
                values.append(value)
            return len(items)
        # any BaseException (SystemExit, KeyboardInterrupt, GeneratorExit, a class of the job's):
        # that evaluation's failure, reported; one bad individual never kills the worker (a
        # worker that left its loop would leave the master waiting for ever)
        except BaseException as e:
            if _calls.forks != forks:
                os._exit(0)
            info = pack_exception(e, self.label)
            info["seconds"] = clock() - started
            values.append(None)
            errors[j] = info
            return j + 1

    def _child(self, memory: int | None) -> Isolated:
        """This worker's child process (started, or restarted, as needed)."""
        from ._isolation import Isolated

        child = self._isolated
        if child is not None and child.memory != memory:
            child.close()
            child = None
        if child is None:
            # a worker that was not handed the job (SCOOP's, the serial one): its __main__'s
            job = self.job if self.job is not None else jobfile.spec_for_current_main()
            child = self._isolated = Isolated(job, self.label, memory)
        return child

    def close(self) -> None:
        """Stop this worker's isolated child, if it has one."""
        if self._isolated is not None:
            self._isolated.close()
            self._isolated = None

    def _dump_each(self, values: list[Any], errors: dict[int, dict[str, Any]]) -> Any:
        """Some result cannot be pickled: report those items as errors, keep the others."""
        for i, v in enumerate(values):
            try:
                dumps_results(v)
            except BaseException as e:
                values[i] = None
                errors[i] = pack_exception(unpicklable_result(v, e), self.label)
        return dumps_results(values)


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
    # before the job's code runs: what it leaves running is found and ended when this stops
    _leftovers.adopt_orphans()
    # the signals this worker ignores (its launcher's choice), for this process only: the
    # processes a fitness starts must die of them (a pool's terminate() sends SIGTERM)
    _leftovers.ignore_here(
        *(s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) is signal.SIG_IGN)
    )
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
    _calls.serving = True
    worker = Worker(label, sent)
    held = None
    stopped = False
    try:
        while True:
            record = loads(channel.recv()) if held is None else held
            if record[0] == protocol.STOP:
                stopped = True
                _stop(worker)  # before BYE: the master waits for it, and the line comes first
                channel.send(dumps(protocol.bye()))
                return 0
            if worker.pipelines(record):
                held = _ChannelWake(worker, channel).run(record)
            else:
                held = None
                channel.send(dumps(worker.run(record)))
                _leftovers.reap_zombies()
    finally:
        if not stopped:  # the master is gone (or this worker failed): the same, without a BYE
            _stop(worker)


def _stop(worker: Worker) -> None:
    """This process stops serving: its isolated child, then whatever the fitness left running
    (ended and named: :func:`evocluster._leftovers.end_leftovers`)."""
    worker.close()
    _leftovers.end_leftovers(worker.label)


class _ChannelWake:
    """What wakes an isolated worker that waits on its child (the child's
    :class:`~evocluster._isolation.Wake`): the master's channel turned readable, and the TASKs
    that came go to the child at once, so the child finds its next chunk waiting when it is done
    instead of waiting for a round trip through this worker (what that costs:
    benchmarks/RESULTS.md, "Isolation with chunks pipelined to the child", 2026-12-02).  It
    keeps the chunks in flight, and their RESULTs go back in order (:meth:`run`)."""

    def __init__(self, worker: Worker, channel: Channel) -> None:
        self.worker, self.channel = worker, channel
        self.order: deque[tuple[int, protocol.Result | None]] = deque()  # None: in the child
        self.held: Any = None  # a record read but not for the pipeline (STOP, other limits)

    def fileno(self) -> int:
        return self.channel.fileno() if self.held is None else -1

    def __call__(self) -> bool:
        while self.held is None and self.channel.ready():
            self.take(loads(self.channel.recv()))
        return self.held is None

    def take(self, record: Any) -> None:
        if self.worker.pipelines(record):
            self.order.append((record.chunk_id, self.worker.submit_isolated(record)))
        else:
            self.held = record

    def run(self, record: protocol.Task) -> Any:
        """Evaluate ``record`` and every task taken meanwhile; return the record held, if any."""
        self.take(record)
        while self.order:
            self()  # what came while the last result was sent
            chunk_id, done = self.order.popleft()
            if done is None:
                try:
                    done = self.worker.isolated_result(chunk_id, self)
                except (EOFError, ConnectionError):  # the master is gone: nothing to answer
                    raise
                except BaseException as e:  # the worker's own code, outside the fitness
                    done = self.worker.failed_chunk(chunk_id, e)
                    # the child's chunks were dropped with it: those queued behind fail alike
                    worker = self.worker
                    self.order = deque(
                        (cid, r if r is not None else worker.failed_chunk(cid, e))
                        for cid, r in self.order
                    )
            self.channel.send(dumps(done))
            _leftovers.reap_zombies()
        return self.held
