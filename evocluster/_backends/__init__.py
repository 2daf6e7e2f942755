"""The backends, by name, each loaded only when a pool of it is opened.

    name     what evaluates                   opened by
    serial   the master itself, inline        ``Executor(backend="serial")``, the launcher
    local    worker processes on this host    ``Executor(backend="local")``, the launcher
    mpi      MPI ranks 1..N-1                 the launcher (``mpiexec -n N python -m evocluster``)
    scoop    SCOOP's workers                  ``Executor()`` under ``python -m scoop job.py``

A thread-driven backend gives a :class:`~evocluster._backends.base.Transport`, which the executor
wraps in its scheduler-thread pool (:mod:`evocluster._pool`).  SCOOP, whose sockets belong to its
main thread, gives a pool of its own (:func:`open_scoop_pool`).  Nothing here imports mpi4py or
scoop before that backend is opened, and nothing here chooses a backend: the launcher and
``Executor`` do.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from .._config import Options
from ..errors import ConfigurationError

if TYPE_CHECKING:
    from .._jobfile import JobSpec
    from .._scheduling import PoolBase
    from .base import Transport

__all__ = ["SCOOP_LAUNCH", "TRANSPORTS", "open_scoop_pool", "open_transport", "scoop_running"]

SCOOP_LAUNCH = (
    "the SCOOP backend serves jobs started by SCOOP: launch with `python -m scoop [-n N] job.py` "
    "(N processes: the origin runs the job, N-1 evaluate); `python -m evocluster` does not start "
    "SCOOP"
)


def _serial(options: Options, job: JobSpec) -> Transport:
    from .local import InlineTransport

    return InlineTransport(job)


#: More local workers than this many per core only with ``force_workers``: each is a whole
#: interpreter (tens of MiB), and an absurd count (EVOCLUSTER_WORKERS=100000) would start them
#: until memory runs out.
WORKERS_PER_CORE = 4


def local_workers(options: Options) -> int:
    """The size of a local pool: ``options.workers`` (default: the cores), capped at
    ``WORKERS_PER_CORE`` per core with a one-line warning unless ``force_workers``."""
    cores = os.cpu_count() or 1
    asked = options.workers or cores
    cap = WORKERS_PER_CORE * cores
    if asked <= cap or options.force_workers:
        return asked
    print(
        f"evocluster: {asked} local workers asked for (--workers, EVOCLUSTER_WORKERS or "
        f"max_workers) on {cores} cores: starting {cap} ({WORKERS_PER_CORE} per core); "
        "--force-workers (EVOCLUSTER_FORCE_WORKERS=1, force_workers=True) starts them all",
        file=sys.stderr,
        flush=True,
    )
    return cap


def _local(options: Options, job: JobSpec) -> Transport:
    from .local import ProcessTransport

    return ProcessTransport(local_workers(options), job, options)


def _mpi(options: Options, job: JobSpec) -> Transport:
    from .mpi import MPITransport  # starts MPI: the launcher's master rank only

    return MPITransport(job, options)


#: The thread-driven backends: name -> factory of its transport, given the options and the job.
TRANSPORTS: dict[str, Callable[[Options, JobSpec], Transport]] = {
    "serial": _serial,
    "local": _local,
    "mpi": _mpi,
}


def open_transport(name: str, options: Options, job: JobSpec) -> Transport:
    """Start the transport of backend ``name``, whose workers import ``job``."""
    try:
        factory = TRANSPORTS[name]
    except KeyError:
        raise ConfigurationError(f"backend {name!r} has no transport") from None
    return factory(options, job)


def scoop_running() -> bool:
    """Whether this process belongs to a SCOOP run (``python -m scoop job.py``), without
    importing SCOOP."""
    return bool(getattr(sys.modules.get("scoop"), "IS_RUNNING", False))


def open_scoop_pool(options: Options) -> PoolBase:
    """The pool of SCOOP's workers, shared by every executor of the run (the origin only).

    Raises:
        ConfigurationError: not under ``python -m scoop``.
        JobError: on a SCOOP worker, while it imports the job.
    """
    if not scoop_running():
        raise ConfigurationError(SCOOP_LAUNCH)
    from .scoop import shared_pool

    return shared_pool(options)
