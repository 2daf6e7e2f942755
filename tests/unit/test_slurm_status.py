"""``status``'s reading of a job's run log, without SLURM: where the log is (beside the output,
submit's ``--log`` or ``--no-log`` in the job's comment), the line it makes of a log's last run
(running, not yet measured, ended), and what it says of a log that is missing, empty, cut short
or not a run log.  tests/slurm/test_slurm.py shows the same of real jobs on a real SLURM."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from evocluster import _slurm as slurm
from evocluster import _slurm_status as status
from evocluster._runlog import Run, read

START = {"record": "start", "t": 0.0, "schema": 1, "time": "2027-01-15T08:00:00+00:00"}
T0 = status._started(Run(START)) or 0.0  # the run's start, seconds since the epoch


def task(**fields: Any) -> status.Task:
    base: dict[str, Any] = {
        "id": "123",
        "state": "RUNNING",
        "exit": "-",
        "restarts": "0",
        "reason": "",
        "stdout": "/home/u/onemax-123.out",
        "name": "onemax",
        "workdir": "/home/u",
        "ids": {"%j": "123", "%A": "", "%a": ""},
    }
    return status.Task(**{**base, **fields})


def write(path: Path, *records: dict[str, Any], torn: str = "") -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + torn)
    return path


INTERVAL = {
    "record": "interval",
    "t": 120.0,
    "evaluations": 7690,
    "submitted": 7700,
    "done": 37,
    "total": 64,
    "rate": 61.5,
    "workers": 16,
    "busy": 15,
    "failed": 2,
    "retried": 0,
    "eta": 370.0,
    "generation": 12,
    "generations": 50,
    "best": 97.0,
}
CHECKPOINT = {"record": "checkpoint", "t": 110.0, "action": "written", "generation": 11}


@pytest.mark.parametrize(
    ("output", "log"),
    [
        ("onemax-%j.out", "onemax-%j.jsonl"),
        ("onemax-%A_%a.out", "onemax-%A_%a.jsonl"),
        ("/home/u/onemax-123_4.out", "/home/u/onemax-123_4.jsonl"),
        ("/home/u/v1.2/slurm", "/home/u/v1.2/slurm.jsonl"),
        ("/home/u/run.log.txt", "/home/u/run.log.jsonl"),
    ],
)
def test_the_log_is_beside_the_output(output: str, log: str) -> None:
    assert status.log_beside(output) == log


def test_where_status_looks_for_the_log() -> None:
    assert status.log_of(task()) == "/home/u/onemax-123.jsonl"
    array = {"%j": "130", "%A": "123", "%a": "7"}
    at = task(comment="evocluster-log=logs/r-%A_%a-%j.jsonl", ids=array)
    assert status.log_of(at) == "/home/u/logs/r-123_7-130.jsonl"
    assert status.log_of(task(comment="evocluster-log=/abs/r.jsonl")) == "/abs/r.jsonl"
    assert status.log_of(task(comment="evocluster-no-log")) is None
    assert status.log_of(task(stdout="")) is None
    assert status.log_of(task(comment="a comment of the user's")) == "/home/u/onemax-123.jsonl"


def test_submit_writes_the_log_beside_the_output_or_where_it_is_told(tmp_path: Path) -> None:
    job = tmp_path / "onemax.py"
    job.write_text("")
    base = [str(job), "-n", "2", "-t", "00:10:00"]
    script = slurm.render(slurm.parse_submit(base))
    assert "\nLOG=onemax-%j.jsonl\n" in script and "--comment" not in script
    assert 'export EVOCLUSTER_LOG="$LOG"' in script
    array = slurm.render(slurm.parse_submit([*base, "--array", "0-3"]))
    assert "\nLOG=onemax-%A_%a.jsonl\n" in array
    told = slurm.render(slurm.parse_submit([*base, "--log", "logs/r-%j.jsonl"]))
    assert "\nLOG=logs/r-%j.jsonl\n" in told
    assert "\n#SBATCH --comment=evocluster-log=logs/r-%j.jsonl\n" in told
    off = slurm.render(slurm.parse_submit([*base, "--no-log"]))
    assert "EVOCLUSTER_LOG" not in off and "\n#SBATCH --comment=evocluster-no-log\n" in off


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--log", "a b.jsonl"], "without spaces"),
        (["--log", "$HOME/r.jsonl"], "without spaces"),
        (["--log", "r.jsonl", "--no-log"], "give one of them"),
        (["--log", "r.jsonl", "--array", "0-3"], "put %a (or %j) in the path"),
        (["--log", "r-%a.jsonl"], "need --array"),
    ],
)
def test_a_log_path_submit_cannot_use_is_refused(
    tmp_path: Path, extra: list[str], message: str
) -> None:
    job = tmp_path / "onemax.py"
    job.write_text("")
    with pytest.raises(slurm.ConfigurationError, match=re.escape(message)):
        slurm.parse_submit([str(job), "-n", "2", "-t", "00:10:00", *extra])


def test_a_running_run_shows_the_figures_of_its_last_interval(tmp_path: Path) -> None:
    log = write(tmp_path / "r.jsonl", START, CHECKPOINT, INTERVAL)
    runs, note = read(log)
    assert note == ""
    line = status.progress(runs, now=T0 + 123.0)  # the interval was written 3 s ago
    assert line == (
        "0:02:03  gen 12/50  map 37/64 (58%)  61.5 evals/s  workers 15/16 busy  2 failed  "
        "best 97  ~0:06:07 left  7690 evals in all  checkpoint gen 11 13 s ago  (log 3 s ago)"
    )


def test_a_requeued_run_is_numbered_and_an_ended_one_says_how(tmp_path: Path) -> None:
    end = {"record": "end", "t": 300.0, "exit_code": 75, "seconds": 300.0, "evaluations": 9000}
    log = write(tmp_path / "r.jsonl", START, INTERVAL, {**end, "failed": 2}, START, INTERVAL)
    runs, _ = read(log)
    assert status.progress(runs, now=T0 + 120.0).startswith("run 2:  0:02:00  gen 12/50")
    assert status.progress(runs[:1], now=T0 + 400.0) == (
        "ended with exit code 75 after 0:05:00  9000 evals  2 failed"
    )


def test_a_run_before_its_first_interval(tmp_path: Path) -> None:
    loop = {"record": "loop", "t": 1.0, "loop": "generational", "generations": 50}
    gen = {"record": "generation", "t": 4.0, "generation": 2}
    runs, _ = read(write(tmp_path / "r.jsonl", START, loop, gen))
    assert status.progress(runs, now=T0 + 5.0) == (
        "0:00:05  gen 2/50  no figures yet (the log has them every --log-every s)"
    )


def test_a_log_cut_short_reads_to_its_last_whole_line(tmp_path: Path) -> None:
    log = write(tmp_path / "onemax-123.jsonl", START, INTERVAL, torn='{"record": "interv')
    line = status._progress_of(task(stdout=str(tmp_path / "onemax-123.out")), now=T0 + 120.0)
    assert line.startswith("0:02:00  gen 12/50  map 37/64 (58%)  61.5 evals/s"), line
    assert read(log)[1] == "line 3, the last, was cut short (the run was killed?) and is skipped"


def test_no_log_an_empty_one_or_another_file_is_one_line(tmp_path: Path) -> None:
    out = str(tmp_path / "onemax-123.out")
    log = tmp_path / "onemax-123.jsonl"
    assert status._progress_of(task(stdout=out), T0) == f"no run log yet ({log})"
    log.write_text("")
    assert status._progress_of(task(stdout=out), T0) == f"no run log yet ({log} is empty)"
    log.write_text("gen 1 evals 20\n")
    assert status._progress_of(task(stdout=out), T0) == (
        f"unreadable run log: {log} is not an evocluster run log: line 1 is not a run-log record"
    )
    log.write_text(json.dumps({**START, "schema": 99}) + "\n")
    assert "read it with a newer evocluster" in status._progress_of(task(stdout=out), T0)
    no_log = task(comment="evocluster-no-log")
    assert status._progress_of(no_log, T0) == "no run log (submitted with --no-log)"
