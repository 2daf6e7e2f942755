"""The worker side: what every process of a SCOOP run but the origin does with a task.

SCOOP sends :func:`_evaluate` by reference with every task evocluster submits; a worker runs it
in SCOOP's own loop.  It verifies the task's HMAC before it unpickles anything (a task that does
not verify is refused, logged on the worker's stderr and answered with a
:class:`~evocluster.errors.WorkerError`), loads a callable broadcast through SCOOP's shared
constants the first time a chunk needs it, runs the chunk through an evocluster
:class:`~evocluster._worker.Worker` (each item in its own ``try``, tracebacks labelled
``SCOOP worker on host H (pid P)``), and seals the RESULT record it sends home.  Under ``-n 1``
the origin evaluates through the same sealed path (its own :class:`_WorkerSide`).

On its first task a worker also adopts the job module as its ``__main__``
(:func:`_adopt_job_module`) and takes over SCOOP's requests for tasks (:class:`_Reserve`).
"""

from __future__ import annotations

import contextlib
import sys
import threading
import types
from typing import Any

from scoop import _control, shared

from ... import _jobfile as jobfile
from ... import _protocol as protocol
from ... import _sharing as sharing
from ... import _signing as signing
from ..._serialization import dumps, loads, nest, pack_exception
from ..._worker import Worker
from ...errors import ConfigurationError, SerializationError, WorkerError
from . import proc

#: How long a worker waits for a broadcast callable to arrive (it is sent before the first task
#: that needs it, so it normally arrives with that task).
CONST_TIMEOUT = 60.0
#: The name under which SCOOP's bootstrap imports the job on workers (``scoop/bootstrap``).
_SCOOP_WORKER_MODULE = "SCOOP_WORKER"


class _WorkerSide:
    """What one process needs to evaluate sealed tasks: its key, label and evocluster Worker."""

    def __init__(self, label: str, key: bytes | None = None) -> None:
        self.label = label
        self.worker = Worker(label)
        self.key = key
        self.key_error = ""
        if key is None:
            try:  # a worker reads the key, never creates one: it must be the origin's
                self.key = signing.load_key(create=False)
            except ConfigurationError as e:
                self.key_error = str(e)

    def reply(self, body: tuple[Any, ...]) -> tuple[bytes, list[Any]]:
        frames = dumps(body)
        tag = signing.sign(self.key, frames) if self.key is not None else b""
        return tag, nest(frames)

    def refuse(self, reason: str) -> tuple[bytes, list[Any]]:
        """Answer a task that is not evocluster's own, without loading any of it."""
        proc.say(f"{self.label} refused a task: {reason}; it was not unpickled")
        err = WorkerError(f"{self.label} refused the task: {reason}")
        return self.reply((None, None, self.label, _failed(-1, err, self.label)))

    def evaluate(self, sealed: Any) -> tuple[bytes, list[Any]]:
        try:
            tag, frames = sealed
            frames = list(frames)
        except (TypeError, ValueError):
            return self.refuse("it is not a sealed evocluster payload")
        if self.key is None:
            return self.refuse(f"this worker has no key to verify it ({self.key_error})")
        if not signing.verify(self.key, tag, frames):
            return self.refuse(
                "its signature does not verify (forged, corrupted, or signed with another key: "
                f"every process of a run needs the same {signing.KEY_ENV} or key file)"
            )
        token, cid, record, const = loads(frames)
        fn_key = record.fn_key
        failure = None
        if const is not None and not self.worker.functions.touch(fn_key):
            failure = self._load_broadcast(fn_key, const)
        if failure is None and record.shared:
            failure = self._fetch_shared(record)
        if failure is not None:
            return self.reply((token, cid, self.label, _failed(cid, failure, self.label)))
        return self.reply((token, cid, self.label, self.worker.run(record)))

    def _fetch_shared(self, record: protocol.Task) -> BaseException | None:
        """Hold the shared versions ``record`` refers to, each fetched from its SCOOP constant
        the first time (the worker's :meth:`~evocluster._worker.Worker.run` then finds them)."""
        isolate = record.limits is not None and record.limits.isolate
        try:
            sharing.install(record.shared, fetch=self._constant, keep_frames=isolate)
        except (SerializationError, WorkerError) as e:
            return e
        return None

    def _constant(self, name: str, token: bytes) -> Any:
        """The frames of a shared version, from the SCOOP constant it was broadcast as; SCOOP's
        copies of it, and of the older versions of ``name`` this worker never needed, dropped.

        Raises:
            WorkerError: it did not arrive in time, or its signature does not verify.
        """
        const = sharing.scoop_constant(name, token)
        frames, kind = self._sealed(const, f"the shared object {name!r}", f"({const})")
        if kind == "segment":  # a reference to the origin's copy in shared memory
            return loads(frames)
        for values in (shared.elements or {}).values():
            for other in [k for k in values if _replaced(k, name, token)]:
                del values[other]  # the loaded object keeps the buffers it uses
        return frames

    def _load_broadcast(self, fn_key: bytes, name: str) -> BaseException | None:
        try:
            frames, _ = self._sealed(name, "the broadcast callable", repr(name))
        except WorkerError as e:
            return e
        self.worker.touch_or_load(fn_key, frames)
        return None

    def _sealed(self, const: str, what: str, which: str) -> tuple[list[Any], str]:
        """The frames of SCOOP constant ``const`` (``what``, ``which`` name it in messages),
        its signature verified, and what they hold: ``"segment"`` for a reference to the
        origin's shared memory copy of a shared object, else ``""``.

        Raises:
            WorkerError: it did not arrive in time, or its signature does not verify.
        """
        sealed = shared.getConst(const, timeout=CONST_TIMEOUT)
        if sealed is None:
            raise WorkerError(
                f"{what} broadcast as SCOOP constant {const!r} did not reach {self.label} "
                f"within {CONST_TIMEOUT:g} s"
            )
        tag, frames, *kind = sealed
        frames = list(frames)
        if self.key is None or not signing.verify(self.key, tag, frames):
            proc.say(f"{self.label} refused {what} {which}: bad signature")
            raise WorkerError(f"{self.label} refused {what}: bad signature")
        return frames, str(kind[0]) if kind else ""


