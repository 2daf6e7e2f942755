"""evocluster: evaluate the fitness of evolutionary algorithms on clusters and supercomputers.

Launch a job with ``mpiexec -n 64 python -m evocluster job.py`` (rank 0 runs the job, the other
ranks evaluate) or ``python -m evocluster job.py`` (a local process pool); in the job, use
:func:`map` (a drop-in for DEAP's ``toolbox.map``) or :func:`get_executor` (a
``concurrent.futures.Executor``).  Importing this package never imports mpi4py or starts MPI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._backends import scoop_running as _scoop_running
from ._sharing import share, shared
from ._version import __version__
from .errors import (
    ConfigurationError,
    EvaluationAborted,
    EvaluationCrashed,
    EvaluationError,
    EvaluationFailed,
    EvaluationTimeout,
    EvoclusterError,
    Failure,
    JobError,
    RemoteError,
    RemoteTraceback,
    SerializationError,
    WorkerError,
)

if TYPE_CHECKING:
    from ._executor import Executor, get_executor, map, starmap  # noqa: A004 - a drop-in
    from ._slurm import run_seed
    from .checkpoint import Checkpoint, CheckpointError
    from .errors import BrokenPool

_LAZY = frozenset({"Executor", "get_executor", "map", "starmap"})


def __getattr__(name: str) -> Any:
    """The executor API, ``BrokenPool``, checkpoints and ``rng``, imported on first use: a worker
    rank that only evaluates never pays for ``concurrent.futures``, the scheduler or numpy
    (start-up of thousands of ranks)."""
    if name == "BrokenPool":
        from . import errors

        return errors.BrokenPool
    if name in ("Checkpoint", "CheckpointError"):  # the master's: workers never load it
        from . import checkpoint

        return getattr(checkpoint, name)
    if name == "run_seed":  # SLURM job arrays; the module is loaded only by its users
        from . import _slurm as slurm

        return slurm.run_seed
    if name in _LAZY:
        from . import _executor as executor

        return getattr(executor, name)
    if name == "rng":  # the module, which is callable: evocluster.rng() is rng.rng()
        import importlib

        return importlib.import_module(".rng", __name__)
    raise AttributeError(f"module 'evocluster' has no attribute {name!r}")


if _scoop_running():
    # A process of a SCOOP run (`python -m scoop job.py`), and only then: start the guards that make
    # a failing run exit non-zero (SCOOP's launcher would exit 0).  Here, because SCOOP has no
    # start-up hook: the job's `import evocluster` is the first evocluster code to run in each of
    # its processes, before the job can fail.  Anywhere else, importing evocluster starts nothing.
    from ._backends.scoop import start_guards

    start_guards()

__all__ = [
    "BrokenPool",
    "Checkpoint",
    "CheckpointError",
    "ConfigurationError",
    "EvaluationAborted",
    "EvaluationCrashed",
    "EvaluationError",
    "EvaluationFailed",
    "EvaluationTimeout",
    "EvoclusterError",
    "Executor",
    "Failure",
    "JobError",
    "RemoteError",
    "RemoteTraceback",
    "SerializationError",
    "WorkerError",
    "__version__",
    "get_executor",
    "map",
    "rng",
    "run_seed",
    "share",
    "shared",
    "starmap",
]
