"""SLURM batch jobs: render a batch script, submit it, summarise a job or a job array.

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

``status`` asks ``scontrol`` (``sacct`` for jobs the controller has forgotten) and reads the last
line of each finished task's output file, and a running task's progress from its run log.
:func:`run_seed` gives each task of a job array a seed of its own.  This module never imports
mpi4py: only the subcommands and ``run_seed`` load it.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple, NoReturn

from ._progress import duration, parts
from ._runlog import Run, RunLogError
from ._runlog import read as read_log
from .errors import ConfigurationError

if TYPE_CHECKING:
    import argparse

__all__ = ["EXIT_USAGE", "Request", "main", "parse_submit", "render", "run_seed", "status"]

#: Exit code of a usage error: nothing was submitted.
EXIT_USAGE = 2
#: The most the wall-time warning comes before the limit; shorter jobs get half their time.
_LEAD = 120

_TIME = re.compile(r"^(?:(\d+)-)?(\d+):([0-5]\d):([0-5]\d)$")
_ARRAY = re.compile(r"^\d+(?:-\d+(?::\d+)?)?(?:,\d+(?:-\d+(?::\d+)?)?)*(?:%\d+)?$")
_NAME = re.compile(r"^[A-Za-z0-9_.,:@+=-]+$")  # a partition or account: safe in an #SBATCH line
_JOBID = re.compile(r"^\d+(?:_\d+)?$")


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
        lines.append(f"#SBATCH --comment={_NO_LOG}")
    elif req.log is not None:
        lines.append(f"#SBATCH --comment={_LOG_AT}{req.log}")
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
    out = _expand(req.output, ids)
    log = "" if req.log_pattern is None else f", run log: {_expand(req.log_pattern, ids)}"
    _say(f"submitted job {jobid} (output: {out}{log}); python -m evocluster status {jobid}")
    return 0


# ==================================================================================== status
class Task(NamedTuple):
    """One job, or one task (or range of pending tasks) of an array, as ``status`` shows it."""

    id: str  # "123", "123_4" or "123_[5-9]"
    state: str
    exit: str  # "0", "75", "signal 9", or "-" while it has not ended
    restarts: str
    reason: str  # why it waits, "" when it does not
    stdout: str  # the output file, "" when unknown
    name: str
    comment: str = ""  # submit's note of where the run log is, when not beside the output
    workdir: str = ""  # what relative paths are relative to
    ids: dict[str, str] = {}  # noqa: RUF012  (never changed) %j, %A, %a -> this task's ids


_FINISHED = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
}


def _fields(line: str) -> dict[str, str]:
    """``scontrol show job -o``'s ``Key=value`` words (a word without ``=`` continues a value)."""
    fields: dict[str, str] = {}
    key = None
    for word in line.split():
        name, eq, value = word.partition("=")
        if eq and re.fullmatch(r"[A-Za-z][\w/:]*", name):
            key = name
            fields[key] = value
        elif key is not None:
            fields[key] += " " + word
    return fields


def _exit(code: str, state: str) -> str:
    if state not in _FINISHED:
        return "-"
    status, _, signal = code.partition(":")
    return f"signal {signal}" if signal not in ("", "0") else status