def _replaced(constant: Any, name: str, token: bytes) -> bool:
    """Whether SCOOP constant ``constant`` carries version ``token`` of shared object ``name``,
    or an older one (tokens are ``pid:counter``, counting up on the origin)."""
    suffix = "_" + name.encode().hex()
    if not (isinstance(constant, str) and constant.startswith(sharing.SCOOP_PREFIX)):
        return False
    if not constant.endswith(suffix):
        return False
    try:
        other = bytes.fromhex(constant[len(sharing.SCOOP_PREFIX) : -len(suffix)])
        return int(other.split(b":")[1]) <= int(token.split(b":")[1])
    except (ValueError, IndexError):
        return False


def _failed(cid: int, exc: BaseException, label: str) -> tuple[Any, ...]:
    """A RESULT record that fails a whole chunk with ``exc``."""
    return protocol.result(cid, nest(dumps([])), {-1: pack_exception(exc, label)}, 0.0)


# this worker's state, made on its first task (the lock: made once, should two threads evaluate;
# SCOOP itself runs every task on the main thread)
_side: _WorkerSide | None = None
_reserve: _Reserve | None = None
_side_lock = threading.Lock()


def _worker_side() -> _WorkerSide:
    """This worker's state, made on its first task."""
    global _side, _reserve
    with _side_lock:
        if _side is None:
            _adopt_job_module()
            _side = _WorkerSide(proc.label("worker"))
            if _control.execQueue is not None:
                _reserve = _Reserve(_control.execQueue)
        return _side


