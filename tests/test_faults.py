"""Failures end the run quickly, with a non-zero exit code and a message a user can act on."""

from __future__ import annotations

import pytest
from helpers import TESTS, launcher, run

JOBS = TESTS / "jobs"


@pytest.mark.parametrize("how", ["kill", "exit"])
def test_worker_death_local_breaks_the_pool_with_a_message(how: str) -> None:
    proc = run(launcher("--backend", "local", "--workers", "2", str(JOBS / "crash.py"), how), 120)
    assert proc.returncode == 1, proc.stderr
    assert "BrokenPool" in proc.stderr
    assert "local worker" in proc.stderr and "was lost" in proc.stderr
    if how == "kill":
        assert "SIGKILL" in proc.stderr
    else:
        assert "exited with code 3" in proc.stderr
    assert "results:" not in proc.stdout


@pytest.mark.parametrize("how", ["kill", "exit"])
def test_worker_death_mpi_ends_the_job(how: str) -> None:
    proc = run(launcher(str(JOBS / "crash.py"), how, mpi=3), 120)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "results:" not in proc.stdout


@pytest.mark.parametrize("mpi", [None, 3])
def test_job_import_failing_on_workers_is_reported(mpi: int | None) -> None:
    args = [] if mpi else ["--backend", "local", "--workers", "2"]
    proc = run(launcher(*args, str(JOBS / "worker_import_fails.py"), mpi=mpi), 120)
    assert proc.returncode == 1, proc.stderr
    assert "could not import the job" in proc.stderr
    assert "licence server is not reachable" in proc.stderr
    assert ("worker rank" if mpi else "local worker") in proc.stderr


@pytest.mark.parametrize("mpi", [None, 3])
def test_failing_job_with_a_worker_stuck_in_an_evaluation_ends_now(mpi: int | None) -> None:
    args = [] if mpi else ["--backend", "local", "--workers", "2"]
    proc = run(launcher(*args, str(JOBS / "stuck_worker.py"), mpi=mpi), 120)  # not 600 s
    assert proc.returncode != 0, proc.stderr
    assert "the job gives up" in proc.stderr
