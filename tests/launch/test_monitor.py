"""The progress display and the run log, run as users run them: the launcher (local pool, MPI),
SCOOP and a plain ``python job.py``; a terminal (a real pseudo-terminal) and a pipe; the log
read back with ``_runlog.read`` and checked against what the job itself printed."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import (
    FIXTURES,
    JOBS,
    clean_env,
    declare,
    default_signals,
    launch_on,
    launcher,
    output,
    run,
    started,
)

from evocluster import _runlog

PROGRESS_JOB = str(FIXTURES / "jobs" / "progress_job.py")
ONEMAX = str(JOBS / "onemax_builtin.py")

#: a plain progress line: elapsed, the current map, rate, workers busy, failures
LINE = re.compile(
    r"^evocluster: \d+:\d\d:\d\d  (gen \d+(/\d+)?  )?(map (\d+)/(\d+) \(\d+%\)  )?"
    r"[\d.e+]+ evals/s  workers (\d+)/(\d+) busy  (\d+) failed.*  (\d+) evals in all$",
    re.M,
)


def _records(path: Path) -> tuple[list[_runlog.Run], list[str]]:
    runs, note = _runlog.read(path)
    assert note == "", note
    return runs, [r["record"] for r in runs[-1].records]


def _job_values(stdout: str) -> int:
    m = re.search(r"^JOBDONE (\d+)$", stdout, re.M)
    assert m, stdout
    return int(m.group(1))


# ------------------------------------------------------------------ the run log
@pytest.mark.parametrize("where", declare(["local", "mpich-wheel"], mpi=["mpich-wheel"]))
def test_an_engine_run_logs_its_start_generations_workers_and_end(
    tmp_path: Path, where: str
) -> None:
    log = tmp_path / "run.jsonl"
    cmd = launch_on(where, 2, "--log", str(log), "--log-every", "0.2", ONEMAX, "--ngen", "5")
    r = run(cmd, timeout=90, cwd=tmp_path, no_leftovers=True)
    assert r.returncode == 0, output(r)
    runs, kinds = _records(log)
    # interval records come from the start, before the job's loop begins
    assert len(runs) == 1 and "loop" in kinds and kinds[-1] == "end", kinds
    start, run_ = runs[0].start, runs[0]
    assert start["schema"] == _runlog.SCHEMA and start["workers"] == 2
    assert start["backend"] == ("local" if where == "local" else "mpi")
    assert start["host"] == socket.gethostname() and start["argv"][-1] == "5"
    if where != "local":
        assert start["ranks"] == 3 and "MPICH" in start["mpi_library"], start
    loop = run_.last("loop")
    assert loop is not None and (loop["loop"], loop["generations"]) == ("generational", 5)
    generations = run_.of("generation")
    assert [g["generation"] for g in generations] == list(range(6))
    # the rows the job printed are the rows the log holds
    printed = re.findall(r"^gen\s+(\d+)\s+evals\s+(\d+)\s+\((\d+)\)", r.stdout, re.M)
    assert [
        (str(g["generation"]), str(g["evals"]), str(g["evaluations"])) for g in generations
    ] == [tuple(p) for p in printed]
    best = float(re.search(r"^best fitness ([\d.]+)", r.stdout, re.M).group(1))  # type: ignore[union-attr]
    assert generations[-1]["best"] == pytest.approx(best, abs=1e-5)
    end = run_.ended
    assert end is not None and end["exit_code"] == 0 and end["failed"] == 0
    total = generations[-1]["evaluations"]
    assert end["evaluations"] == total
    assert end["hosts"] == {socket.gethostname(): 2}
    # once every worker has said where it runs (its READY: not awaited before evaluating)
    (hosts,) = run_.of("hosts")
    assert hosts["hosts"] == {socket.gethostname(): 2} and hosts["backend"] == start["backend"]
    workers = run_.of("workers")
    named = [w for w in workers if "names" in w]  # again each time a worker first answers
    assert named and len(named[-1]["names"]) == 2, workers
    last = workers[-1]
    assert sum(last["items"]) == total and all(n > 0 for n in last["tasks"])
    assert all(b > 0 for b in last["bytes_sent"]) and all(b >= 0 for b in last["busy"])
    kind = "local worker" if where == "local" else "worker rank"
    assert all(n.startswith(kind) and "(pid " in n for n in named[-1]["names"]), named
    assert named[-1]["hosts"] == [socket.gethostname()] * 2


@pytest.mark.scoop
def test_a_scoop_run_logs_from_the_environment(tmp_path: Path) -> None:
    log = tmp_path / "run.jsonl"
    env = clean_env(EVOCLUSTER_LOG=str(log), EVOCLUSTER_LOG_EVERY="0.2")
    cmd = [sys.executable, "-m", "scoop", "-n", "3", ONEMAX, "--ngen", "3"]
    r = run(cmd, timeout=90, cwd=tmp_path, env=env, no_leftovers=True)
    assert r.returncode == 0, output(r)
    runs, kinds = _records(log)
    start, end = runs[0].start, runs[0].ended
    assert start["backend"] == "scoop" and kinds[-1] == "end", kinds
    assert end is not None and end["exit_code"] is None  # no launcher: the code is not known
    generations = runs[0].of("generation")
    assert [g["generation"] for g in generations] == [0, 1, 2, 3]
    assert end["evaluations"] == generations[-1]["evaluations"]
    names = runs[0].of("workers")[0]["names"]
    assert len(names) == 2 and all(n.startswith("SCOOP worker on host") for n in names), names


def test_failures_and_the_exit_code_are_logged(tmp_path: Path) -> None:
    log = tmp_path / "run.jsonl"
    cmd = launcher(
        "--workers", "2", "--on-error", "penalize", "--penalty", "-1", "--log", str(log),
        PROGRESS_JOB, "2", "10", "0.01", "--fail", "4", "--exit", "3",
    )  # fmt: skip
    r = run(cmd, timeout=60, cwd=tmp_path, no_leftovers=True)
    assert r.returncode == 3, output(r)
    runs, _ = _records(log)
    failures = runs[0].of("failure")
    # items 1..20, every fourth fails: 4, 8, 12, 16, 20
    # the maps of items 1..10 and 11..20: 4 and 8 fail (positions 3, 7), then 12, 16, 20 (1, 5, 9)
    assert sorted(f["item"] for f in failures) == [1, 3, 5, 7, 9], failures
    assert {f["action"] for f in failures} == {"penalized"}
    assert all(f["error"] == "builtins.ValueError" for f in failures)
    assert all("fails on purpose" in f["message"] for f in failures)
    end = runs[0].ended
    assert end is not None and (end["exit_code"], end["failed"], end["evaluations"]) == (3, 5, 20)
    assert sum(runs[0].of("workers")[-1]["failed"]) == 5


def test_checkpoints_written_and_resumed_are_logged(tmp_path: Path) -> None:
    log, ckpt = tmp_path / "run.jsonl", tmp_path / "run.ckpt"
    first = launcher("--workers", "2", "--log", str(log), "--checkpoint", str(ckpt))
    r = run([*first, ONEMAX, "--ngen", "3"], timeout=60, cwd=tmp_path)
    assert r.returncode == 0, output(r)
    r = run([*first, "--resume", ONEMAX, "--ngen", "5"], timeout=60, cwd=tmp_path)
    assert r.returncode == 0, output(r)
    runs, _ = _records(log)
    assert len(runs) == 2  # the second run appended to the same log
    written = runs[0].of("checkpoint")
    assert written and all(c["action"] == "written" and c["path"] == str(ckpt) for c in written)
    assert written[-1]["finished"] is True and written[-1]["generation"] == 3
    resumed = runs[1].of("checkpoint")
    assert resumed[0]["action"] == "resumed" and resumed[0]["generation"] == 3, resumed
    assert resumed[-1]["finished"] is True and resumed[-1]["generation"] == 5


def test_a_killed_run_leaves_a_log_that_reads(tmp_path: Path) -> None:
    log = tmp_path / "run.jsonl"
    cmd = launcher(
        "--workers", "2", "--log", str(log), "--log-every", "0.1", PROGRESS_JOB, "100", "10", "0.05"
    )  # fmt: skip
    with started(cmd, cwd=tmp_path) as proc:
        deadline = time.monotonic() + 60
        while '"record":"interval"' not in (log.read_text() if log.exists() else ""):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    runs, _ = _runlog.read(log)
    assert runs[0].ended is None  # no end record: the run was cut short
    interval = runs[0].last("interval")
    assert interval is not None and interval["evaluations"] >= 0 and interval["workers"] == 2


# ------------------------------------------------------------------ plain progress lines
def _plain_lines(stderr: str) -> list[re.Match[str]]:
    return list(LINE.finditer(stderr))


@pytest.mark.parametrize("where", declare(["local", "mpich-wheel"], mpi=["mpich-wheel"]))
def test_without_a_terminal_progress_is_plain_lines(tmp_path: Path, where: str) -> None:
    cmd = launch_on(where, 2, "--progress-every", "0.3", PROGRESS_JOB, "3", "16", "0.1")
    r = run(cmd, timeout=90, cwd=tmp_path, no_leftovers=True)
    assert r.returncode == 0, output(r)
    lines = _plain_lines(r.stderr)
    assert len(lines) >= 3, output(r)
    for m in lines:
        done, total, busy, workers, failed = m.group(4, 5, 6, 7, 8)
        assert total is None or (int(total) == 16 and 0 <= int(done) <= 16), m.group(0)
        assert int(workers) == 2 and 0 <= int(busy) <= 2 and failed == "0", m.group(0)
    assert any(m.group(4) is not None for m in lines), output(r)
    evals = [int(m.group(9)) for m in lines]
    assert evals == sorted(evals) and evals[-1] <= 48
    # the job's own lines, whole
    assert re.findall(r"^JOBLINE (\d) =+ 16 values$", r.stdout, re.M) == ["0", "1", "2"]
    assert _job_values(r.stdout) == 48


def test_quiet_prints_no_progress(tmp_path: Path) -> None:
    cmd = launcher(
        "--quiet", "--progress-every", "0.2", "--workers", "2", PROGRESS_JOB, "2", "8", "0.1"
    )
    r = run(cmd, timeout=60, cwd=tmp_path)
    assert r.returncode == 0 and r.stderr == "", output(r)
    assert _job_values(r.stdout) == 16


def test_a_job_run_without_the_launcher_shows_progress_too(tmp_path: Path) -> None:
    cmd = [sys.executable, PROGRESS_JOB, "2", "12", "0.1"]
    r = run(cmd, timeout=60, cwd=tmp_path, env=clean_env(EVOCLUSTER_PROGRESS_EVERY="0.3"))
    assert r.returncode == 0, output(r)
    assert _plain_lines(r.stderr), output(r)
    quiet = run(cmd, timeout=60, cwd=tmp_path, env=clean_env(EVOCLUSTER_QUIET="1"))
    assert quiet.returncode == 0 and quiet.stderr == "", output(quiet)


# ------------------------------------------------------------------ a terminal
def _on_a_terminal(cmd: list[str], cwd: Path, timeout: float = 60) -> tuple[int, str]:
    """Run ``cmd`` with stdin, stdout and stderr on a pseudo-terminal (80 columns): its exit
    code and everything it wrote there."""
    main, child = pty.openpty()
    proc = subprocess.Popen(
        cmd, stdin=child, stdout=child, stderr=child, cwd=cwd, env=clean_env(),
        start_new_session=True, preexec_fn=default_signals,  # noqa: PLW1509
    )  # fmt: skip
    os.close(child)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 1)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(main, 65536)
            except OSError:  # EIO: every process holding the terminal has ended
                break
            if not data:
                break
            out += data
        code = proc.wait(timeout=10)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        os.close(main)
    return code, out.decode("utf-8", "replace")


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def test_on_a_terminal_a_live_line_and_the_jobs_output_whole(tmp_path: Path) -> None:
    cmd = launcher("--workers", "2", PROGRESS_JOB, "3", "16", "0.1")
    code, screen = _on_a_terminal(cmd, tmp_path)
    assert code == 0, screen
    text = ANSI.sub("", screen).replace("\r\n", "\n")
    # every line the job printed is there, whole, on a line of its own
    lines = [line.split("\r")[-1] for line in text.split("\n")]
    assert [x for x in lines if x.startswith("JOB")] == [
        *(f"JOBLINE {k} " + "=" * 60 + " 16 values" for k in range(3)),
        "JOBDONE 48",
    ], screen
    assert re.search(r"map \d+/16 \(\d+%\)", text) and "workers 2/2 busy" in text, screen
    assert "\x1b[?25l" in screen and screen.rstrip().endswith("\x1b[?25h"), screen[-300:]


# ------------------------------------------------------------------ mistakes
@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--progress-every", "0"], "--progress-every must be a number of seconds > 0"),
        (["--log-every", "-1"], "--log-every must be a number of seconds > 0"),
        (["--log", "."], "--log . is a directory"),
        (["--log", "missing/run.jsonl"], "cannot write the run log missing/run.jsonl"),
    ],
)
def test_a_bad_option_is_refused_before_anything_runs(
    tmp_path: Path, args: list[str], said: str
) -> None:
    r = run(
        launcher("--workers", "1", *args, PROGRESS_JOB, "1", "1", "0"), timeout=60, cwd=tmp_path
    )
    assert r.returncode == 2 and said in r.stderr, output(r)
    assert "JOB" not in r.stdout, output(r)


IDLE_JOB = """
import time
import evocluster