def _from_scontrol(jobid: str) -> list[Task] | None:
    done = subprocess.run(
        ["scontrol", "show", "job", "-o", jobid],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if done.returncode != 0:
        said = " ".join((done.stderr + " " + done.stdout).split())
        # a job it never had or has forgotten: "slurm_load_jobs error: Invalid job id specified"
        # (stderr); a task an array does not have: "Job 12_9 not found" (stdout, SLURM 22.05)
        if "Invalid job id" in said or re.search(r"\bnot found\b", said):
            return None
        raise RuntimeError(f"scontrol show job {jobid}: {said or f'exit {done.returncode}'}")
    tasks = []
    for line in done.stdout.splitlines():
        f = _fields(line)
        if not f:
            continue
        ident = f.get("JobId", "?")
        if f.get("ArrayJobId") and f.get("ArrayTaskId"):
            task = f["ArrayTaskId"]
            ident = f"{f['ArrayJobId']}_{task if task.isdigit() else '[' + task + ']'}"
        state = f.get("JobState", "?")
        reason = f.get("Reason", "None")
        tasks.append(
            Task(
                ident,
                state,
                _exit(f.get("ExitCode", ""), state),
                f.get("Restarts", "-"),
                "" if reason == "None" or state != "PENDING" else reason,
                f.get("StdOut", ""),
                f.get("JobName", ""),
                f.get("Comment", ""),
                f.get("WorkDir", ""),
                {
                    "%j": f.get("JobId", ""),
                    "%A": f.get("ArrayJobId", ""),
                    "%a": f.get("ArrayTaskId", ""),
                },
            )
        )
    return tasks


def _from_sacct(jobid: str) -> list[Task]:
    """Jobs the controller no longer holds (``MinJobAge``), where accounting is enabled."""
    if shutil.which("sacct") is None:
        return []
    done = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", jobid, "-o", "JobID,State,ExitCode,JobName"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    tasks = []
    for line in done.stdout.splitlines() if done.returncode == 0 else []:
        parts = line.split("|")
        if len(parts) == 4:
            ident, state, code, name = parts
            state = state.split()[0] if state else "?"  # "CANCELLED by 0"
            tasks.append(Task(ident, state, _exit(code, state), "-", "", "", name))
    return tasks


_OWN = "evocluster batch:"
_SCOOP_LOG = re.compile(r"^\[[\d\- :,]+\] launcher .*\bINFO\b")
# what the launchers write as a run ends, after the job's last words: srun's and slurmstepd's
# ("srun: error: localhost: task 0: Exited with exit code 3", "srun: launch/slurm: _step_signal:
# Terminating StepId=12.0", "slurmstepd: error: *** STEP 12.0 ON n1 CANCELLED AT ..."), and
# MPICH's hydra ("[mpiexec@n1] ...", its "BAD TERMINATION" box of "=" lines)
_TEARDOWN = re.compile(r"^(srun|slurmstepd(-[\w.-]+)?): |^\[mpiexec@[^\]]*\] |^={10,}$|^=   [A-Z]")


def _last_line(path: str) -> str:
    """The last non-empty line of ``path`` (read from its end), or why there is none."""
    if not path:
        return ""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 8192))
            tail = fh.read().decode("utf-8", "replace")
    except OSError:
        return f"(no output file {path} here)"
    # the job's own last line: the batch script's "evocluster batch:" lines say only how it ended,
    # and the launchers (srun, mpiexec, SCOOP's) log their teardown after the job's last words
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    job = [
        line
        for line in lines
        if not (line.startswith(_OWN) or _SCOOP_LOG.match(line) or _TEARDOWN.match(line))
    ]
    return (job or lines or ["(no output)"])[-1]


# ------------------------------------------------------------------------ the run log
#: The job's comment (``#SBATCH --comment``) when its run log is not beside its output: submit's
#: ``--log PATH`` (%j, %A, %a as in --output), or ``--no-log``
_LOG_AT = "evocluster-log="
_NO_LOG = "evocluster-no-log"


def log_beside(output: str) -> str:
    """The run log beside an output file: the same name with ``.jsonl`` for its extension.

    ``onemax-%j.out`` -> ``onemax-%j.jsonl``, ``/home/u/onemax-123_4.out`` ->
    ``/home/u/onemax-123_4.jsonl``; a name without an extension gets ``.jsonl`` added.
    """
    head, tail = os.path.split(output)
    stem, dot, _ = tail.rpartition(".")
    return os.path.join(head, (stem if dot and stem else tail) + ".jsonl")


def _expand(pattern: str, ids: dict[str, str]) -> str:
    """``pattern`` with SLURM's ``%j``, ``%A``, ``%a`` replaced by ``ids``' values."""
    for key, value in ids.items():
        pattern = pattern.replace(key, value)
    return pattern


def log_of(task: Task) -> str | None:
    """Where ``task``'s run log is: submit's ``--log`` (the job's comment, relative to its
    working directory), or beside its output file; ``None`` for ``--no-log`` or no output."""
    if task.comment == _NO_LOG:
        return None
    if task.comment.startswith(_LOG_AT):
        return os.path.join(task.workdir, _expand(task.comment[len(_LOG_AT) :], task.ids))
    return log_beside(task.stdout) if task.stdout else None


