"""``python -m evocluster [options] job.py [job args...]`` and ``python -m evocluster [options] -m
package.module [job args...]``.

The launcher chooses the backend, starts its workers, runs the job as ``__main__`` on the master
and ends the run: exit code 0 after a normal end (every worker stopped cleanly), the job's own code
after ``sys.exit(n)``, 1 after an uncaught exception, 2 for a usage error (bad option, missing job
file, syntax error).  Under MPI a failing run stops its workers cleanly when they finish their
current evaluation within a few seconds, and otherwise ends every rank with ``MPI_Abort``: a batch
job never hangs until its wall-time limit.  A worker rank that dies ends the job too: its launcher
kills every rank, or, if it has not within seconds (a rank whose process lives on without serving),
the master ends the job with ``MPI_Abort`` (exit code 1).

SIGINT, SIGTERM and SIGHUP stop the run (exit code 128 + the signal's number) unless the launcher
was started with the signal ignored: under ``nohup`` SIGHUP stays ignored (what nohup is for), as
does SIGINT in a script's background job (``cmd &``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import traceback
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

from . import _config as config
from . import _jobfile as jobfile
from . import _monitor_options as monitor_options
from ._version import __version__
from .errors import ConfigurationError, JobError

if TYPE_CHECKING:
    from ._backends.base import Transport

__all__ = ["backend_rule", "main"]

USAGE = "python -m evocluster [options] (JOB.py | -m MODULE) [job args...]"

#: The subcommands (``main`` hands ``info`` to :mod:`evocluster._info`, ``report`` to
#: :mod:`evocluster._report`, the others to :mod:`evocluster._slurm`): name -> (arguments, what).
_SUBCOMMANDS = {
    "submit": (
        "JOB.py --ntasks N --time HH:MM:SS [options] [-- job args]",
        "write a SLURM batch script (checkpoints, requeue) and sbatch it; --dry-run prints it",
    ),
    "status": ("JOBID", "state, exit code, restarts and last output line of a SLURM job"),
    "info": (
        "[--json]",
        "versions, MPI library and mpiexec, SLURM, backend, signing key: for bug reports",
    ),
    "report": (
        "LOG [-o PNG] [--run N]",
        "a run log's summary; -o draws convergence and worker utilisation (matplotlib)",
    ),
}


#: How a job is launched, for ``--help`` (docs/launching.md has them all).
_LAUNCH = (
    ("python -m evocluster job.py", "local process pool (os.cpu_count() workers)"),
    ("mpiexec -n 64 python -m evocluster job.py", "MPI: rank 0 runs job.py, ranks 1..63 evaluate"),
    ("srun -n 64 python -m evocluster job.py", "the same inside a SLURM allocation"),
    ("python -m scoop -n 16 job.py", "SCOOP: its origin runs job.py, 15 processes evaluate"),
)


def _epilog() -> str:
    """``--help``'s text after the options: the subcommands, how to launch, and every
    ``EVOCLUSTER_*`` variable with its default (``config.environment``, the one table)."""
    lines = ["subcommands (python -m evocluster SUBCOMMAND --help says more):"]
    for name, (args, what) in _SUBCOMMANDS.items():
        lines += [f"  python -m evocluster {name} {args}", f"        {what}"]
    lines += ["", "launch:"]
    lines += [f"  {cmd:<44} {what}" for cmd, what in _LAUNCH]
    lines += [
        "",
        "environment (an option or Executor keyword wins over its variable, which wins over the "
        "default):",
    ]
    rows = config.environment()
    width = max(len(name) for name, _, _ in rows)
    dwidth = max(len(default) for _, default, _ in rows)
    lines += [f"  {n:<{width}}  {d:<{dwidth}}  {what}" for n, d, what in rows]
    return "\n".join(lines) + "\n"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        if (config.mpi_rank_from_env() or 0) > 0:  # under MPI only rank 0 prints usage errors
            # and carries the code: a rank exiting non-zero first makes the MPI launcher kill
            # the others, and rank 0's message is lost (Open MPI, under load: 3 runs in 14)
            sys.exit(0)
        super().error(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m evocluster",
        usage=USAGE,
        description="Run an evolutionary-algorithm job whose evaluations run on workers.",
        epilog=_epilog(),
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
        "--force-workers",
        action="store_true",
        default=None,
        help="start --workers even above 4 per core (else a warning and a cap at 4 x cores)",
    )
    p.add_argument(
        "--serialization",
        choices=config.POLICIES,
        default=None,
        help="upgrade (default): pickle, callables by value with cloudpickle where needed; "
        "strict: pickle only, fail early; cloudpickle: everything by value",
    )
    _fault_arguments(p)
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
    monitor_options.add_arguments(p)
    p.add_argument("--version", action="version", version=f"evocluster {__version__}")
    return p


def _fault_arguments(p: argparse.ArgumentParser) -> None:
    """The failure options (values checked by ``_fault_options``: a bad one is a one-line usage
    error, not argparse's usage block)."""
    f = p.add_argument_group("failed evaluations (of every executor and map of the job)")
    f.add_argument(
        "--on-error",
        metavar="{raise,penalize,retry:N}",
        help="raise (default): the job gets the exception; penalize: the item's result is "
        "--penalty; retry:N: evaluate again up to N times, then penalize (with --penalty) or raise",
    )
    f.add_argument(
        "--penalty",
        metavar="LITERAL",
        help="a failed item's result under penalize, a Python literal: -1, '(-1e9, 1e9)', inf",
    )
    f.add_argument(
        "--eval-timeout",
        metavar="SECONDS",
        help="an evaluation running longer fails (it is interrupted, or its process killed); "
        f"at most {config.EVAL_TIMEOUT_MAX:.0f} (11.6 days)",
    )
    f.add_argument(
        "--isolate",
        action="store_true",
        default=None,
        help="evaluate in a child process of each worker: a crash costs one evaluation",
    )
    f.add_argument(
        "--eval-memory",
        metavar="SIZE",
        help="address space of an isolated evaluation (2G, 512M; implies --isolate)",
    )
    f.add_argument(
        "--on-worker-loss",
        metavar="{" + ",".join(config.ON_WORKER_LOSS) + "}",
        help="a worker process lost (killed, out of memory, its host gone): fail (default): the "
        "run fails with BrokenPool; continue: its evaluations go to the workers left (local "
        "and SCOOP; not MPI)",
    )


def _fault_options(ns: argparse.Namespace) -> dict[str, Any]:
    """The failure options of the command line, converted, for ``config.resolve``.

    Raises:
        ConfigurationError: a value that does not parse, naming the flag.
    """
    found: dict[str, Any] = {
        "on_error": ns.on_error,
        "isolate": ns.isolate,
        "on_worker_loss": ns.on_worker_loss,
    }
    for flag, name, conv, what in (
        ("--penalty", "penalty", config.literal, "a Python literal such as -1 or '(-1e9, 1e9)'"),
        ("--eval-timeout", "eval_timeout", float, "a number of seconds"),
        ("--eval-memory", "eval_memory", config.memory, "a size such as 2G, 512M or bytes"),
    ):
        raw = getattr(ns, name)
        if raw is None:
            continue
        try:
            found[name] = conv(raw)
        except ValueError:
            raise ConfigurationError(f"{flag} {raw!r} is not {what}") from None
    return found


#: Seconds a failing MPI run waits for its workers to finish their current evaluation, and an
#: ended job's abandoned evaluations (a map or result it stopped waiting for) before they are
#: killed.
_GRACE = 3.0

#: Longest wait for the scheduler to end once the workers were killed (it then reads their EOFs).
_STOP_WAIT = 5.0

_TAKES_VALUE = {
    *("--backend", "--workers", "--serialization"),
    *("--on-error", "--penalty", "--eval-timeout", "--eval-memory", "--on-worker-loss"),
    *("--checkpoint", "--checkpoint-every", "--checkpoint-every-generations"),
    *("--progress-every", "--log", "--log-every"),
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


def _say_failures(stats: dict[str, float]) -> None:
    """The run's failure summary, once at its end, if any evaluation failed."""
    failed, retried = stats.get("failed", 0), stats.get("retried", 0)
    if failed:
        why = "--on-error retry"
        if stats.get("workers_lost"):
            why += ", or a lost worker's: --on-worker-loss continue"
        again = f", {retried} of them evaluated again ({why})" if retried else ""
        _say(
            f"{failed} evaluation attempt(s) failed during the run{again}; each one is an "
            "evocluster.Failure record in the failures of the executor that ran it"
        )


def _say(message: str) -> None:
    """Print a launcher message, once per run: under MPI only rank 0 speaks."""
    if (config.mpi_rank_from_env() or 0) > 0:
        return
    sys.stdout.flush()
    print(f"evocluster: {message}", file=sys.stderr, flush=True)


def backend_rule(options: config.Options) -> str:
    """The backend the launcher runs a job on with ``options`` in this process's environment,
    decided without starting MPI: ``"mpi"`` (under an MPI launcher; a world of one rank then
    evaluates serially, see ``_choose_backend``), ``"local"`` or ``"serial"``.  ``info`` says it.

    Raises:
        ConfigurationError: a choice the launcher refuses, with what to do instead.
    """
    name = options.backend
    if name == "scoop":  # SCOOP runs the job itself: the launcher cannot serve it
        from ._backends import SCOOP_LAUNCH

        raise ConfigurationError(SCOOP_LAUNCH)
    size = config.mpi_world_size_from_env()
    if name == "mpi" and size is None and config.mpi_rank_from_env() is None:
        # no MPI launcher started this process: MPI would make it a world of one rank
        raise ConfigurationError(
            "--backend mpi needs an MPI launcher: run `mpiexec -n N python -m evocluster "
            "job.py` (rank 0 runs the job, ranks 1..N-1 evaluate), or choose --backend local"
        )
    if name == "mpi" or (name == "auto" and size is not None):
        if options.on_worker_loss == "continue" and not config.mpi_outlives_a_rank():
            # an MPI job does not outlive a rank: mpiexec and srun end every rank when one dies
            raise ConfigurationError(
                "--on-worker-loss continue (EVOCLUSTER_ON_WORKER_LOSS) cannot work under this "
                "MPI launcher: it ends every rank when one dies; leave it at fail, launch with "
                "Open MPI's `mpirun --enable-recovery`, or run on the local pool or SCOOP, "
                "whose workers are independent processes"
            )
        return "mpi"
    if size is not None and size > 1:
        raise ConfigurationError(
            f"--backend {name} under an MPI launcher would run the whole job on each of the "
            f"{size} ranks: use --backend mpi (or auto) with mpiexec, or launch without mpiexec"
        )
    return "local" if name == "auto" else name


def _choose_backend(options: config.Options) -> tuple[str, Any]:
    """Return ``(backend name, mpi module or None)`` (``backend_rule``'s); may start MPI."""
    name = backend_rule(options)
    if name == "mpi":
        try:
            from ._backends import mpi
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
    mpi: Any  # evocluster._backends.mpi, when MPI was started; else None
    job: jobfile.JobSpec | None  # None: no job was named (a usage error on the master)
    target: str  # the job as the user named it, for messages
    checkpoint: dict[str, Any] | None = None  # checkpoint.set_defaults' arguments, if any
    monitor: dict[str, Any] | None = None  # the monitor's settings given on the command line


def _subcommand(args: list[str]) -> int:
    """Run ``python -m evocluster SUBCOMMAND ...`` (none of them starts MPI); its exit code."""
    if args[0] == "info":  # versions and environment
        from . import _info as info

        return info.main(args[1:], backend_rule)
    if args[0] == "report":  # a run log's summary and picture
        from . import _report as report

        return report.main(args[1:])
    from . import _slurm as slurm  # SLURM: python -m evocluster submit|status ...

    return slurm.main(args)


def main(argv: list[str] | None = None) -> int:
    """Run the launcher; return the process exit code.

    Phases: parse the command line (every rank); an MPI worker rank serves until told to stop;
    the master starts its workers, runs the job as ``__main__``, and ends the run by the exit
    path its outcome calls for."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in _SUBCOMMANDS:
        return _subcommand(args)
    parser = _parser()
    try:
        launch = _parse(parser, args)
    except ConfigurationError as e:
        _say(str(e))
        # only rank 0 carries the code (the MPI launcher reports it): another rank exiting
        # non-zero first makes the launcher kill the rest, and rank 0's one line is lost (Open
        # MPI, under load: 3 runs in 14)
        return 0 if (config.mpi_rank_from_env() or 0) > 0 else 2
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
    unwritable = monitor_options.unwritable((launch.monitor or {}).get("log"))
    if unwritable:  # known before any worker starts
        _release_workers(launch)
        _say(unwritable)
        return 2
    try:
        transport = _start_master(launch)
    except ConfigurationError as e:  # no worker started yet: they wait for INIT, release them
        _release_workers(launch)
        _say(str(e))
        return 2
    _start_monitor(launch, transport)
    code = _run_job(launch)
    return _end_run(launch, transport, code)


def _start_monitor(launch: _Launch, transport: Transport) -> None:
    """The progress display and the run log (its start record), before the job runs."""
    from . import _monitor as monitor

    try:
        settings = monitor.Settings.from_env()
    except ConfigurationError as e:  # a bad EVOCLUSTER_* value: said, and the run goes on
        _say(f"{e}; no progress or run log from it")
        settings = monitor.Settings()
    settings = monitor.Settings(**{**settings.__dict__, **(launch.monitor or {})})
    ranks = launch.mpi.world()[1] if launch.mpi is not None else None
    monitor.start(
        settings,
        backend=launch.backend,
        ranks=ranks,
        workers=transport.n_workers,
        job=launch.target,
    )


def _parse(parser: argparse.ArgumentParser, args: list[str]) -> _Launch:
    """The launcher's options and the job; may start MPI (to learn this process's rank).

    Raises:
        ConfigurationError: options that cannot work together.
    """
    own, path, module, job_args = _split(args)
    ns = parser.parse_args(own)
    options = config.resolve(
        backend=ns.backend,
        workers=ns.workers,
        serialization=ns.serialization,
        force_workers=ns.force_workers,
        **_fault_options(ns),
    )
    checkpoint = _checkpoint_options(ns)
    monitor = monitor_options.given(ns)
    name, mpi = _choose_backend(options)
    job = jobfile.spec(path, module, job_args) if path or module else None
    return _Launch(options, name, mpi, job, path or f"-m {module}", checkpoint, monitor)


def _checkpoint_options(ns: argparse.Namespace) -> dict[str, Any] | None:
    """The checkpoint options, checked on every rank (the same files: the same answer), for
    ``checkpoint.set_defaults`` on the master.  Before MPI starts: MPI_Init's fence means no rank
    looks at the file after the master may have written it.  Not importing the checkpoint module
    here: worker ranks never load it (nor hashlib, hmac, secrets).

    A master without MPI peers also takes the path's lock here (``checkpoint.hold``): a path
    another run holds is a usage error before anything starts.  Under MPI the lock is taken
    after MPI starts (``_start_master``, before the worker ranks are started: they are released).

    Raises:
        ConfigurationError: an option without ``--checkpoint``, a bad period, a directory,
            a path another run holds, ``--resume`` without a checkpoint file, or a checkpoint
            file without ``--resume`` (unless SLURM requeued the job: then it resumes).
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
    if os.path.isdir(path):
        raise ConfigurationError(
            f"--checkpoint {path} is a directory: give the path of a file for the checkpoint "
            f"(e.g. {os.path.join(path, 'run.ckpt')})"
        )
    if (config.mpi_world_size_from_env() or 1) <= 1:  # no MPI rank waits for this process
        from . import checkpoint  # (the master: worker ranks never load it)

        try:
            checkpoint.hold(path)
        except checkpoint.CheckpointError as e:
            raise ConfigurationError(str(e)) from None
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
    why, once, and sends STOP instead.

    Ctrl-C reaches every rank (mpiexec forwards it): a worker ignores it, and the master ends the
    run (a traceback per rank would bury its one line).  After its BYE the rank finalises MPI and
    leaves with ``os._exit``: a thread a fitness started must not keep it, and so the whole MPI
    job, alive for ever (only then: the interpreter's own exit is the proven path)."""
    # SIGTERM too (mpiexec passes it to every rank, as SLURM does at the time limit): the master
    # stops the run, with a checkpoint if its loop takes one; a worker killed by it first would
    # end the MPI job before that (its launcher kills every rank when one dies)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    code = int(launch.mpi.serve_worker(launch.options, launch.job))
    main = threading.main_thread()
    if any(t is not main and not t.daemon and t.is_alive() for t in threading.enumerate()):
        # leaving at once after MPI_Finalize sometimes makes MPICH's launcher kill the job (exit
        # code 9; measured here: 2 runs in 8); half a second later, never (0 in 10)
        launch.mpi.finalize_last(linger=0.5)
        _exit_now(code)
    return code


def _exit_now(code: int) -> NoReturn:
    """Leave the process now, output flushed, whatever threads are still running."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _release_workers(launch: _Launch) -> None:
    """The master gives up before starting: MPI workers wait for INIT, tell them to go home."""
    if launch.backend == "mpi":
        launch.mpi.release_workers(launch.options)


def _start_master(launch: _Launch) -> Transport:
    """Start the workers and make them the pool of every Executor the job creates (with the
    launcher's options: its serialisation policy is theirs unless they ask for another).

    Raises:
        ConfigurationError: before any worker is started (the caller releases them): the
            checkpoint path is held by another run, or its lock cannot be taken.
    """
    assert launch.job is not None  # checked by main()
    if launch.checkpoint is not None:  # the defaults of every engine loop the job runs
        from . import checkpoint

        checkpoint.set_defaults(**launch.checkpoint)
        try:  # one run per path (checkpoint.hold): under MPI taken here, once MPI has started
            checkpoint.hold(launch.checkpoint["path"])
        except checkpoint.CheckpointError as e:
            raise ConfigurationError(str(e)) from None
    jobfile.prepare_master(launch.job)
    from . import _backends as backends  # the master only: worker ranks never need the executor
    from . import _executor as executor

    transport = backends.open_transport(launch.backend, launch.options, launch.job)
    executor.install_shared(launch.backend, transport, launch.options)
    return transport


def _run_job(launch: _Launch) -> int:
    """Run the job as ``__main__``; return the run's exit code (the job's own for ``sys.exit``,
    1 for an uncaught exception, 128 + the signal's number for SIGINT, SIGTERM or SIGHUP)."""
    assert launch.job is not None
    try:
        jobfile.run_as_main(launch.job)
    except SystemExit as e:
        if e.code is not None and not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM / SIGHUP (executor.Interrupted)
        signum = getattr(e, "signum", signal.SIGINT)
        _say(f"interrupted ({signal.Signals(signum).name})")
        return 128 + signum
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
    from . import _executor as executor
    from . import _monitor as monitor

    monitor.stop(code)
    _say_failures(executor.shared_stats())
    if code == 0:
        # the work the job may still want is finished (its submitted futures, as the stdlib's
        # executors do); what it abandoned (a map or result it stopped waiting for) gets a grace
        if executor.close_shared(wait=True, grace=_GRACE):
            return code
        _say(
            "the job ended while evaluations it had stopped waiting for (a timeout) were still "
            f"running after {_GRACE:g} s: "
            + (
                "every MPI rank is stopped (MPI_Abort with the job's exit code, 0)"
                if launch.backend == "mpi"
                else "their workers were killed"
            )
        )
        sys.stdout.flush()
        transport.abort(code)  # MPI: does not return; local: kills the workers
        executor.close_shared(wait=True, timeout=_STOP_WAIT)
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
    executor.close_shared(wait=True, timeout=_STOP_WAIT)
    return code
