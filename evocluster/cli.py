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
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

from . import __version__, config, jobfile, serialization
from .errors import ConfigurationError, JobError

if TYPE_CHECKING:
    from .backends.base import Transport

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
    ck = p.add_argument_group("checkpoints (of every evocluster.engine loop the job runs)")
    ck.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="write the loop's whole state there: at its start and end, periodically, and on "
        "SIGUSR1/SIGTERM, which then stop the run with exit code 75",
    )
    ck.add_argument(
        "--checkpoint-every",
        metavar="SECONDS",
        type=float,
        help="seconds between periodic checkpoints (default 60; 0: every generation)",
    )
    ck.add_argument(
        "--checkpoint-every-generations",
        metavar="N",
        type=int,
        help="generations between periodic checkpoints",
    )
    ck.add_argument(
        "--resume",
        action="store_true",
        help="continue the run checkpointed at --checkpoint PATH (automatic when SLURM "
        "requeued the job and PATH exists)",
    )
    p.add_argument("--version", action="version", version=f"evocluster {__version__}")
    return p


#: Seconds a failing MPI run waits for its workers to finish their current evaluation.
_GRACE = 3.0

_TAKES_VALUE = {
    *("--backend", "--workers", "--serialization"),
    *("--checkpoint", "--checkpoint-every", "--checkpoint-every-generations"),
}


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


class _Launch(NamedTuple):
    """What the command line asked for, once parsed and checked."""

    options: config.Options
    backend: str  # "mpi", "local" or "serial" (the serial one also for a 1-rank MPI world)
    mpi: Any  # evocluster.backends.mpi, when MPI was started; else None
    job: jobfile.JobSpec | None  # None: no job was named (a usage error on the master)
    target: str  # the job as the user named it, for messages
    checkpoint: dict[str, Any] | None = None  # checkpoint.set_defaults' arguments, if any