def _ago(seconds: float) -> str:
    return f"{max(0, int(seconds))} s ago" if seconds < 60 else f"{duration(seconds)} ago"


def _started(run: Run) -> float | None:
    """When ``run`` started (seconds since the epoch), from its ``start`` record's ``time``."""
    import datetime

    try:
        return datetime.datetime.fromisoformat(str(run.start.get("time"))).timestamp()
    except ValueError:
        return None


def progress(runs: list[Run], now: float) -> str:
    """What ``status`` says of a job from its run log: the last run's figures.

    Running: its elapsed time, generation / generations, evaluations, their rate, workers busy /
    total, failures, the best fitness and the time left (the progress line's figures, from the
    last ``interval`` record, its estimate less the time since), the last checkpoint and how long
    ago, and how old the figures are.  Ended (a requeued job waiting): how, and its checkpoint.

    Args:
        runs: a run log's runs (:func:`evocluster._runlog.read`), the last one shown.
        now: the time (seconds since the epoch) that "ago" and "left" count from.
    """
    run = runs[-1]
    started = _started(run)
    at = (lambda r: now - (started + float(r.get("t") or 0))) if started else (lambda r: None)
    out = [f"run {len(runs)}:"] if len(runs) > 1 else []
    end, interval = run.ended, run.last("interval")
    if end is not None:
        code = end.get("exit_code")
        how = "ended" if code is None else f"ended with exit code {code}"
        out.append(f"{how} after {duration(float(end.get('seconds') or 0))}")
        out.append(f"{end.get('evaluations', 0)} evals")
        out.append(f"{end.get('failed', 0)} failed")
    elif interval is not None:
        age = at(interval)
        fig = {"done": 0, "total": 0, "evaluations": 0, "rate": 0.0, "busy": 0, "workers": 0}
        fig.update({k: v for k, v in interval.items() if v is not None})
        fig["failed"] = fig.get("failed", 0)
        fig["elapsed"] = float(interval.get("t") or 0) + (age or 0)
        if interval.get("eta") is not None:
            fig["eta"] = max(0.0, float(interval["eta"]) - (age or 0))
        out.extend(parts(fig))
    else:
        out.append(duration(now - started) if started else "started")
        gen, loop = run.last("generation"), run.last("loop")
        if gen is not None:
            total = (loop or {}).get("generations")
            out.append(f"gen {gen.get('generation')}" + (f"/{total}" if total else ""))
        out.append("no figures yet (the log has them every --log-every s)")
    checkpoint = run.last("checkpoint")
    if checkpoint is not None:
        what = "checkpoint" if checkpoint.get("action") == "written" else "resumed from"
        when = at(checkpoint)
        out.append(
            f"{what} gen {checkpoint.get('generation')}"
            + (f" {_ago(when)}" if when is not None else "")
        )
    if end is None and interval is not None and at(interval) is not None:
        out.append(f"(log {_ago(at(interval) or 0)})")
    return "  ".join(out)


def _progress_of(task: Task, now: float) -> str:
    """``task``'s :func:`progress`, or in one line why there is none."""
    path = log_of(task)
    if path is None:
        return "no run log (submitted with --no-log)" if task.comment == _NO_LOG else ""
    try:
        empty = os.path.getsize(path) == 0  # created by the launcher before its start record
    except OSError:
        return f"no run log yet ({path})"
    if empty:
        return f"no run log yet ({path} is empty)"
    try:
        runs, _ = read_log(path)
    except RunLogError as e:
        return f"unreadable run log: {e}"
    return progress(runs, now)


def _last_column(t: Task, now: float) -> str:
    """An ended task's last line of output; a running one's progress from its run log; why a
    pending one waits (and, requeued, how its last run ended)."""
    if t.state in _FINISHED:
        return _last_line(t.stdout)
    if t.state == "PENDING":
        waits = f"({t.reason})" if t.reason else ""
        if t.restarts not in ("0", "-") and "[" not in t.id:  # requeued: its last run
            return f"{waits}  {_progress_of(t, now)}".strip()
        return waits
    return _progress_of(t, now)  # running (or completing, suspended)


