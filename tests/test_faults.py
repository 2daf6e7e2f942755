"""Failures end the run quickly, with a non-zero exit code and a message a user can act on."""

from __future__ import annotations

import pytest
from helpers import TESTS, launch_on, launcher, mpi_command, run

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


@pytest.mark.parametrize("flavour", ["mpich-wheel", "openmpi"])
@pytest.mark.parametrize("how", ["kill", "exit"])
def test_worker_death_mpi_ends_the_job(how: str, flavour: str) -> None:
    proc = run(mpi_command(flavour, 3, str(JOBS / "crash.py"), how), 120)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "results:" not in proc.stdout


@pytest.mark.parametrize("mpi", ["local", "mpich-wheel", "openmpi"])
def test_job_import_failing_on_workers_is_reported(mpi: str) -> None:
    job = str(JOBS / "worker_import_fails.py")
    local = mpi == "local"
    proc = run(launch_on(mpi, 2, job), 120)
    assert proc.returncode == 1, proc.stderr
    assert "could not import the job" in proc.stderr
    assert "licence server is not reachable" in proc.stderr
    assert ("local worker" if local else "worker rank") in proc.stderr


@pytest.mark.parametrize("mpi", ["local", "mpich-wheel", "openmpi"])
def test_failing_job_with_a_worker_stuck_in_an_evaluation_ends_now(mpi: str) -> None:
    job = str(JOBS / "stuck_worker.py")
    proc = run(launch_on(mpi, 2, job), 120)  # not 600 s
    assert proc.returncode != 0, proc.stderr
    assert "the job gives up" in proc.stderr
