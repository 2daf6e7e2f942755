"""SLURM batch jobs: render a batch script and submit it; ``status`` dispatched to its module.

    python -m evocluster submit JOB.py --ntasks N --time HH:MM:SS [options] [-- job args]
    python -m evocluster status JOBID

``submit`` renders one batch script for the job (the templates in the repository's ``slurm/``
folder are renderings of it) and hands it to ``sbatch`` on standard input, or prints it with
``--dry-run``.  Every script requeues its job after a checkpoint exit, so that a run stopped by the
wall-time warning continues in the next allocation::

    SLURM: SIGUSR1 to the batch shell, LEAD s before the limit (--signal=B:USR1@LEAD),
      or `scancel --signal=USR1 --batch JOBID`
      -> the batch shell's trap (the launcher runs in the background: bash runs traps between
         commands, and a `wait` is cut short by a trapped signal, a foreground command is not)
      -> kill -USR1 the launcher: srun and mpiexec pass it on to every rank, which all started
         with USR1 ignored until the job's handler on the master takes it over; for SCOOP, the
         shell signals the origin process itself
      -> the master (evocluster.Checkpoint in the job's loop) saves and exits 75 (EX_TEMPFAIL)
      -> exit code 75: the batch shell runs `scontrol requeue $SLURM_JOB_ID`
      -> SLURM runs the job again; it finds its checkpoint and resumes.

Each script exports ``EVOCLUSTER_LOG``: the job's run log, beside its output file
(``NAME-%j.out`` -> ``NAME-%j.jsonl``; for arrays ``%A_%a``), appended to by every run.  A log
elsewhere (``submit --log PATH``) or none (``--no-log``) is noted in the job's comment.

``status`` is :mod:`evocluster._slurm_status` (which also holds the rule of where a job's run
log is); :func:`main` dispatches to both.  :func:`run_seed` gives each task of a job array a
seed of its own.  This module never imports mpi4py: only the subcommands and ``run_seed`` do.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple, NoReturn

from ._slurm_status import EXIT_USAGE, LOG_AT, NO_LOG, expand, log_beside
from .errors import ConfigurationError

if TYPE_CHECKING:
    import argparse

__all__ = ["EXIT_USAGE", "Request", "main", "parse_submit", "render", "run_seed"]

#: The most the wall-time warning comes before the limit; shorter jobs get half their time.
_LEAD = 120

_TIME = re.compile(r"^(?:(\d+)-)?(\d+):([0-5]\d):([0-5]\d)$")
_ARRAY = re.compile(r"^\d+(?:-\d+(?::\d+)?)?(?:,\d+(?:-\d+(?::\d+)?)?)*(?:%\d+)?$")
_NAME = re.compile(r"^[A-Za-z0-9_.,:@+=-]+$")  # a partition or account: safe in an #SBATCH line


def run_seed(default: int) -> int:
    """The seed of this run: ``default``, plus the task's index in a SLURM job array.

    Task ``i`` of ``submit --array 0-29`` (``SLURM_ARRAY_TASK_ID`` = i) gets ``default + i``, so 30
    repetitions of a job run with 30 different, reproducible seeds; outside a job array it returns
    ``default``::

        seed = evocluster.run_seed(42)  # 42, 43, 44... in the tasks of an array

    Args:
        default: the base seed, an ``int``.

    Returns:
        ``default + SLURM_ARRAY_TASK_ID``, or ``default`` outside a job array.

    Raises:
        TypeError: ``default`` is not an ``int``.
        ConfigurationError: ``SLURM_ARRAY_TASK_ID`` is set but is not a number.
    """
    if not isinstance(default, int) or isinstance(default, bool):
        raise TypeError(f"run_seed() needs an int as its default seed, not {default!r}")
    task = os.environ.get("SLURM_ARRAY_TASK_ID", "").strip()
    if not task:
        return default
    if not task.isdigit():
        raise ConfigurationError(f"SLURM_ARRAY_TASK_ID is {task!r}, not a task index")
    return default + int(task)


# ==================================================================================== submit
class Request(NamedTuple):
    """What ``submit`` was asked for, checked: everything the script is rendered from."""

    job: str  # the job file, as given (relative paths are relative to sbatch's directory)
    job_args: tuple[str, ...]
    ntasks: int
    time: str  # the wall-time limit as given, [D-]HH:MM:SS
    seconds: int  # the same, in seconds
    nodes: int | None = None
    partition: str | None = None
    account: str | None = None
    backend: str = "mpi"  # "mpi" or "scoop"
    launcher: str = "srun"  # "srun" or "mpiexec"; MPI only
    checkpoint: str | None = None  # exported as EVOCLUSTER_CHECKPOINT; %a: the array task
    array: str | None = None  # an sbatch --array specification
    dry_run: bool = False
    log: str | None = None  # the run log as given by --log (%j, %A, %a as in --output)
    no_log: bool = False

    @property
    def output(self) -> str:
        """The output file, as in ``#SBATCH --output``: SLURM replaces %j, %A and %a."""
        return f"{self.name}-%A_%a.out" if self.array is not None else f"{self.name}-%j.out"

    @property
    def log_pattern(self) -> str | None:
        """The run log (%j, %A, %a as in the output's name): ``--log``'s, or beside the output."""
        if self.no_log:
            return None
        return self.log if self.log is not None else log_beside(self.output)

    @property
    def name(self) -> str:
        """The job's name: the job file's, without ``.py``."""
        stem = os.path.basename(self.job)
        stem = stem[:-3] if stem.endswith(".py") else stem
        return re.sub(r"[^A-Za-z0-9_.-]", "_", stem) or "evocluster"

    @property
    def lead(self) -> int:
        """Seconds between SLURM's warning and the wall-time limit."""
        return min(_LEAD, self.seconds // 2)


class _SubmitParser:
    """``submit``'s options, parsed by argparse but reported in one line and exit code 2."""

    def __init__(self) -> None:
        import argparse

        class Parser(argparse.ArgumentParser):
            def error(self, message: str) -> NoReturn:
                raise ConfigurationError(message)

        p = Parser(
            prog="python -m evocluster submit",
            usage="python -m evocluster submit JOB.py --ntasks N --time HH:MM:SS [options] "
            "[-- job args]",
            description="Submit an evocluster job to SLURM (sbatch); --dry-run prints the batch "
            "script instead.",
            allow_abbrev=False,  # an option is spelt out, or it is unknown
        )
        p.add_argument("job", metavar="JOB.py", help="the job file")
        p.add_argument("--ntasks", "-n", type=int, metavar="N", help="processes, master included")
        p.add_argument("--nodes", "-N", type=int, metavar="K", help="nodes to spread them over")
        p.add_argument("--time", "-t", metavar="HH:MM:SS", help="the wall-time limit")
        p.add_argument("--partition", "-p", metavar="P")
        p.add_argument("--account", "-A", metavar="A")
        p.add_argument("--backend", choices=("mpi", "scoop"), default=None)
        p.add_argument("--launcher", choices=("srun", "mpiexec"), default=None)
        p.add_argument(
            "--checkpoint",
            metavar="PATH",
            help="the run's checkpoint (EVOCLUSTER_CHECKPOINT: every engine loop and "
            "evocluster.Checkpoint() use it); %%a is the array task's index",
        )
        p.add_argument("--array", metavar="SPEC", help="a job array, e.g. 0-29 (sbatch --array)")
        p.add_argument("--log", metavar="PATH", help="the run log (default: beside the output)")
        p.add_argument("--no-log", action="store_true", help="no run log")
        p.add_argument("--dry-run", action="store_true", help="print the script, submit nothing")
        self.parser = p

    def parse(self, args: Sequence[str]) -> Request:
        args = list(args)
        cut = args.index("--") if "--" in args else len(args)
        own, job_args = args[:cut], args[cut + 1 :]
        if "-h" in own or "--help" in own:
            self.parser.print_help()
            raise SystemExit(0)
        ns, extra = self.parser.parse_known_args(own)
        if extra:
            raise ConfigurationError(
                f"unknown option or argument {extra[0]!r}: give the job's own arguments after --"
            )
        return _checked(ns, job_args)


def _seconds(time: str) -> int:
    m = _TIME.match(time)
    if m is None:
        raise ConfigurationError(f"--time {time!r} is not HH:MM:SS (or D-HH:MM:SS)")
    days, hours, minutes, secs = (int(g) if g else 0 for g in m.groups())
    seconds = ((days * 24 + hours) * 60 + minutes) * 60 + secs
    if seconds < 60:
        raise ConfigurationError(f"--time {time} is under a minute: SLURM counts in minutes")
    return seconds


def _checked(ns: argparse.Namespace, job_args: list[str]) -> Request:
    """The options as a :class:`Request`, or the first thing wrong with them.

    Raises:
        ConfigurationError: in one line, saying what to change.
    """
    job: str = ns.job
    ntasks: int | None = ns.ntasks
    nodes: int | None = ns.nodes
    if ntasks is None:
        raise ConfigurationError("submit needs --ntasks N (the processes: the master included)")
    if ntasks < 1:
        raise ConfigurationError(f"--ntasks {ntasks}: needs at least 1")
    if nodes is not None and not 1 <= nodes <= ntasks:
        raise ConfigurationError(f"--nodes {nodes} with --ntasks {ntasks}: needs 1 <= K <= N")
    time: str | None = ns.time
    if time is None:
        raise ConfigurationError("submit needs --time HH:MM:SS, the wall-time limit")
    backend: str = ns.backend or "mpi"
    launcher: str | None = ns.launcher
    if backend == "scoop" and launcher is not None:
        raise ConfigurationError(
            f"--launcher {launcher} is for --backend mpi: SCOOP starts its own processes"
        )
    for option in ("partition", "account"):
        value = getattr(ns, option)
        if value is not None and not _NAME.match(value):
            raise ConfigurationError(f"--{option} {value!r}: letters, digits and _.,:@+=- only")
    array: str | None = ns.array
    if array is not None and not _ARRAY.match(array):
        raise ConfigurationError(f"--array {array!r} is not an sbatch array (e.g. 0-29, 1,3,5%2)")
    _check_checkpoint(ns.checkpoint, array)
    _check_log(ns.log, bool(ns.no_log), array)
    if not os.path.isfile(job):
        what = "is a directory" if os.path.isdir(job) else "not found"
        raise ConfigurationError(f"job file {job!r} {what} (current directory: {os.getcwd()})")
    return Request(
        job=job,
        job_args=tuple(job_args),
        ntasks=ntasks,
        time=time,
        seconds=_seconds(time),
        nodes=nodes,
        partition=ns.partition,
        account=ns.account,
        backend=backend,
        launcher=launcher or "srun",
        checkpoint=ns.checkpoint,
        array=array,
        dry_run=bool(ns.dry_run),
        log=ns.log,
        no_log=bool(ns.no_log),
    )


def _check_checkpoint(checkpoint: str | None, array: str | None) -> None:
    if checkpoint is None:
        return
    if not checkpoint or "\n" in checkpoint:
        raise ConfigurationError(f"--checkpoint {checkpoint!r} is not a file name")
    if array is not None and "%a" not in checkpoint:
        raise ConfigurationError(
            f"--checkpoint {checkpoint} with --array: put %a in the path (e.g. run-%a.ckpt), "
            "so that each task of the array has a checkpoint of its own"
        )
    if array is None and "%a" in checkpoint:
        raise ConfigurationError(f"--checkpoint {checkpoint}: %a (the task index) needs --array")


#: what a --log path may not hold: it goes into an #SBATCH line and a shell assignment as it is
_UNSAFE = re.compile(r"[\s'\"\\$`]")


def _check_log(log: str | None, no_log: bool, array: str | None) -> None:
    if log is None:
        return
    if no_log:
        raise ConfigurationError("--log and --no-log: give one of them")
    if not log or _UNSAFE.search(log):
        raise ConfigurationError(
            f"--log {log!r}: a file name without spaces, quotes, $, ` or backslashes"
        )
    if os.path.isdir(log):
        raise ConfigurationError(f"--log {log} is a directory: give the path of a file")
    if array is not None and "%a" not in log and "%j" not in log:
        raise ConfigurationError(
            f"--log {log} with --array: put %a (or %j) in the path (e.g. run-%A_%a.jsonl), so "
            "that each task of the array has a log of its own"
        )
    if array is None and ("%a" in log or "%A" in log):
        raise ConfigurationError(f"--log {log}: %A and %a (the array, its task) need --array")


def parse_submit(args: Sequence[str]) -> Request:
    """``submit``'s command line (after the word ``submit``) as a checked :class:`Request`.

    Raises:
        ConfigurationError: an unknown option, a missing or inconsistent one, or a job file that
            does not exist; the message is one line.
    """
    return _SubmitParser().parse(args)


# ---------------------------------------------------------------------------- the script
#: The file that holds the script's pieces, in the package (package data: pyproject.toml).
TEMPLATE = "templates/slurm_batch.sh"
_PIECE = re.compile(r"^#>>> ([A-Z0-9_]+)\n", re.MULTILINE)
_pieces: dict[str, str] = {}


def _piece(name: str) -> str:
    """The piece ``name`` of :data:`TEMPLATE` (``#>>> NAME`` to the next marker), read once."""
    if not _pieces:
        from importlib.resources import files

        text = files(__package__ or "evocluster").joinpath(TEMPLATE).read_text(encoding="utf-8")
        _, *found = _PIECE.split(text)  # the file's own comment, then name, text, name, text...
        _pieces.update(zip(found[::2], found[1::2], strict=True))
    return _pieces[name]


def _inline(name: str) -> str:
    """A piece used inside a line of another: without its last newline."""
    return _piece(name).removesuffix("\n")


def _wrap(text: str, width: int = 96) -> list[str]:
    """``text`` in lines that fit a 100-column script after a comment's ``# ``."""
    import textwrap

    return textwrap.wrap(text, width, break_on_hyphens=False, break_long_words=False)


def _fill(text: str, **values: str) -> str:
    for key, value in values.items():
        text = text.replace(f"@{key.upper()}@", value)
    return text


def _sbatch_lines(req: Request) -> list[str]:
    lines = [f"#SBATCH --job-name={req.name}", f"#SBATCH --ntasks={req.ntasks}"]
    if req.nodes is not None:
        lines.append(f"#SBATCH --nodes={req.nodes}")
    lines.append(f"#SBATCH --time={req.time}")
    if req.partition is not None:
        lines.append(f"#SBATCH --partition={req.partition}")
    if req.account is not None:
        lines.append(f"#SBATCH --account={req.account}")
    if req.array is not None:
        lines.append(f"#SBATCH --array={req.array}")
    lines.append(f"#SBATCH --output={req.output}")
    # where `status` finds a run log that is not beside the output (or that there is none)
    if req.no_log:
        lines.append(f"#SBATCH --comment={NO_LOG}")
    elif req.log is not None:
        lines.append(f"#SBATCH --comment={LOG_AT}{req.log}")
    return lines


def _title(req: Request) -> str:
    if req.backend == "scoop":
        what = f"on {req.ntasks} SCOOP processes (the origin runs the job, the others evaluate)"
    else:
        what = (
            f"on {req.ntasks} MPI ranks started by {req.launcher} (rank 0 runs the job, "
            f"the others evaluate)"
        )
    array = f", as a job array ({req.array})" if req.array is not None else ""
    return "\n# ".join(_wrap(f"evocluster batch job: {req.job} {what}{array}."))


def render(req: Request, *, python: str | None = None) -> str:
    """The batch script for ``req``: the same text for the same request and interpreter.

    Args:
        req: the checked request.
        python: the interpreter the job runs with (default: this one, ``sys.executable``).

    Returns:
        The script, ready for ``sbatch``.
    """
    q = shlex.quote
    if req.backend == "scoop":
        who = "SCOOP's origin, the process that runs the job (its workers do not get it)."
    else:
        who = f"{req.launcher}, which passes it on to every rank; only the master handles it."
    who = "\n#      ".join(_wrap(f"The trap below passes it on to {who}", 91))
    parts = [
        _fill(
            _piece("HEADER"),
            title=_title(req),
            lead=str(req.lead),
            who=who,
            sbatch="\n".join(_sbatch_lines(req)),
            python=q(python or sys.executable),
            job=q(req.job),
        )
    ]
    if req.checkpoint is not None:
        checkpoint = "ARRAY_CHECKPOINT" if req.array is not None else "CHECKPOINT"
        parts.append(_fill(_piece(checkpoint), checkpoint=q(req.checkpoint)))
    if req.log_pattern is not None:
        parts.append(_fill(_piece("LOG"), log=q(req.log_pattern)))
    if req.array is not None:
        parts.append(_piece("ARRAY_SEED"))
    parts.append(_fill(_piece("ARGS"), args=" ".join(q(a) for a in req.job_args)))
    parts.append(_piece("START"))
    if req.checkpoint is not None:
        parts.append(_piece("RESUME"))
    if req.backend == "scoop":
        parts.append(_fill(_piece("TRAP"), warned="warned=0\n", forward=_piece("FORWARD_SCOOP")))
        parts.append(_piece("ORIGIN"))
        parts.append(_piece("RUN_SCOOP"))
        checkpointed = _inline("CHECKPOINTED_SCOOP")
    else:
        parts.append(_fill(_piece("TRAP"), warned="", forward=_piece("FORWARD_MPI")))
        parts.append(_piece("IGNORE_USR1"))
        parts.append(_piece("RUN_SRUN" if req.launcher == "srun" else "RUN_MPIEXEC"))
        checkpointed = _inline("CHECKPOINTED_MPI")
    parts.append(_fill(_piece("WAIT"), checkpointed=checkpointed))
    return "".join(parts)


def submit(req: Request, script: str) -> str:
    """Hand ``script`` to ``sbatch`` (on its standard input); return the job id.

    Raises:
        ConfigurationError: ``sbatch`` is not on PATH.
        RuntimeError: ``sbatch`` refused the job (its message).
    """
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise ConfigurationError(
            "sbatch is not on PATH: submit needs SLURM's commands (run it on the cluster's login "
            "node); --dry-run prints the script without them"
        )
    done = subprocess.run(
        [sbatch, "--parsable"],
        input=script,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if done.returncode != 0:
        message = " ".join(done.stderr.split()) or f"exit code {done.returncode}"
        raise RuntimeError(f"sbatch refused the job: {message}")
    return done.stdout.strip().split(";")[0]  # "id" or "id;cluster"


def _submit_main(args: Sequence[str]) -> int:
    try:
        req = parse_submit(args)
        script = render(req)
        if req.dry_run:
            sys.stdout.write(script)
            return 0
        jobid = submit(req, script)
    except ConfigurationError as e:
        _say(f"submit: {e}")
        return EXIT_USAGE
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        _say(f"submit: {e}")
        return 1
    print(jobid, flush=True)
    ids = {"%j": jobid, "%A": jobid, "%a": "*"} if req.array is not None else {"%j": jobid}
    out = expand(req.output, ids)
    log = "" if req.log_pattern is None else f", run log: {expand(req.log_pattern, ids)}"
    _say(f"submitted job {jobid} (output: {out}{log}); python -m evocluster status {jobid}")
    return 0


# ====================================================================================== main
def _say(message: str) -> None:
    sys.stdout.flush()
    print(f"evocluster: {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str]) -> int:
    """``python -m evocluster submit ...`` or ``python -m evocluster status JOBID``.

    Args:
        argv: the command line after ``-m evocluster``, the subcommand first.

    Returns:
        The exit code: 0, 1 (SLURM refused or does not know the job), 2 (a usage error: nothing
        was submitted).
    """
    command, *args = argv
    if command == "submit":
        return _submit_main(args)
    if command == "status":
        from . import _slurm_status

        return _slurm_status.main(args)
    _say(f"unknown subcommand {command!r}: submit or status")
    return EXIT_USAGE