def status(jobid: str) -> int:
    """Print a summary of job ``jobid`` (a job array: one line per task); return an exit code.

    Columns: the job or task, its state, its exit code once it has ended, how often SLURM
    restarted it (requeues), and for a task that has ended the last line of its output file
    (the job's: not the batch script's own ``evocluster batch:`` lines or SCOOP's launcher log),
    for a running one its progress from the last run of its run log (:func:`progress`: beside
    the output, ``NAME-JOBID.jsonl``, or where ``submit --log`` put it), for a pending one why
    it waits (requeued: how its last run ended).

    Returns:
        0; 1 when SLURM does not know the job; 2 for a malformed job id or no ``scontrol``.
    """
    if not _JOBID.match(jobid):
        _say(f"status: {jobid!r} is not a job id (123, or 123_4 for a task of an array)")
        return EXIT_USAGE
    if shutil.which("scontrol") is None:
        _say("status: scontrol is not on PATH: status needs SLURM's commands")
        return EXIT_USAGE
    try:
        tasks = _from_scontrol(jobid)
        if tasks is None:
            tasks = _from_sacct(jobid)
        if not tasks:
            _say(f"status: {_unknown(jobid)}")
            return 1
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        _say(f"status: {e}")
        return 1
    tasks.sort(key=_order)
    width = max(len("JOB"), *(len(t.id) for t in tasks))
    state_width = max(len("STATE"), *(len(t.state) for t in tasks))
    print(f"{'JOB':<{width}}  {'STATE':<{state_width}}  EXIT      RESTARTS  LAST LINE / PROGRESS")
    now = time.time()
    for t in tasks:
        last = _last_column(t, now)
        print(f"{t.id:<{width}}  {t.state:<{state_width}}  {t.exit:<8}  {t.restarts:<8}  {last}")
    if len(tasks) > 1:
        counts: dict[str, int] = {}
        for t in tasks:
            counts[t.state] = counts.get(t.state, 0) + 1
        summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        print(f"{jobid} ({tasks[0].name}): {summary}")
    return 0


def _unknown(jobid: str) -> str:
    """Why SLURM knows nothing of ``jobid``: for a task of an array it still knows, the tasks
    the array has.

    Raises:
        RuntimeError, OSError, subprocess.TimeoutExpired: as :func:`_from_scontrol`.
    """
    forgotten = (
        "finished jobs are forgotten after MinJobAge, unless accounting keeps them for sacct"
    )
    array, _, index = jobid.partition("_")
    tasks = (_from_scontrol(array) or _from_sacct(array)) if index else []
    if tasks:
        have = ", ".join(t.id.partition("_")[2] or t.id for t in sorted(tasks, key=_order))
        return f"job array {array} has no task {index} (its tasks: {have}; {forgotten})"
    return f"SLURM does not know job {jobid} ({forgotten})"


_STATUS_HELP = """\
usage: python -m evocluster status JOBID

One line per job, or per task of a job array (JOBID or JOBID_TASK): its state, its exit code once
it has ended, how often SLURM restarted it (requeues), and the last line of its output once it has
ended; while it runs, its progress from its run log (beside the output file, NAME-JOBID.jsonl, or
where submit --log put it): generation, evaluations, rate, workers busy, failures, the last
checkpoint, the time left (for a pending task, why it waits).  Exit code 1: SLURM does not know
the job."""


def _order(task: Task) -> tuple[int, ...]:
    """Array tasks in index order (a pending range after the tasks listed one by one)."""
    numbers = [int(n) for n in re.findall(r"\d+", task.id)]
    return (*numbers[:1], 0 if "[" not in task.id else 1, *numbers[1:])


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
        if len(args) == 1 and args[0] in ("-h", "--help"):
            print(_STATUS_HELP)
            return 0
        if len(args) != 1:
            _say("status: give one job id: python -m evocluster status JOBID")
            return EXIT_USAGE
        return status(args[0])
    _say(f"unknown subcommand {command!r}: submit or status")
    return EXIT_USAGE