if __name__ == "__main__":
    print(evocluster.map(abs, [-1, -2, -3]), flush=True)
    time.sleep(2.5)  # idle: an executor kept between runs of work
    print("IDLE DONE", flush=True)
"""


def test_an_idle_executor_is_not_reported_again_and_again(tmp_path: Path) -> None:
    job = tmp_path / "idle.py"
    job.write_text(IDLE_JOB)
    r = run(launcher("--workers", "1", "--progress-every", "0.2", str(job)), timeout=60)
    assert r.returncode == 0 and "IDLE DONE" in r.stdout, output(r)
    lines = _plain_lines(r.stderr)
    # at most a line while the map ran and the one after it: 2.5 s idle at 0.2 s say nothing
    assert 1 <= len(lines) <= 3, output(r)
    assert lines[-1].group(9) == "3", output(r)


MASTER_COST_JOB = """\
import json
import evocluster
def same(x):
    return x
if __name__ == '__main__':
    ex = evocluster.get_executor()
    assert list(ex.map(same, range(400), chunksize=1)) == list(range(400))
    print('STATS ' + json.dumps(ex.stats()), flush=True)
"""

MASTER_KEYS = (
    "master_send_cpu_s",
    "master_recv_cpu_s",
    "master_send_us_per_message",
    "master_recv_us_per_message",
    "master_us_per_item",
)


@pytest.mark.parametrize("where", declare(["local", "mpich-wheel"], mpi=["mpich-wheel"]))
def test_the_masters_cpu_cost_is_in_stats_and_the_run_log(tmp_path: Path, where: str) -> None:
    """``stats()`` and the run log's ``workers`` records give the master's CPU cost (its
    scheduler thread's CPU time, sending and otherwise), per message and per item, consistent
    with the counts of messages and items."""
    job, log = tmp_path / "job.py", tmp_path / "run.jsonl"
    job.write_text(MASTER_COST_JOB)
    r = run(launch_on(where, 2, "--log", str(log), str(job)), timeout=90, cwd=tmp_path)
    assert r.returncode == 0, output(r)
    m = re.search(r"^STATS (.*)$", r.stdout, re.M)
    assert m, output(r)
    stats = json.loads(m.group(1))
    send, recv = stats["master_send_cpu_s"], stats["master_recv_cpu_s"]
    assert send > 0 and recv > 0, stats  # 400 messages each way cost some CPU
    assert stats["items"] == stats["messages_sent"] == 400, stats  # a chunk per item
    per_sent = send * 1e6 / stats["messages_sent"]
    per_received = recv * 1e6 / stats["messages_received"]
    assert stats["master_send_us_per_message"] == pytest.approx(per_sent, rel=1e-3, abs=1e-3)
    assert stats["master_recv_us_per_message"] == pytest.approx(per_received, rel=1e-3, abs=1e-3)
    per_item = (send + recv) * 1e6 / stats["items"]
    assert stats["master_us_per_item"] == pytest.approx(per_item, rel=1e-3, abs=1e-3)
    runs, _ = _records(log)
    last = runs[0].of("workers")[-1]  # written at the end: at least what the job saw
    assert all(last[k] > 0 for k in MASTER_KEYS), last
    assert last["master_send_cpu_s"] >= send and last["master_recv_cpu_s"] >= recv, last
