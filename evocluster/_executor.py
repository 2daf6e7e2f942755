"""The public executor: :class:`Executor` (a ``concurrent.futures.Executor``), :func:`map` and
:func:`starmap` (drop-ins for the builtin and DEAP's ``toolbox.map``), :func:`get_executor`, and
the process-wide default executor, which the launcher installs (:func:`install_shared`).

Layers, each importing only the one below::

    executor.py     this module: the API, argument checks, which pool an Executor uses
    _ending.py      how the run's pools end: at interpreter exit, and on SIGINT/SIGTERM/SIGHUP
    _pool.py        the scheduler thread that drives a transport (local, serial, MPI)
    _scheduling.py  the policy: jobs, chunks, sizes, prefetch, settling results
    backends/       the transports (and SCOOP's own pool), by name: backends/__init__.py

An Executor is a handle: under the launcher or SCOOP every Executor shares the run's workers, and
its :meth:`~Executor.shutdown` stops only that handle; elsewhere it starts a pool of its own.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import operator
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import CancelledError, Future
from concurrent.futures import Executor as _StdExecutor
from typing import Any, NoReturn

from . import _backends as backends
from . import _config as config
from . import _ending
from . import _jobfile as jobfile
from . import _monitor as monitor
from . import _serialization as serialization
from . import _sharing as sharing
from ._arguments import args_label, check_args, unsendable
from ._backends.base import Transport
from ._calls import in_evaluation
from ._failures import FailurePolicy
from ._initializer import Initialized
from ._jobs import CANCELLED, FAILED, ExecutorState, Job, limits_of
from ._map_results import MapResults
from ._pool import Pool
from ._scheduling import PoolBase
from .errors import BrokenPool, ConfigurationError, Failure, JobError, SerializationError

__all__ = [
    "Executor",
    "close_shared",
    "get_executor",
    "install_shared",
    "map",
    "shared_stats",
    "starmap",
]


class Executor(_StdExecutor):
    """Evaluate calls on the workers of a backend: a ``concurrent.futures.Executor``.

    Under the launcher (``python -m evocluster job.py``, ``mpiexec -n N python -m evocluster
    job.py``) ``Executor()`` and :func:`get_executor` use the workers the launcher started.
    Elsewhere ``Executor(4)`` (or ``Executor(backend="local", max_workers=4)``) starts a local
    pool of its own, shut down by :meth:`shutdown` or at the end of a ``with`` block.

    Args:
        max_workers: size of a pool this executor starts (``workers=`` is the same).  Default:
            ``EVOCLUSTER_WORKERS`` or ``os.cpu_count()``.  Under the launcher or SCOOP the run's
            workers are used whatever it says.
        initializer: called as ``initializer(*initargs)`` once in every worker process before the
            first task of this executor runs there.  If it raises, the executor is broken: that
            task and every pending one fail with :class:`BrokenPool`, and later calls raise it.
        initargs: the initializer's arguments (sent like a task's).
        backend: ``"auto"`` (the launcher's backend; under ``python -m scoop``, SCOOP's workers;
            else ``"local"``), ``"local"``, ``"serial"``, ``"mpi"`` (only under the launcher) or
            ``"scoop"`` (only under ``python -m scoop``).  Default: ``EVOCLUSTER_BACKEND`` or
            ``"auto"``.
        serialization: ``"upgrade"`` (default: pickle, callables that need it by value with
            cloudpickle), ``"strict"`` (pickle only; what cannot travel fails on the master, before
            dispatch) or ``"cloudpickle"``.  Default: under the launcher, its ``--serialization``;
            else ``EVOCLUSTER_SERIALIZATION``, else ``"upgrade"``.
        on_error: what a failed evaluation (the fitness raised, timed out, or its process died)
            becomes: ``"raise"`` (default: the caller gets the exception, with the worker's
            traceback), ``"penalize"`` (its result is ``penalty``) or ``"retry:N"`` (evaluated
            again up to N times, on another worker where there is one; then ``"penalize"`` if a
            penalty is set, else ``"raise"``).  Every failure is recorded in :attr:`failures`.
            A fitness's ``BaseException`` that is not an ``Exception`` (``sys.exit()``,
            ``KeyboardInterrupt``) is such a failure too, and reaches the caller as
            :class:`~evocluster.EvaluationAborted` (the original as ``__cause__``): the stdlib's
            ``ProcessPoolExecutor`` re-raises it as itself, as if the caller had exited or been
            interrupted.
        penalty: the result of a penalized evaluation (any value; it never travels).
        eval_timeout: seconds one evaluation may run; a longer one is abandoned (interrupted in
            the worker, or its isolated process killed) and fails under ``on_error``.
        isolate: evaluate in a child process each worker keeps, so that a segfault, an
            ``os._exit`` or the OOM killer costs one evaluation, never the worker.
        eval_memory: bytes (or ``"2G"``) of address space an isolated evaluation may use.
        on_worker_loss: what the pool this executor starts does when a worker's process is lost
            (killed, out of memory): ``"fail"`` (default: every pending evaluation raises
            :class:`BrokenPool`) or ``"continue"`` (its evaluations go to the workers left, and
            :attr:`failures` records them as ``evocluster.errors.WorkerLost``; the pool breaks
            when none is left).  The launcher's and SCOOP's pools take theirs from
            ``--on-worker-loss`` / ``EVOCLUSTER_ON_WORKER_LOSS``; MPI refuses ``"continue"``
            unless its launcher lets the job outlive a rank (Open MPI's ``--enable-recovery``).
        **options: further :class:`evocluster._config.Options` fields (``prefetch``, ...).
            Under the launcher, the fault options default to its ``--on-error``, ``--penalty``,
            ``--eval-timeout``, ``--isolate`` and ``--eval-memory``.

    Raises:
        ValueError: ``max_workers`` is 0 or less.
        TypeError: ``initializer`` is not callable.
        ConfigurationError: an unknown backend, policy or option, ``"mpi"`` outside the
            launcher, or ``"scoop"`` outside SCOOP.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        *,
        backend: str | None = None,
        workers: int | None = None,
        serialization: str | None = None,
        **options: Any,
    ):
        if max_workers is not None:
            if workers is not None and workers != max_workers:
                raise TypeError("give max_workers or workers (the same option), not both")
            if max_workers <= 0:
                raise ValueError("max_workers must be greater than 0")
            workers = max_workers
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if _launcher is not None:  # the launcher's --serialization, --on-error, ...
            serialization = _launcher_defaults(serialization, options)
        opts = config.resolve(
            backend=backend, workers=workers, serialization=serialization, **options
        )
        self._policy = opts.serialization
        self._options = opts
        self._failure_policy = FailurePolicy.of(opts.on_error, opts.penalty)
        self._limits = limits_of(opts)
        self._owner = ExecutorState(has_initializer=initializer is not None)
        self._initializer = initializer
        self._initargs = tuple(initargs)
        if initializer is not None:
            check_args(self._initargs, "initargs", self._policy)
        # one wrapper per callable (the function table serialises each object once)
        self._wrapped: dict[int, tuple[Callable[..., Any], Initialized]] = {}
        self._token = os.urandom(8).hex()  # names this executor's initializer on the workers
        self._pool, self._owns_pool = _open_pool(opts)
        _check_worker_loss(options.get("on_worker_loss"), self._pool, self._owns_pool)
        if self._owns_pool:
            _ending.owned[self._pool] = self._owner
            # dropped without shutdown: its pool finishes the work submitted, then stops (as the
            # stdlib's executors do when collected)
            weakref.finalize(self, self._pool.close, False)

    @property
    def backend(self) -> str:
        """The backend actually used: ``"mpi"``, ``"local"``, ``"serial"`` or ``"scoop"``."""
        return self._pool.name

    @property
    def n_workers(self) -> int:
        """How many workers evaluate in parallel."""
        return self._pool.n_workers

    @property
    def max_workers(self) -> int:
        """:attr:`n_workers`, under the name the engine asks for (``engine.PolicyExecutor``)."""
        return self._pool.n_workers

    @property
    def num_workers(self) -> int:
        """:attr:`n_workers`, under ``MPIPoolExecutor``'s name."""
        return self._pool.n_workers

    @property
    def options(self) -> config.Options:
        """The options this executor runs with (resolved: keywords, environment, launcher)."""
        return self._options

    @property
    def failures(self) -> list[Failure]:
        """Every failed evaluation of this executor's calls so far, in the order they were
        settled, under every ``on_error`` policy: :class:`evocluster.Failure` records (item
        index, error type and message, worker, attempt, seconds, what became of it)."""
        return list(self._owner.failures)

    def with_policy(
        self,
        on_error: str | None = None,
        penalty: Any = None,
        eval_timeout: float | None = None,
    ) -> Executor:
        """A handle on the same workers whose calls follow other failure settings (those not
        given are this executor's).  Its :meth:`shutdown` stops only that handle; its
        :attr:`failures` are its own."""
        opts = self._options
        if on_error is not None:
            opts = opts._replace(on_error=on_error)
        if penalty is not None:
            opts = opts._replace(penalty=penalty)
        if eval_timeout is not None:
            opts = opts._replace(eval_timeout=eval_timeout)
        config.check(opts)
        handle = object.__new__(type(self))
        handle.__dict__.update(self.__dict__)
        handle._options = opts
        handle._failure_policy = FailurePolicy.of(opts.on_error, opts.penalty)
        handle._limits = limits_of(opts)
        handle._owner = ExecutorState(has_initializer=self._initializer is not None)
        handle._owns_pool = False
        handle._wrapped = {}
        return handle

    def _checked_policy(self) -> FailurePolicy:
        """This executor's failure policy for a call (refused if it would penalize without a
        penalty)."""
        failure_policy = self._failure_policy
        if failure_policy.fallback == "penalize" and self._options.penalty is None:
            raise ConfigurationError(
                "on_error='penalize' needs the value a failed evaluation gets: give penalty= "
                "(or the launcher's --penalty, e.g. --penalty=-1 or --penalty='(-1e9, 1e9)', "
                "one value per objective)"
            )
        return failure_policy

    def stats(self) -> dict[str, float]:
        """Counters of the pool since it started: ``chunks`` and ``items`` dispatched,
        ``functions_sent`` (callables shipped to a worker), ``messages_sent`` / ``bytes_sent`` and
        ``messages_received`` / ``bytes_received`` on the master's side of the transport (under
        SCOOP: sealed tasks and broadcasts, sealed results; shared by every handle).  Under MPI
        also ``doorbells`` (workers woken by a ring when sent work, rather than by their next
        poll) and ``rings``.  Except under SCOOP, the master's CPU cost (its scheduler thread's
        CPU time, floats): ``master_send_cpu_s`` (choosing, pickling and sending chunks) and
        ``master_recv_cpu_s`` (the rest: polling for, reading and settling results), seconds;
        ``master_send_us_per_message``, ``master_recv_us_per_message`` and
        ``master_us_per_item`` (both, per item dispatched), microseconds."""
        return self._pool.stats()

    def hosts(self) -> dict[str, int]:
        """The workers of this executor's pool per host (``{"node1": 32, "node2": 32}``), once
        every worker has said where it runs (empty until then: a worker says so as it starts).
        Under SCOOP, whose workers are known as they answer: those that have answered."""
        return dict(self._pool.hosts() or {})

    def _function(self, fn: Callable[..., Any], policy: str) -> tuple[bytes, Any]:
        """The function key and payload of ``fn`` (with this executor's initializer, if any)."""
        fn = sharing.bind(fn)
        if self._initializer is not None:
            entry = self._wrapped.get(id(fn))
            if entry is None or entry[0] is not fn:
                entry = (fn, Initialized(fn, self._initializer, self._initargs, self._token))
                self._wrapped[id(fn)] = entry
            fn = entry[1]
        return self._pool.functions.lookup(fn, policy)

    def _check_open(self) -> None:
        """Raise if this executor takes no more work (caller holds the owner's lock)."""
        _refuse_nested()
        if self._owner.broken is not None:
            raise BrokenPool(self._owner.broken)
        if _ending.interpreter_exiting:  # first: the exit hook also shuts executors down
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")
        if self._owner.shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")

    def _put(self, job: Job) -> None:
        with self._owner.lock:
            self._check_open()
            job.owner = self._owner  # before put: a failure may be settled (and recorded) at once
            self._pool.put(job)  # raises BrokenPool once a worker was lost
            self._owner.add(job)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Schedule ``fn(*args, **kwargs)`` on a worker; return its ``Future``.

        The arguments are pickled here, at once (the stdlib pickles them later, in another
        thread): what cannot reach the workers raises now, and later changes to a mutable
        argument do not travel.

        Raises:
            RuntimeError: after :meth:`shutdown` or once the interpreter is exiting (under SCOOP,
                also from a thread other than the main one).
            BrokenPool: the pool lost a worker, or this executor's initializer failed.
            SerializationError: ``fn`` or the arguments cannot reach the workers (the pickling
                error, or whatever the arguments' own pickling code raised, is its cause).
        """
        with self._owner.lock:
            self._check_open()
        key, payload = self._function(fn, self._policy)
        kw = kwargs or None
        # pickled once, here: the check, and the chunk the scheduler sends (a snapshot of the
        # arguments at submit time)
        try:
            frames = serialization.checked_dumps_args(
                ([args], True, kw), (args, kwargs), "args", self._policy
            )
        except SerializationError:
            raise
        except Exception as e:
            raise unsendable("args", e) from e
        failure_policy = self._checked_policy()
        future = self._pool.new_future()
        job = Job(
            key, payload, [args], True, kw, 1, future, self._policy, failure_policy, self._limits
        )
        job.frames = frames
        job.fn = fn
        self._put(job)
        self._pool.step()
        return future

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int | None = None,
        serialization: str | None = None,
    ) -> Iterator[Any]:
        """Return an iterator over ``fn(*args)`` for ``args`` in ``zip(*iterables)``, in order.

        Args:
            fn: the callable; serialised once per run and cached by every worker.
            *iterables: consumed at once, as ``concurrent.futures.Executor.map`` does (in
                steps: Ctrl-C, or the ``timeout``, ends the reading of an endless one).
            timeout: seconds from this call after which a result not yet available raises
                ``TimeoutError`` (here already, if the input is still being read then).
            chunksize: items per message; ``None`` (default) adapts to the measured cost per
                item: expensive calls go one by one, cheap ones in batches.
            serialization: the policy for this call (default: the executor's).

        Raises:
            ValueError: ``chunksize`` below 1, or an unknown policy.
            SerializationError: ``fn`` or the first call's arguments cannot reach the workers
                (checked before anything is dispatched); a later item that cannot, when its
                result is reached (the message names the item's index).
            TimeoutError: ``timeout`` passed while the iterables were still being read.
            Exception: the first exception raised by ``fn``, when its result is reached, with the
                worker's traceback as ``__cause__`` (a ``BaseException`` that is not an
                ``Exception``, such as ``SystemExit``, as :class:`~evocluster.EvaluationAborted`).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        star = len(iterables) != 1
        items = _take_all(iterables, deadline)
        job = self._map_job(fn, items, star, chunksize, serialization)
        self._pool.step()
        return self._results(job, deadline)

    def starmap(
        self,
        fn: Callable[..., Any],
        iterable: Iterable[Iterable[Any]],
        timeout: float | None = None,
        chunksize: int | None = None,
        serialization: str | None = None,
    ) -> Iterator[Any]:
        """Return an iterator over ``fn(*args)`` for ``args`` in ``iterable``, in order (as
        ``itertools.starmap`` and ``MPIPoolExecutor.starmap``).  Arguments as :meth:`map`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        items = [tuple(args) for args in _take_all((iterable,), deadline)]
        job = self._map_job(fn, items, True, chunksize, serialization)
        self._pool.step()
        return self._results(job, deadline)

    def map_results(self, fn: Callable[..., Any], *iterables: Iterable[Any]) -> MapResults:
        """:meth:`map`, whose results can also be waited for with a timeout, one at a time and
        in order, without losing any (``engine.PolicyExecutor``: the engine's stepped waits)."""
        job = self._map_job(fn, _take_all(iterables, None), len(iterables) != 1, None, None)
        self._pool.step()
        return MapResults(job, self._pool, self._take)

    def _map_list(
        self,
        fn: Callable[..., Any],
        items: list[Any],
        star: bool,
        chunksize: int | None,
        policy: str | None,
    ) -> list[Any]:
        """``list(self.map(...))`` without waking this thread once per result.

        An item that raises ends the map early, as ``list(Executor.map(...))`` ends at the
        first exception it reaches and cancels what has not started: the items not yet sent
        are not evaluated (an evaluation may take hours, and its result would be dropped);
        those in flight finish, so that the exception raised is the one of the lowest item
        that failed, the one a serial ``map`` would raise."""
        job = self._map_job(fn, items, star, chunksize, policy)
        try:
            self._pool.wait_done_or_failed(job)
            if not job.done:  # an item failed: no result of this map will be returned
                job.cancelled = True
                self._pool.wakeup()
                self._pool.wait_jobs([job])  # those in flight settle, the rest is cancelled
        finally:
            if job.remaining > 0:  # interrupted (KeyboardInterrupt): stop dispatching the rest
                job.cancelled = True
                self._pool.wakeup()
        for i in sorted(job.errors):
            raise job.errors[i]  # (the items cancelled after it are above it)
        if any(v is CANCELLED for v in job.values):  # identity: results may be numpy arrays
            raise CancelledError()
        return job.values

    def _map_job(
        self,
        fn: Callable[..., Any],
        items: list[Any],
        star: bool,
        chunksize: int | None,
        policy: str | None,
    ) -> Job:
        if chunksize is not None:
            # an int, or None: a float or a string reached the scheduler's thread as a slice
            # bound and broke the pool (BrokenPool) instead of refusing this call
            try:
                chunksize = operator.index(chunksize)
            except TypeError:
                raise TypeError(f"chunksize must be an int or None, not {chunksize!r}") from None
            if chunksize < 1:
                raise ValueError("chunksize must be >= 1")
        with self._owner.lock:
            self._check_open()
        policy = (
            self._policy if policy is None else config.resolve(serialization=policy).serialization
        )
        failure_policy = self._checked_policy()
        key, payload = self._function(fn, policy)
        job = Job(
            key, payload, items, star, None, chunksize, None, policy, failure_policy, self._limits
        )
        job.fn = fn
        if items:  # the first call is checked here, before anything is dispatched
            check_args(items[0], args_label(job, 0), policy)
        self._put(job)
        return job

    def _results(self, job: Job, deadline: float | None) -> Iterator[Any]:
        try:
            for i in range(job.n):
                # the value is not kept in this frame: yielded, it is the caller's alone
                yield self._take(job, i, deadline)
        finally:
            if job.remaining > 0:
                job.cancelled = True  # abandoned (exception, timeout, or not consumed)
                self._pool.wakeup()

    def _take(self, job: Job, i: int, deadline: float | None) -> Any:
        """Map slot ``i``'s result, dropped from the job as it is handed over (a generation of
        large individuals is not held twice); raise what the slot holds instead of a result."""
        value = self._pool.wait_slot(job, i, deadline)
        if value is FAILED:
            raise job.errors.pop(i)
        if value is CANCELLED:
            raise CancelledError()
        job.values[i] = None  # settled slots are never written again
        return value

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting work; optionally cancel what has not started; optionally wait.

        Safe to call more than once, in any order of ``wait``.  ``cancel_futures`` cancels the
        futures that have not started (waiters on them are told at once) and the map items not
        yet dispatched; what is running finishes.  If this executor started its own pool, the
        pool's workers are stopped once the remaining work is done; a pool shut down with
        ``wait=False`` whose work is still running when the interpreter exits is stopped then,
        its running evaluations killed (under SCOOP, waiting drives SCOOP, whose workers go on
        serving the run's other handles).
        """
        with self._owner.lock:
            self._owner.shutdown = True
            jobs = list(self._owner.jobs)
        if cancel_futures:
            for job in jobs:
                job.cancelled = True
                self._pool.cancel_future(job)  # a running future stays running
            self._pool.wakeup()  # the driver notifies the waiters of what it cancelled
        if self._owns_pool:
            if self._pool.close(wait=wait, cancel=cancel_futures):
                _ending.owned.pop(self._pool, None)
        elif wait and jobs:
            self._pool.wait_jobs(jobs)


# ---------------------------------------------------------------------- backends and defaults
#: options an Executor under the launcher takes from the launcher when not given
_LAUNCHER_DEFAULTS = ("on_error", "penalty", "eval_timeout", "isolate", "eval_memory")
_launcher: config.Options | None = None  # the launcher's options: defaults of the job's executors
_default: Executor | None = None
_default_lock = threading.Lock()
#: Items read from a map's iterables at a time.  ``list(iterable)`` reads in C until the input
#: ends: an endless iterator (``itertools.count()``) never returns, deaf to Ctrl-C and SIGTERM
#: (Python runs signal handlers between bytecodes) while memory grows by gigabytes a second.
_TAKE = 4096


def _take_all(iterables: tuple[Iterable[Any], ...], deadline: float | None) -> list[Any]:
    """The items of a map: each item of the one iterable (the EA's population: as it is, no
    tuple per item), else the argument tuples ``zip(*iterables)`` makes.  Read in steps of
    :data:`_TAKE` items, so that a signal ends an endless read and ``deadline`` (a map's
    ``timeout``) bounds it.

    Raises:
        TimeoutError: the input was still being read at ``deadline``.
    """
    if all(type(it) in (list, tuple, range) for it in iterables):  # finite: read at once
        return list(zip(*iterables)) if len(iterables) != 1 else list(iterables[0])  # noqa: B905
    source = iter(iterables[0]) if len(iterables) == 1 else zip(*iterables)  # noqa: B905
    items: list[Any] = []
    while True:
        step = list(itertools.islice(source, _TAKE))
        items += step
        if len(step) < _TAKE:
            return items
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(
                f"map(timeout=...): the timeout passed while its input was still being read "
                f"({len(items)} items so far): is an iterable endless?"
            )


def _launcher_defaults(serialization: str | None, options: dict[str, Any]) -> str | None:
    """Fill ``options`` with the launcher's fault options not given; return the serialisation
    policy (the launcher's ``--serialization`` unless given)."""
    assert _launcher is not None
    for name in _LAUNCHER_DEFAULTS:
        if options.get(name) is None:
            options[name] = getattr(_launcher, name)
    return _launcher.serialization if serialization is None else serialization


def _refuse_nested() -> None:
    """A fitness that maps or submits would wait for its own pool (serial: in the scheduler thread
    that evaluates it) or start a pool inside a worker: refuse it, as that evaluation's error."""
    where = in_evaluation()
    if where is not None:
        raise RuntimeError(
            f"evocluster.map/submit was called inside a fitness evaluation ({where}): an "
            "evaluation cannot start other evaluations; call the function directly inside the "
            "fitness, or map from the job's main code"
        )


def _open_pool(opts: config.Options) -> tuple[PoolBase, bool]:
    """The pool an Executor with ``opts`` uses, and whether it is its own (stopped on shutdown):
    the launcher's, SCOOP's, or a new one of a thread-driven backend."""
    _refuse_nested()
    name = opts.backend
    if name == "auto":
        name = next(iter(_ending.shared), "scoop" if backends.scoop_running() else "local")
    if name in _ending.shared:
        return _ending.shared[name], False
    if name == "scoop":  # SCOOP's workers belong to the run, not to this executor
        scoop_pool = backends.open_scoop_pool(opts)
        monitor.pool_opened(scoop_pool)  # a run without the launcher: its monitor starts now
        return scoop_pool, False
    if name == "mpi":
        raise ConfigurationError(
            "the MPI backend serves jobs started by the launcher: run `mpiexec -n N python -m "
            "evocluster job.py` (rank 0 runs the job, ranks 1..N-1 evaluate)"
        )
    if jobfile.in_worker:
        raise JobError(
            "the job started a pool while a worker was importing it: put the code that runs the "
            "evolution under `if __name__ == '__main__':` so that workers only import definitions"
        )
    size = config.mpi_world_size_from_env()
    if size is not None and size > 1 and not _ending.shared:
        _refuse_plain_mpi(size)
    job = jobfile.spec_for_current_main()
    serialization.set_worker_main_names(jobfile.module_level_names(job))
    pool = Pool(backends.open_transport(name, opts, job), opts, name)
    _ending.install_exit_signals()
    monitor.pool_opened(pool)
    return pool, True


def _check_worker_loss(asked: str | None, pool: PoolBase, owned: bool) -> None:
    """``on_worker_loss`` is the pool's: an Executor on a pool it does not own (the launcher's,
    SCOOP's) cannot change it, and none can make an MPI pool outlive a rank.

    Raises:
        ConfigurationError: ``asked`` differs from what that pool does.
    """
    if asked is None or owned or pool.options.on_worker_loss == asked:
        return
    if pool.name == "mpi":
        raise ConfigurationError(
            "on_worker_loss='continue' cannot work under MPI: the MPI launcher ends every rank "
            "when one dies; leave it at 'fail', or run on the local pool or SCOOP"
        )
    raise ConfigurationError(
        f"on_worker_loss={asked!r}: this executor uses the run's {pool.name} pool, which does "
        f"{pool.options.on_worker_loss!r} (set by the launcher's --on-worker-loss or "
        "EVOCLUSTER_ON_WORKER_LOSS, or by the first executor of a SCOOP run)"
    )


def _refuse_plain_mpi(size: int) -> NoReturn:
    """``mpiexec -n N python job.py``: every rank runs the whole job.  A usage error: rank 0 says
    so once, and every rank exits 2 (``SystemExit``: no traceback per rank)."""
    if (config.mpi_rank_from_env() or 0) == 0:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        print(
            f"evocluster: this process is one of {size} MPI ranks but was not started through "
            "evocluster, so every rank would run the whole job: launch it as "
            f"`mpiexec -n {size} python -m evocluster job.py`",
            file=sys.stderr,
            flush=True,
        )
    raise SystemExit(2)


def install_shared(name: str, transport: Transport, opts: config.Options) -> Executor:
    """Launcher only: make ``transport`` the pool every Executor uses; return the default one."""
    global _default, _launcher
    _launcher = opts
    _ending.shared[name] = Pool(transport, opts, name)
    _default = Executor(backend=name)
    _ending.install_exit_signals()
    return _default


def close_shared(
    wait: bool = True,
    cancel: bool = False,
    timeout: float | None = None,
    grace: float | None = None,
) -> bool:
    """Launcher only: stop the shared pool's workers after the work in flight (``cancel``: drop
    the work not started).  Returns whether every pool ended within ``timeout``; with ``grace``
    (and ``wait``), whether it ended without evaluations the job abandoned left running ``grace``
    seconds (the caller then kills the workers, and calls this again)."""
    global _default
    if grace is not None and wait:
        ended = all(_ending.finish(pool, grace) for pool in list(_ending.shared.values()))
        if not ended:
            return False
    else:
        ended = all(pool.close(wait, cancel, timeout) for pool in list(_ending.shared.values()))
    _ending.shared.clear()
    _default = None
    return ended


def shared_stats() -> dict[str, float]:
    """Launcher only: the counters of the run's shared pools, summed (``failed``, ``retried``,
    messages and bytes; not the master's cost per message or item, which do not add up)."""
    total: dict[str, float] = {}
    for pool in _ending.shared.values():
        for k, v in pool.stats().items():
            if not k.startswith("master_"):
                total[k] = total.get(k, 0) + v
    return total


def get_executor() -> Executor:
    """The executor the launcher set up; outside the launcher, a local pool started on first use.

    Outside the launcher the pool follows ``EVOCLUSTER_BACKEND`` / ``EVOCLUSTER_WORKERS`` (default:
    a local pool of ``os.cpu_count()`` workers) and is shut down when the interpreter exits.
    """
    global _default
    with _default_lock:
        # a new handle once the default was shut down (`with get_executor() as ex:`): on the
        # launcher's workers if there are, else on a new pool
        if _default is None or _default._owner.shutdown:
            _default = Executor()
            if _default._owns_pool:
                atexit.register(_default.shutdown)
        return _default


def map(  # noqa: A001 - a drop-in for the builtin, on purpose
    fn: Callable[..., Any],
    *iterables: Iterable[Any],
    chunksize: int | None = None,
    serialization: str | None = None,
) -> list[Any]:
    """``[fn(*args) for args in zip(*iterables)]``, evaluated on the workers, in order.

    A drop-in for the builtin ``map`` and DEAP's ``toolbox.map``:
    ``toolbox.register("map", evocluster.map)``.

    Args:
        chunksize: items per message; ``None`` (default) adapts to the measured cost.
        serialization: ``"upgrade"``, ``"strict"`` or ``"cloudpickle"`` for this call.

    Raises:
        SerializationError: ``fn`` or the first item cannot reach the workers (before dispatch).
        Exception: the first exception raised by ``fn``, with the worker's traceback as cause.
    """
    if not iterables:
        raise TypeError("map() must have at least two arguments.")  # the builtin's words
    star = len(iterables) != 1
    return get_executor()._map_list(fn, _take_all(iterables, None), star, chunksize, serialization)


def starmap(
    fn: Callable[..., Any],
    iterable: Iterable[Iterable[Any]],
    chunksize: int | None = None,
    serialization: str | None = None,
) -> list[Any]:
    """``[fn(*args) for args in iterable]``, evaluated on the workers, in order (as
    ``itertools.starmap``; ``MPIPoolExecutor.starmap`` users: the same call, a list back).

    Args and raises: as :func:`map`.
    """
    items = [tuple(args) for args in _take_all((iterable,), None)]
    return get_executor()._map_list(fn, items, True, chunksize, serialization)
