"""``python -m evocluster [options] job.py [job args...]`` and ``python -m evocluster [options] -m
package.module [job args...]``.

The launcher chooses the backend, starts its workers, runs the job as ``__main__`` on the master
and ends the run: exit code 0 after a normal end (every worker stopped cleanly), the job's own code
after ``sys.exit(n)``, 1 after an uncaught exception, 2 for a usage error (bad option, missing job
file, syntax error).  Under MPI a failing run stops its workers cleanly when they finish their
current evaluation within a few seconds, and otherwise ends every rank with ``MPI_Abort``: a batch
job never hangs until its wall-time limit.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Any, NoReturn

from . import __version__, config, jobfile, serialization
from .errors import ConfigurationError, JobError

__all__ = ["main"]

USAGE = "python -m evocluster [options] (JOB.py | -m MODULE) [job args...]"

_EPILOG = """\
launch:
  python -m evocluster job.py                    local process pool (os.cpu_count() workers)
  mpiexec -n 64 python -m evocluster job.py      MPI: rank 0 runs job.py, ranks 1..63 evaluate
  srun -n 64 python -m evocluster job.py         the same inside a SLURM allocation
options can also be set as EVOCLUSTER_BACKEND, EVOCLUSTER_WORKERS, EVOCLUSTER_SERIALIZATION.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        if (config.mpi_rank_from_env() or 0) > 0:  # under MPI only rank 0 prints usage errors
            sys.exit(2)
        super().error(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m evocluster",
        usage=USAGE,
        description="Run an evolutionary-algorithm job whose evaluations run on workers.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--backend",
        choices=config.BACKENDS,
        default=None,
        help="auto (default): MPI when the MPI world has more than one rank, else local",
    )
    p.add_argument("--workers", type=int, default=None, help="size of the local pool")
    p.add_argument(
        "--serialization",
        choices=config.POLICIES,
        default=None,
        help="upgrade (default): pickle, callables by value with cloudpickle where needed; "
        "strict: pickle only, fail early; cloudpickle: everything by value",
    )
    p.add_argument("--version", action="version", version=f"evocluster {__version__}")
    return p


#: Seconds a failing MPI run waits for its workers to finish their current evaluation.
_GRACE = 3.0

_TAKES_VALUE = {"--backend", "--workers", "--serialization"}


def _split(argv: list[str]) -> tuple[list[str], str | None, str | None, list[str]]:
    """Split the command line into launcher options, the job (file or module) and job args."""
    own: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "-m":
            if i + 1 >= len(argv):
                own.append(arg)  # let argparse complain
                return own, None, None, []
            return own, None, argv[i + 1], argv[i + 2 :]
        if arg == "--":
            rest = argv[i + 1 :]
            return own, (rest[0] if rest else None), None, rest[1:]
        if not arg.startswith("-"):
            return own, arg, None, argv[i + 1 :]
        own.append(arg)
        if arg in _TAKES_VALUE and i + 1 < len(argv):
            own.append(argv[i + 1])
            i += 1
        i += 1
    return own, None, None, []


def _say(message: str) -> None:
    """Print a launcher message, once per run: under MPI only rank 0 speaks."""
    if (config.mpi_rank_from_env() or 0) > 0:
        return
    sys.stdout.flush()
    print(f"evocluster: {message}", file=sys.stderr, flush=True)


def _choose_backend(options: config.Options) -> tuple[str, Any]:
    """Return ``(backend name, mpi module or None)``; may start MPI."""
    name = options.backend
    if name == "scoop":  # SCOOP runs the job itself: the launcher cannot serve it
        from .backends import SCOOP_LAUNCH

        raise ConfigurationError(SCOOP_LAUNCH)
    size = config.mpi_world_size_from_env()
    if name == "mpi" or (name == "auto" and size is not None):
        try:
            from .backends import mpi
        except ImportError as e:
            raise ConfigurationError(
                f"the MPI backend needs mpi4py ({e}): pip install 'evocluster[mpi]'"
            ) from e
        _, world = mpi.world()
        if world == 1:
            _say(
                "the MPI world has 1 rank: evaluating on rank 0 (serial); "
                "launch with `mpiexec -n N` (N >= 2) to get N-1 workers"
            )
            return "serial", mpi
        return "mpi", mpi
    if size is not None and size > 1:
        raise ConfigurationError(
            f"--backend {name} under an MPI launcher would run the whole job on each of the "
            f"{size} ranks: use --backend mpi (or auto) with mpiexec, or launch without mpiexec"
        )
    if name == "auto":
        return "local", None
    return name, None


