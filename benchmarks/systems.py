"""The systems compared: how users launch each one, and how its pool maps.

A system is a launch function (the argv that starts ``bench_job.py`` the way its users start their
own jobs), a pool function (a context manager, run in the master, that yields
``pmap(fn, items) -> list`` using the system's *default* chunk size), if its users need one to
map a lambda or a closure (W5), their workaround and, for evocluster's systems, the executor its
engine is handed (W3's engine rows).  Adding a system is adding those functions and one line in
:data:`SYSTEMS`.

Imports of the systems themselves (evocluster, mpi4py, ...) stay inside the pool functions, so the
driver and the other systems never import them.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import shlex
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from workloads import WORKLOADS, Fn, PMap, Workaround

REFERENCE = "mpi4py.futures"
#: the scale workloads (W7-<N>x<ms>ms), the only ones the W7-only systems run
W7_NAMES = tuple(name for name in WORKLOADS if name.startswith("W7-"))

#: A system MPI: Debian's Open MPI, and an interpreter whose mpi4py is compiled against it
#: (``bash .ci/openmpi`` builds ``.venv-openmpi`` with evocluster installed in it).
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPENMPI_PYTHON = os.path.join(_REPO, ".venv-openmpi", "bin", "python")
#: Open MPI refuses root and more ranks than cores unless asked; shared memory on one node
OPENMPI_FLAGS = ["--allow-run-as-root", "--oversubscribe", "--mca", "btl", "self,vader"]


def _mpiexec() -> str:
    """The ``mpiexec`` installed next to this Python (the mpich wheel's), else the one on PATH.

    Resolved once here so that a version-manager shim in front of it does not add to start-up."""
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return beside if os.access(beside, os.X_OK) else (shutil.which("mpiexec") or "mpiexec")


# ------------------------------------------------------------------------------ launchers
def launch_mpiexec_module(module: str) -> Callable[[str, list[str], int], list[str]]:
    """``mpiexec -n W+1 python -m MODULE job.py ...``: rank 0 is the master, W worker ranks."""

    def argv(python: str, job: list[str], workers: int) -> list[str]:
        return [_mpiexec(), "-n", str(workers + 1), python, "-m", module, *job]

    return argv


def openmpi_missing() -> str | None:
    """Why the Open MPI systems cannot run here, or None."""
    if shutil.which("mpiexec.openmpi") is None or not os.access(OPENMPI_PYTHON, os.X_OK):
        return "no system Open MPI environment: `bash .ci/openmpi` builds .venv-openmpi"
    return None


def launch_openmpi_module(module: str) -> Callable[[str, list[str], int], list[str]]:
    """``mpiexec -n W+1 python -m MODULE job.py ...`` with the system's Open MPI: its own
    ``mpiexec`` and the interpreter whose mpi4py is built against it (not run.py's)."""

    def argv(python: str, job: list[str], workers: int) -> list[str]:
        mpiexec = shutil.which("mpiexec.openmpi") or "mpiexec.openmpi"
        return [mpiexec, *OPENMPI_FLAGS, "-n", str(workers + 1), OPENMPI_PYTHON, "-m", module, *job]

    return argv


#: evocluster's launcher starts at most this many local workers per core unless
#: ``--force-workers`` (``evocluster/_backends/__init__.py`` ``WORKERS_PER_CORE``; not imported:
#: the driver imports no system)
LOCAL_WORKERS_PER_CORE = 4


def launch_evocluster_local(python: str, job: list[str], workers: int) -> list[str]:
    """``python -m evocluster --backend local --workers W job.py ...``, plus ``--force-workers``
    where W is above the launcher's cap (W2 and W3's 16 workers on fewer than 4 cores), as its
    users must write it there."""
    argv = [python, "-m", "evocluster", "--backend", "local", "--workers", str(workers)]
    if workers > LOCAL_WORKERS_PER_CORE * (os.cpu_count() or 1):
        argv.append("--force-workers")
    return [*argv, *job]


def launch_scoop(extra: int) -> Callable[[str, list[str], int], list[str]]:
    """``python -m scoop -n W+extra job.py ...``.  SCOOP counts its origin (the process that runs
    the job as ``__main__``) as one of the ``-n`` processes: plain SCOOP's origin also evaluates
    (``extra`` 0), evocluster's does not (``extra`` 1: W workers besides the origin)."""

    def argv(python: str, job: list[str], workers: int) -> list[str]:
        return [python, "-m", "scoop", "-n", str(workers + extra), *job]

    return argv


def launch_python(python: str, job: list[str], workers: int) -> list[str]:
    """A plain script that creates its own pool."""
    return [python, *job]


#: a ``+log`` variant's run log, one per run: ``{run}`` in a variant's flags is the path of the
#: run's JSON record (the job's ``--out``, in run.py's temporary directory) without ``.json``
RUN_LOG = "{run}.runlog.jsonl"


def with_flags(
    launch: Callable[[str, list[str], int], list[str]], flags: list[str]
) -> Callable[[str, list[str], int], list[str]]:
    """``launch`` with evocluster launcher flags (``--isolate``, ``--eval-timeout S``) just before
    the job, where its users put them: ``python -m evocluster --isolate job.py ...``.  ``{run}``
    in a flag becomes the run's own path prefix (:data:`RUN_LOG`)."""

    def argv(python: str, job: list[str], workers: int) -> list[str]:
        base = launch(python, job, workers)
        at = len(base) - len(job)  # the job is the argv's tail
        run = job[job.index("--out") + 1].removesuffix(".json")
        return [*base[:at], *(f.format(run=run) for f in flags), *base[at:]]

    return argv


# ------------------------------------------------------------------------------ pools
@contextlib.contextmanager
def evocluster_pool(
    workers: int, backend: str, options: dict[str, Any] | None = None
) -> Iterator[PMap]:
    """The pool the launcher started; the launcher also stops it after the job.  ``options``:
    what the launcher's flags must have set (a variant): :class:`evocluster._config.Options`
    fields, or the monitor's (:func:`_in_effect`)."""
    import evocluster

    ex = evocluster.get_executor()
    if (ex.backend, ex.n_workers) != (backend, workers):
        raise RuntimeError(f"expected {backend} x {workers}, got {ex.backend} x {ex.n_workers}")
    for name, want in (options or {}).items():
        got = _in_effect(ex, name)
        if got != want:
            raise RuntimeError(f"expected {name}={want!r}, got {got!r}")

    def pmap(fn: Fn, items: list[Any], timeout: float | None = None) -> list[Any]:
        if timeout is None:
            return evocluster.map(fn, items)  # default chunksize=None: adaptive
        return list(ex.map(fn, items, timeout=timeout))  # evocluster.map has no timeout

    yield pmap


def _in_effect(ex: Any, name: str) -> Any:
    """An :class:`evocluster._config.Options` field of the launcher's executor, else a fact of
    the monitor it started (the progress display and the run log): its settings ``quiet``,
    ``progress_every``, ``log_every``, and ``run_log`` (a log is open), ``monitor_thread`` (its
    thread runs)."""
    if name in type(ex.options)._fields:
        return getattr(ex.options, name)
    from evocluster import _monitor

    monitor = _monitor.current()
    if monitor is None:
        return None
    facts = {"run_log": monitor.log is not None, "monitor_thread": monitor._thread is not None}
    return facts[name] if name in facts else getattr(monitor.settings, name)


@contextlib.contextmanager
def mpi4py_futures_pool(workers: int, per_worker: bool = False) -> Iterator[PMap]:
    """``MPIPoolExecutor().map``: chunksize 1, its default; with ``per_worker``, one chunk per
    worker (``ceil(tasks / workers)``: the best chunk size for W7's equal tasks)."""
    from mpi4py.futures import MPIPoolExecutor

    with MPIPoolExecutor() as ex:
        if ex.num_workers != workers:
            raise RuntimeError(f"expected {workers} workers, got {ex.num_workers}")

        def pmap(fn: Fn, items: list[Any], timeout: float | None = None) -> list[Any]:
            # on a timeout the iterator cancels the tasks not started
            chunksize = -(-len(items) // workers) if per_worker else 1
            return list(ex.map(fn, items, timeout=timeout, chunksize=max(1, chunksize)))

        yield pmap


def mpi4py_futures_chunked_pool(workers: int) -> contextlib.AbstractContextManager[PMap]:
    return mpi4py_futures_pool(workers, per_worker=True)


def launch_bare_ranks(python: str, job: list[str], workers: int) -> list[str]:
    """``mpiexec -n W+1 python benchmarks/bare_rank.py ...`` (the job's arguments): W7's bare
    mpi4py ranks, whose memory the worker ranks of the other systems are compared with."""
    bare = os.path.join(os.path.dirname(job[0]), "bare_rank.py")
    return [_mpiexec(), "-n", str(workers + 1), python, bare, *job[1:]]


@contextlib.contextmanager
def no_pool(workers: int) -> Iterator[PMap]:
    """The ``mpi4py-bare`` system runs ``bare_rank.py``, never ``bench_job.py``."""
    raise RuntimeError("mpi4py-bare maps nothing: run.py launches benchmarks/bare_rank.py")
    yield  # pragma: no cover


@contextlib.contextmanager
def scoop_pool(workers: int) -> Iterator[PMap]:
    """Plain ``scoop.futures.map``: one future per item (SCOOP has no chunking), the origin
    evaluating too.  SCOOP 0.7.2.0 ignores ``map``'s ``timeout`` ("TODO: Handle timeout"), so a
    call that hangs is only ended by run.py's per-run limit."""
    import scoop
    from scoop import futures

    if not scoop.IS_RUNNING or workers != scoop.SIZE:
        raise RuntimeError(f"expected python -m scoop -n {workers}, got size {scoop.SIZE}")

    def pmap(fn: Fn, items: list[Any], timeout: float | None = None) -> list[Any]:
        return list(futures.map(fn, items))

    yield pmap


@contextlib.contextmanager
def mp_pool(workers: int) -> Iterator[PMap]:
    import multiprocessing

    pool = multiprocessing.Pool(workers)

    def pmap(fn: Fn, items: list[Any], timeout: float | None = None) -> list[Any]:
        if timeout is None:
            return pool.map(fn, items)  # default chunksize: about 4 chunks per worker
        try:
            return pool.map_async(fn, items).get(timeout)  # what pool.map does, with a timeout
        except multiprocessing.TimeoutError:
            pool.terminate()  # else close() + join() below would wait for every chunk
            raise

    try:
        yield pmap
    finally:
        pool.close()
        pool.join()


@contextlib.contextmanager
def process_pool_executor(workers: int) -> Iterator[PMap]:
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers) as ex:

        def pmap(fn: Fn, items: list[Any], timeout: float | None = None) -> list[Any]:
            # chunksize=1, its default; on a timeout the iterator cancels the tasks not started
            return list(ex.map(fn, items, timeout=timeout))

        yield pmap


# ------------------------------------------------------------------------------ W5 workarounds
def mpi4py_cloudpickle(fn: Fn) -> Fn:
    """mpi4py's documented way: the master pickles with cloudpickle (the function travels by value
    with every task)."""
    import cloudpickle
    from mpi4py import MPI

    MPI.pickle.__init__(cloudpickle.dumps, cloudpickle.loads)
    return fn


class ByValue:
    """A callable that pickles by value with cloudpickle each time it is pickled, as loky's
    ``wrap_non_picklable_objects`` does: the pool re-sends it with every task or chunk."""

    def __init__(self, fn: Fn) -> None:
        self.fn = fn

    def __call__(self, x: Any) -> Any:
        return self.fn(x)

    def __reduce__(self) -> tuple[Any, ...]:
        import cloudpickle

        return (_load_by_value, (cloudpickle.dumps(self.fn),))


def _load_by_value(data: bytes) -> ByValue:
    return ByValue(pickle.loads(data))


# ------------------------------------------------------------------------------ registry
@dataclass(frozen=True)
class System:
    name: str
    launch: Callable[[str, list[str], int], list[str]]
    pool: Callable[[int], contextlib.AbstractContextManager[PMap]]
    chunksize: str  # what "default" means for this system, for the report
    workaround: Workaround | None = None  # W5: None if a lambda or closure needs none
    #: the ``concurrent.futures.Executor`` evocluster's engine is handed (W3's engine rows);
    #: None: the system has no such engine
    executor: Callable[[], Any] | None = None
    #: why the system cannot run on this machine (None: it can); run.py leaves it out by default
    missing: Callable[[], str | None] = lambda: None
    #: whose figures the report's ratios divide by: the reference on the same MPI
    reference: str = REFERENCE
    #: a variant (evocluster with launcher options, :data:`VARIANTS`): the system it is without
    #: them, that the report's cost table divides by; None: not a variant
    baseline: str | None = None
    #: the workloads it runs (None: all); run.py skips the others
    workloads: tuple[str, ...] | None = None

    def runs(self, workload: str) -> bool:
        return self.workloads is None or workload in self.workloads


def evocluster_executor() -> Any:
    """The executor the launcher set up (:func:`evocluster_pool` checked its backend and size)."""
    import evocluster

    return evocluster.get_executor()


def _evo(
    backend: str, options: dict[str, Any] | None = None
) -> Callable[[int], contextlib.AbstractContextManager[PMap]]:
    def pool(workers: int) -> contextlib.AbstractContextManager[PMap]:
        return evocluster_pool(workers, backend, options)

    return pool


#: The variants' eval timeout: long enough never to fire, so its figures are the cost of arming it
#: (SIGALRM around every evaluation in the worker).
VARIANT_TIMEOUT_S = 3600.0

#: What the progress display and the run log cost at their harshest realistic setting: a line
#: and an interval record (with one workers record per pool) every second.
VARIANT_MONITOR_EVERY_S = 1.0


class Variant(NamedTuple):
    flags: list[str]  # launcher flags, before the job (``{run}``: see :data:`RUN_LOG`)
    options: dict[str, Any]  # what they must have set (checked by :func:`evocluster_pool`)
    what: str  # for the report


#: What the variants measure: each evocluster system below with launcher options, against the
#: same system without them (issue 14: "W1 and W2 with --isolate and with --eval-timeout";
#: issue 22: the progress display's and the run log's cost, "<= 1 % of W2's wall time").
VARIANTS = {
    "isolate": Variant(["--isolate"], {"isolate": True}, "`--isolate`"),
    "timeout": Variant(
        ["--eval-timeout", f"{VARIANT_TIMEOUT_S:g}"],
        {"eval_timeout": VARIANT_TIMEOUT_S, "isolate": False},
        f"`--eval-timeout {VARIANT_TIMEOUT_S:g}` (never fires: the cost of arming it)",
    ),
    "quiet": Variant(
        ["--quiet"],
        {"quiet": True, "run_log": False, "monitor_thread": False},
        "`--quiet` (no progress and no log: no monitor thread; the pools still count)",
    ),
    "log": Variant(
        [
            "--log",
            RUN_LOG,
            "--log-every",
            f"{VARIANT_MONITOR_EVERY_S:g}",
            "--progress-every",
            f"{VARIANT_MONITOR_EVERY_S:g}",
        ],
        {
            "quiet": False,
            "run_log": True,
            "monitor_thread": True,
            "log_every": VARIANT_MONITOR_EVERY_S,
            "progress_every": VARIANT_MONITOR_EVERY_S,
        },
        f"`--log RUN.runlog.jsonl --log-every {VARIANT_MONITOR_EVERY_S:g} --progress-every "
        f"{VARIANT_MONITOR_EVERY_S:g}` (a progress line on stderr and an interval and a workers "
        "record every second; the system without it shows no line: its 30 s never come)",
    ),
}
VARIANT_WORKLOADS = ("W1", "W2", "W2c")


def _variants(
    base: str, launch: Callable[[str, list[str], int], list[str]], backend: str
) -> list[System]:
    """``base+isolate``, ``base+timeout``, ...: ``base``'s launch with each variant's flags."""
    return [
        System(
            f"{base}+{v}",
            with_flags(launch, variant.flags),
            _evo(backend, variant.options),
            "adaptive",
            executor=evocluster_executor,
            baseline=base,
            workloads=VARIANT_WORKLOADS,
        )
        for v, variant in VARIANTS.items()
    ]


SYSTEMS: dict[str, System] = {
    s.name: s
    for s in [
        System(
            "evocluster-mpi",
            launch_mpiexec_module("evocluster"),
            _evo("mpi"),
            "adaptive",
            executor=evocluster_executor,
        ),
        System(
            "evocluster-local",
            launch_evocluster_local,
            _evo("local"),
            "adaptive",
            executor=evocluster_executor,
        ),
        System(
            REFERENCE,
            launch_mpiexec_module("mpi4py.futures"),
            mpi4py_futures_pool,
            "1",
            mpi4py_cloudpickle,
        ),
        # W7 only: mpi4py.futures with its best chunk size there, and a bare rank's memory
        System(
            "mpi4py.futures+chunks",
            launch_mpiexec_module("mpi4py.futures"),
            mpi4py_futures_chunked_pool,
            "ceil(n / W)",
            workloads=W7_NAMES,
        ),
        System("mpi4py-bare", launch_bare_ranks, no_pool, "n/a", workloads=W7_NAMES),
        System("scoop", launch_scoop(0), scoop_pool, "1 (no chunking)"),
        System(
            "evocluster-scoop",
            launch_scoop(1),
            _evo("scoop"),
            "adaptive",
            executor=evocluster_executor,
        ),
        System("multiprocessing.Pool", launch_python, mp_pool, "ceil(n / (4 W))", ByValue),
        System("ProcessPoolExecutor", launch_python, process_pool_executor, "1", ByValue),
        # the same two MPI systems on a system MPI (Debian's Open MPI), where one is built
        System(
            "evocluster-openmpi",
            launch_openmpi_module("evocluster"),
            _evo("mpi"),
            "adaptive",
            executor=evocluster_executor,
            missing=openmpi_missing,
            reference="mpi4py.futures-openmpi",
        ),
        System(
            "mpi4py.futures-openmpi",
            launch_openmpi_module("mpi4py.futures"),
            mpi4py_futures_pool,
            "1",
            mpi4py_cloudpickle,
            missing=openmpi_missing,
            reference="mpi4py.futures-openmpi",
        ),
        # evocluster with --isolate, --eval-timeout, --quiet, --log (W1, W2, W2c only): the cost
        *_variants("evocluster-local", launch_evocluster_local, "local"),
        *_variants("evocluster-mpi", launch_mpiexec_module("evocluster"), "mpi"),
    ]
}


def describe_argv(argv: list[str]) -> str:
    """An argv as a user would type it: ``python`` and ``mpiexec`` without their directories."""
    short = {
        sys.executable: "python",
        _mpiexec(): "mpiexec",
        OPENMPI_PYTHON: ".venv-openmpi/bin/python",
    }
    return shlex.join(short.get(a, a) for a in argv)
