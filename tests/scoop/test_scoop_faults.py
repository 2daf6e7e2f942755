"""SCOOP runs that lose a process SCOOP owns, or whose job exits 75: real ``python -m scoop`` runs.

* SCOOP's launcher killed: the origin and its workers end within seconds, with one line.
* The origin killed (by itself, or by a worker's evaluation): the run exits non-zero (143), with
  one line, where SCOOP's launcher alone exits 0 in silence.
* A job that exits 75 (a checkpoint): the run exits 140, which ``slurm/scoop.sbatch`` requeues.

The job is ``tests/fixtures/jobs/scoop_fault_lost.py``; each run must leave no process behind
(``run``'s ``no_leftovers``: every process of the run's session, by pid).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import FIXTURES, ROOT, clean_env, output, run

JOB = str(FIXTURES / "jobs" / "scoop_fault_lost.py")
#: Longest a run may take from the fault to the end of its last process.
WITHIN = 10.0


@pytest.fixture(scope="module")
def key_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private XDG_CONFIG_HOME: the runs create their key there, not in the real home."""
    return tmp_path_factory.mktemp("xdg")


def scoop_run(mode: str, key_home: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m scoop -n 3 scoop_fault_lost.py MODE``, in an empty directory (``-m`` puts the
    working directory first on ``sys.path``: the repository's would shadow ``PYTHONPATH``, and the
    key's, its ``evocluster`` folder, the package)."""
    cmd = [sys.executable, "-m", "scoop", "-n", "3", JOB, mode]
    env = clean_env(XDG_CONFIG_HOME=str(key_home))
    return run(cmd, 60, cwd=cwd, env=env, no_leftovers=True)


def scoop_fault(
    mode: str, key_home: Path, cwd: Path
) -> tuple[subprocess.CompletedProcess[str], float]:
    """:func:`scoop_run`, and how long after the fault (the job's ``KILLED`` time) the run's last
    process ended."""
    r = scoop_run(mode, key_home, cwd)
    ended = time.time()
    killed = re.search(r"^KILLED ([\d.]+)$", r.stdout, re.M)
    assert killed, output(r)
    return r, ended - float(killed[1])


def evocluster_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("evocluster:")]


def pids(r: subprocess.CompletedProcess[str]) -> list[int]:
    """The processes of the run the job listed: the launcher, its launch process, the origin, the
    two workers and whatever evocluster started."""
    found = re.search(r"^PIDS ([\d ]+)$", r.stdout, re.M)
    assert found, output(r)
    return [int(p) for p in found[1].split()]


@pytest.mark.scoop
@pytest.mark.parametrize("mode", ["kill-launcher-busy", "kill-launcher-waiting"])
def test_a_killed_launcher_ends_the_origin_and_its_workers(
    mode: str, key_home: Path, tmp_path: Path
) -> None:
    # SCOOP alone: the launch process, the origin and the workers stay alive and idle for good
    r, took = scoop_fault(mode, key_home, tmp_path)
    assert r.returncode == -signal.SIGKILL, output(r)
    assert len(pids(r)) >= 5, output(r)  # launcher, launch process, origin, 2 workers
    assert took < WITHIN, f"the run's last process ended {took:.1f} s after the kill\n{output(r)}"
    (line,) = evocluster_lines(r.stderr)
    assert "SCOOP's launcher" in line and "is gone" in line and "origin ends" in line, line
    assert "END" not in r.stdout.splitlines()


@pytest.mark.scoop
def test_a_killed_launcher_first_asks_a_job_that_handles_sigterm_to_stop(
    key_home: Path, tmp_path: Path
) -> None:
    # an engine loop that checkpoints gets to write its checkpoint, as at a wall-time limit
    r, took = scoop_fault("kill-launcher-checkpointing", key_home, tmp_path)
    assert "STOPPED SIGTERM" in r.stdout.splitlines(), output(r)
    assert took < WITHIN, output(r)
    (line,) = evocluster_lines(r.stderr)  # nothing more from the exit guard: nobody to tell
    assert "is gone" in line and "the job is asked to stop (SIGTERM" in line, line


@pytest.mark.scoop
@pytest.mark.parametrize("mode", ["kill-origin", "worker-kills-origin"])
def test_a_killed_origin_ends_the_run_with_143_and_a_line(
    mode: str, key_home: Path, tmp_path: Path
) -> None:
    # SCOOP alone: the launcher exits 0, nothing said
    r, took = scoop_fault(mode, key_home, tmp_path)
    assert r.returncode == -signal.SIGTERM, output(r)
    assert took < WITHIN, output(r)
    (line,) = evocluster_lines(r.stderr)
    origin = pids(r)[2]
    assert (
        f"SCOOP origin on host {socket.gethostname()} (pid {origin}), which ran the job, was lost"
        in line
    ), line
    assert "exit code 143" in line and "SCOOP's launcher would exit 0" in line, line


@pytest.mark.scoop
def test_a_job_that_exits_75_ends_the_run_with_140(key_home: Path, tmp_path: Path) -> None:
    # SCOOP's launcher cannot exit 75; the exit guard used to end it with SIGTERM, as a failure
    r = scoop_run("exit75", key_home, tmp_path)
    assert r.returncode == -signal.SIGUSR2, output(r)  # a shell's $? is 140
    (line,) = evocluster_lines(r.stderr)
    assert "the job exited with code 75" in line and "exit code 140" in line, line


def _template(tmp_path: Path, python: str, job: str, args: str) -> Path:
    """slurm/scoop.sbatch with its EDIT lines set (python, job, the job's arguments)."""
    text = (ROOT / "slurm" / "scoop.sbatch").read_text()
    edits = {
        "PYTHON=python3\n": f"PYTHON={python}\n",
        "JOB=jobs/onemax.py\n": f"JOB={job}\n",
        "ARGS=()\n": f"ARGS=({args})\n",
    }
    for old, new in edits.items():
        assert old in text, f"slurm/scoop.sbatch no longer has the line {old!r}"
        text = text.replace(old, new)
    script = tmp_path / "scoop.sbatch"
    script.write_text(text)
    return script


@pytest.mark.scoop
def test_the_scoop_template_requeues_a_run_whose_job_exits_75(
    key_home: Path, tmp_path: Path
) -> None:
    # the batch script as SLURM runs it, with `scontrol` stubbed: no SLURM needed
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol.calls"
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IXUSR)
    script = _template(tmp_path, sys.executable, JOB, "exit75")
    env = {k: v for k, v in clean_env().items() if not k.startswith("SLURM_")}
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        XDG_CONFIG_HOME=str(key_home),
        SLURM_JOB_ID="4242",
        SLURM_NTASKS="3",
    )
    r = run(["bash", str(script)], 60, cwd=tmp_path, env=env, no_leftovers=True)
    assert r.returncode == 0, output(r)
    assert "the run checkpointed (exit code 75): requeueing job 4242" in r.stdout, output(r)
    assert calls.read_text().split() == ["requeue", "4242"], output(r)
