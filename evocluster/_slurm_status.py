"""``python -m evocluster status JOBID``: a SLURM job, or each task of a job array, in one line:
its state, exit code and requeues from ``scontrol`` (``sacct`` for jobs the controller has
forgotten), then the last line of a finished task's output, or a running task's progress from its
run log; and where a job's run log is (the rule ``submit`` writes it by).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from typing import NamedTuple

from ._progress import duration, parts
from ._runlog import Run, RunLogError
from ._runlog import read as read_log

__all__ = [
    "EXIT_USAGE",
    "LOG_AT",
    "NO_LOG",
    "Task",
    "expand",
    "log_beside",
    "log_of",
    "main",
    "progress",
    "status",
]

#: Exit code of a usage error: nothing was submitted, nothing asked.
EXIT_USAGE = 2

_JOBID = re.compile(r"^\d+(?:_\d+)?$")


def _say(message: str) -> None:
    sys.stdout.flush()
    print(f"evocluster: {message}", file=sys.stderr, flush=True)


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
LOG_AT = "evocluster-log="
NO_LOG = "evocluster-no-log"


def log_beside(output: str) -> str:
    """The run log beside an output file: the same name with ``.jsonl`` for its extension.

    ``onemax-%j.out`` -> ``onemax-%j.jsonl``, ``/home/u/onemax-123_4.out`` ->
    ``/home/u/onemax-123_4.jsonl``; a name without an extension gets ``.jsonl`` added.
    """
    head, tail = os.path.split(output)
    stem, dot, _ = tail.rpartition(".")
    return os.path.join(head, (stem if dot and stem else tail) + ".jsonl")


def expand(pattern: str, ids: dict[str, str]) -> str:
    """``pattern`` with SLURM's ``%j``, ``%A``, ``%a`` replaced by ``ids``' values."""
    for key, value in ids.items():
        pattern = pattern.replace(key, value)
    return pattern


def log_of(task: Task) -> str | None:
    """Where ``task``'s run log is: submit's ``--log`` (the job's comment, relative to its
    working directory), or beside its output file; ``None`` for ``--no-log`` or no output."""
    if task.comment == NO_LOG:
        return None
    if task.comment.startswith(LOG_AT):
        return os.path.join(task.workdir, expand(task.comment[len(LOG_AT) :], task.ids))
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
        return "no run log (submitted with --no-log)" if task.comment == NO_LOG else ""
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


def main(args: list[str]) -> int:
    """``status JOBID`` (or ``--help``)."""
    if len(args) == 1 and args[0] in ("-h", "--help"):
        print(_STATUS_HELP)
        return 0
    if len(args) != 1:
        _say("status: give one job id: python -m evocluster status JOBID")
        return EXIT_USAGE
    return status(args[0])