def main(argv: list[str] | None = None) -> int:
    """Run the launcher; return the process exit code.

    Phases: parse the command line (every rank); an MPI worker rank serves until told to stop;
    the master starts its workers, runs the job as ``__main__``, and ends the run by the exit
    path its outcome calls for."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("submit", "status"):  # SLURM: python -m evocluster submit|status ...
        from . import slurm

        return slurm.main(args)
    parser = _parser()
    try:
        launch = _parse(parser, args)
    except ConfigurationError as e:
        _say(str(e))
        return 2
    if launch.mpi is not None and launch.backend == "mpi" and launch.mpi.world()[0] > 0:
        return _serve_worker_rank(launch)
    if launch.job is None:
        _release_workers(launch)
        parser.print_usage(sys.stderr)
        _say("give a job file or -m MODULE")
        return 2
    try:
        jobfile.check(launch.job)
    except JobError as e:
        _release_workers(launch)
        _say(str(e))
        return 2
    transport = _start_master(launch)
    code = _run_job(launch)
    return _end_run(launch, transport, code)


def _parse(parser: argparse.ArgumentParser, args: list[str]) -> _Launch:
    """The launcher's options and the job; may start MPI (to learn this process's rank).

    Raises:
        ConfigurationError: options that cannot work together.
    """
    own, path, module, job_args = _split(args)
    ns = parser.parse_args(own)
    options = config.resolve(backend=ns.backend, workers=ns.workers, serialization=ns.serialization)
    checkpoint = _checkpoint_options(ns)
    name, mpi = _choose_backend(options)
    job = jobfile.spec(path, module, job_args) if path or module else None
    return _Launch(options, name, mpi, job, path or f"-m {module}", checkpoint)


def _checkpoint_options(ns: argparse.Namespace) -> dict[str, Any] | None:
    """The checkpoint options, checked on every rank (the same files: the same answer), for
    ``checkpoint.set_defaults`` on the master.  Before MPI starts: MPI_Init's fence means no rank
    looks at the file after the master may have written it.  Not importing the checkpoint module
    here: worker ranks never load it (nor hashlib, hmac, secrets).

    Raises:
        ConfigurationError: an option without ``--checkpoint``, a bad period, ``--resume``
            without a checkpoint file, or a checkpoint file without ``--resume`` (unless SLURM
            requeued the job: then it resumes).
    """
    path, every, generations = ns.checkpoint, ns.checkpoint_every, ns.checkpoint_every_generations
    if path is None:
        if ns.resume or every is not None or generations is not None:
            raise ConfigurationError(
                "--resume, --checkpoint-every and --checkpoint-every-generations need "
                "--checkpoint PATH"
            )
        return None
    if (every is not None and not every >= 0) or (generations is not None and generations < 1):
        raise ConfigurationError(
            "--checkpoint-every must be >= 0 (seconds), --checkpoint-every-generations >= 1"
        )
    exists = os.path.exists(path)
    if ns.resume and not exists:
        raise ConfigurationError(
            f"--resume: there is no checkpoint {path} to continue from; run without --resume to "
            "start the run"
        )
    if exists and not ns.resume and config.slurm_restart_count() == 0:
        raise ConfigurationError(
            f"--checkpoint {path} exists already: add --resume to continue that run, or remove "
            "it (or choose another path) to start afresh"
        )
    return {"path": path, "every": every, "every_generations": generations, "resume": ns.resume}


def _serve_worker_rank(launch: _Launch) -> int:
    """An MPI worker rank: import the job now, in parallel with the master's start-up, and serve.
    A job that cannot be imported is reported after INIT, or never: for a bad job the master says
    why, once, and sends STOP instead."""
    return int(launch.mpi.serve_worker(launch.options, launch.job))


def _release_workers(launch: _Launch) -> None:
    """The master gives up before starting: MPI workers wait for INIT, tell them to go home."""
    if launch.backend == "mpi":
        launch.mpi.release_workers(launch.options)


def _start_master(launch: _Launch) -> Transport:
    """Start the workers and make them the pool of every Executor the job creates (with the
    launcher's options: its serialisation policy is theirs unless they ask for another)."""
    assert launch.job is not None  # checked by main()
    if launch.checkpoint is not None:  # the defaults of every engine loop the job runs
        from . import checkpoint

        checkpoint.set_defaults(**launch.checkpoint)
    serialization.set_worker_main_names(jobfile.module_level_names(launch.job))
    from . import backends, executor  # the master only: worker ranks never need the executor

    transport = backends.open_transport(launch.backend, launch.options, launch.job)
    executor.install_shared(launch.backend, transport, launch.options)
    return transport


def _run_job(launch: _Launch) -> int:
    """Run the job as ``__main__``; return the run's exit code (the job's own for ``sys.exit``,
    1 for an uncaught exception, 130 for Ctrl-C)."""
    assert launch.job is not None
    try:
        jobfile.run_as_main(launch.job)
    except SystemExit as e:
        if e.code is not None and not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except KeyboardInterrupt:
        _say("interrupted")
        return 130
    except BaseException as e:
        sys.stderr.write(_job_traceback(e))
        mpi = launch.backend == "mpi"
        _say(
            f"the job {launch.target} raised {type(e).__name__}"
            + (" on the master (rank 0)" if mpi else "")
            + "; the run stops with exit code 1"
            + (" and every MPI rank is stopped" if mpi else "")
            + ". The traceback above shows where; an exception raised by a fitness function "
            "carries the worker's traceback as its cause."
        )
        return 1
    return 0


def _end_run(launch: _Launch, transport: Transport, code: int) -> int:
    """Stop the workers as the run's outcome calls for; return the process exit code."""
    from . import executor

    if code == 0:
        executor.close_shared(wait=True)
        return code
    sys.stdout.flush()
    sys.stderr.flush()
    # Stop the workers cleanly if they finish what they are evaluating within a few seconds:
    # MPI_Abort kills every rank at once, and the launcher may then drop output (this message
    # included) that it had not yet forwarded.  Workers stuck in a long evaluation are aborted:
    # the run must end now, not at the wall-time limit.
    if launch.backend == "mpi" and executor.close_shared(wait=True, cancel=True, timeout=_GRACE):
        launch.mpi.finalize_last()  # so that the launcher reports this code, not a killed worker's
        return code
    transport.abort(code)  # MPI: does not return; local: kills the workers
    executor.close_shared(wait=False)
    return code