def _job_traceback(exc: BaseException) -> str:
    """The exception's traceback without the launcher's own frames (runpy, cli)."""
    tb = exc.__traceback__
    here = os.path.dirname(os.path.abspath(__file__))
    while tb is not None and (
        tb.tb_frame.f_code.co_filename.startswith(here)
        or "runpy" in os.path.basename(tb.tb_frame.f_code.co_filename)
    ):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def main(argv: list[str] | None = None) -> int:
    """Run the launcher; return the process exit code."""
    args = sys.argv[1:] if argv is None else argv
    own, path, module, job_args = _split(args)
    parser = _parser()
    ns = parser.parse_args(own)
    try:
        options = config.resolve(
            backend=ns.backend, workers=ns.workers, serialization=ns.serialization
        )
        # the job's executors (the default one and any it creates) follow the launcher's policy
        os.environ["EVOCLUSTER_SERIALIZATION"] = options.serialization
        name, mpi = _choose_backend(options)
    except ConfigurationError as e:
        _say(str(e))
        return 2
    if mpi is not None and name == "mpi" and mpi.world()[0] > 0:
        # import the job now, in parallel with the master's start-up.  A job that cannot be
        # imported is reported after INIT, or never: for a bad job the master says why, once,
        # and sends STOP instead
        early = jobfile.spec(path, module, job_args) if path or module else None
        return int(mpi.serve_worker(options, early))

    def release_workers() -> None:
        if name == "mpi":  # the workers wait for INIT: tell them to go home instead
            mpi.release_workers(options)

    if path is None and module is None:
        release_workers()
        parser.print_usage(sys.stderr)
        _say("give a job file or -m MODULE")
        return 2
    job = jobfile.spec(path, module, job_args)
    try:
        jobfile.check(job)
    except JobError as e:
        release_workers()
        _say(str(e))
        return 2
    serialization.set_worker_main_names(jobfile.module_level_names(job))
    from . import backends, executor  # the master only: worker ranks never need the executor

    transport = backends.open_transport(name, options, job)
    executor.install_shared(name, transport, options)
    target = path or f"-m {module}"
    code = 0
    try:
        jobfile.run_as_main(job)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if e.code is not None and not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
    except KeyboardInterrupt:
        _say("interrupted")
        code = 130
    except BaseException as e:
        sys.stderr.write(_job_traceback(e))
        where = " on the master (rank 0)" if name == "mpi" else ""
        _say(
            f"the job {target} raised {type(e).__name__}{where}; the run stops with exit code 1"
            + (" and every MPI rank is stopped" if name == "mpi" else "")
            + ". The traceback above shows where; an exception raised by a fitness function "
            "carries the worker's traceback as its cause."
        )
        code = 1
    if code != 0:
        sys.stdout.flush()
        sys.stderr.flush()
        # Stop the workers cleanly if they finish what they are evaluating within a few seconds:
        # MPI_Abort kills every rank at once, and the launcher may then drop output (this
        # message included) that it had not yet forwarded.  Workers stuck in a long evaluation
        # are aborted: the run must end now, not at the wall-time limit.
        if name == "mpi" and executor.close_shared(wait=True, cancel=True, timeout=_GRACE):
            mpi.finalize_last()  # so that the launcher reports this code, not a killed worker's
            return code
        transport.abort(code)  # MPI: does not return; local: kills the workers
        executor.close_shared(wait=False)
        return code
    executor.close_shared(wait=True)
    return code