class _Reserve:
    """A worker's requests for tasks: one task in reserve, never more (evocluster's prefetch=2).

    SCOOP's worker asks its broker for a task whenever its queue holds less than 10 ms of work by
    its estimate (``lowwatermark``, 0.01 in SCOOP 0.7.2.0: a setting, not a measurement), and
    only then: a worker busy with a long chunk has nothing queued behind it
    (the others take all the work), and with cheap chunks the requests pile up at the broker,
    which later hands a whole burst to the worker that piled up most.  So evocluster makes the
    requests itself, counting them: at the start of each task it asks for one more if neither a
    queued task nor an unanswered request is in reserve.  SCOOP's own asking is switched off
    (``lowwatermark``), and so is its sending queued tasks back (``highwatermark``); a task or a
    request is always in reserve when SCOOP waits for the next task, so no worker starves.
    """

    def __init__(self, queue: Any) -> None:
        self.queue = queue
        queue.lowwatermark = -1.0  # SCOOP's pop() never asks
        queue.highwatermark = float("inf")  # nor sends a queued task back to the broker
        self.started = 0
        self.requested = len(queue)  # what SCOOP asked for so far has arrived (the running task)

    def task_started(self) -> None:
        self.started += 1
        # a task that arrived unasked (SCOOP asks on its own in rare cases) counts as asked for
        self.requested = max(self.requested, self.started + len(self.queue))
        if self.requested - self.started < 1:  # in reserve: queued tasks + unanswered requests
            self.queue.requestFuture()
            self.requested += 1


def _adopt_job_module() -> None:
    """Make a SCOOP worker look like every other evocluster worker.

    SCOOP's bootstrap imports the job as module ``SCOOP_WORKER`` and copies its names into its own
    ``__main__`` once.  evocluster's workers import the job as ``__mp_main__`` and *are* its
    ``__main__``: the job's ``__name__`` becomes ``__mp_main__`` and ``sys.modules["__main__"]`` the
    job itself, so that ``__main__.fitness``, pickled by reference on the origin, is looked up in
    the job as it is now.  The job's module-level functions and classes are renamed into
    ``__mp_main__`` too: a process pool a fitness starts with the ``spawn`` or ``forkserver``
    method re-runs the job as ``__mp_main__`` and finds them there (as ``SCOOP_WORKER.f`` it
    could not, and waited for ever); on the origin ``__mp_main__`` is the job's ``__main__``
    (:func:`evocluster._jobfile.alias_worker_module`), so their instances still travel home by
    reference.
    """
    module = sys.modules.get(_SCOOP_WORKER_MODULE)
    if module is None:
        return
    for value in list(vars(module).values()):
        if isinstance(value, (type, types.FunctionType)) and (
            getattr(value, "__module__", None) == _SCOOP_WORKER_MODULE
        ):
            with contextlib.suppress(AttributeError, TypeError):  # a class that refuses it
                value.__module__ = jobfile.WORKER_NAME
    module.__name__ = jobfile.WORKER_NAME
    module.__spec__ = None  # so that spawn re-runs it from its __file__, not as SCOOP_WORKER
    sys.modules[jobfile.WORKER_NAME] = module
    sys.modules["__main__"] = module
    jobfile.in_worker = True


def _decoy() -> None:
    """A task that does nothing (module level: SCOOP sends it by reference).  After a worker was
    lost, the origin sends one per worker: SCOOP's broker may still hold the dead worker's request
    for a task, and would hand it the next task; a decoy is what it loses.  A live worker that
    gets one asks for its next task as after any other."""
    _worker_side()
    if _reserve is not None:
        _reserve.task_started()


def _evaluate(sealed: Any) -> tuple[bytes, list[Any]]:
    """Worker side of every task (module level: SCOOP sends it by reference).

    ``sealed`` is ``(tag, frames)``; the frames are unpickled only once the tag verifies.  Never
    raises: whatever happens comes back as a sealed result record.
    """
    side = _worker_side()
    if _reserve is not None:
        _reserve.task_started()
    try:
        return side.evaluate(sealed)
    except BaseException as e:  # an evocluster bug: report it, never kill the worker over it
        err = WorkerError(f"{side.label} failed outside the fitness: {type(e).__name__}: {e}")
        err.__cause__ = e
        return side.reply((None, None, side.label, _failed(-1, err, side.label)))
