"""evocluster: evaluate the fitness of evolutionary algorithms on clusters and supercomputers.

Launch a job with ``mpiexec -n 64 python -m evocluster job.py`` (rank 0 runs the job, the other
ranks evaluate) or ``python -m evocluster job.py`` (a local process pool); in the job, use
:func:`map` (a drop-in for DEAP's ``toolbox.map``) or :func:`get_executor` (a
``concurrent.futures.Executor``).  Importing this package never imports mpi4py or starts MPI.
"""

from __future__ import annotations

from .errors import (
    BrokenPool,
    ConfigurationError,
    EvoclusterError,
    JobError,
    RemoteError,
    RemoteTraceback,
    SerializationError,
    WorkerError,
)
from .executor import Executor, get_executor, map  # noqa: A004 - a drop-in, on purpose

__version__ = "0.1.0"

__all__ = [
    "BrokenPool",
    "ConfigurationError",
    "EvoclusterError",
    "Executor",
    "JobError",
    "RemoteError",
    "RemoteTraceback",
    "SerializationError",
    "WorkerError",
    "__version__",
    "get_executor",
    "map",
]
