"""Failures end the run quickly, with a non-zero exit code and a message a user can act on."""

from __future__ import annotations

import re
import time

import pytest
from helpers import FIXTURES, launch_on, launcher, mpi_command, output, run

JOBS = FIXTURES / "jobs"


def test_worker_death_local_breaks_the_pool_with_a_message() -> None:
    proc = run(
        launcher("--backend", "local", "--workers", "2", str(JOBS / "crash.py"), "kill"), 120
    )
    assert proc.returncode == 1, proc.stderr
    assert "BrokenPool" in proc.stderr
    assert "local worker" in proc.stderr and "was lost" in proc.stderr
    assert "SIGKILL" in proc.stderr
    assert "results:" not in proc.stdout


@pytest.mark.parametrize(
    "where",
    [
        "local",
        pytest.param("mpich-wheel", marks=pytest.mark.mpi),
        pytest.param("openmpi", marks=pytest.mark.mpi),
    ],
)
def test_os_exit_in_a_fitness_fails_that_evaluation_not_the_worker(where: str) -> None:
    """``os._exit(3)`` in a fitness used to end its worker (under MPI, the whole job): it is
    now that evaluation's failure, named, and the job gets it as the exception it raises."""
    proc = run(launch_on(where, 2, str(JOBS / "crash.py"), "exit"), 120)
    assert proc.returncode == 1, output(proc)
    assert "EvaluationCrashed: the fitness called os._exit(3)" in proc.stderr, output(proc)
    assert "BrokenPool" not in proc.stderr and "BAD TERMINATION" not in proc.stderr
    assert "results:" not in proc.stdout


@pytest.mark.mpi
@pytest.mark.parametrize("flavour", ["mpich-wheel", "openmpi"])
@pytest.mark.parametrize("how", ["kill"])
def test_worker_death_mpi_ends_the_job(how: str, flavour: str) -> None:
    proc = run(mpi_command(flavour, 3, str(JOBS / "crash.py"), how), 120)
    assert proc.returncode != 0, output(proc)
    # the run had started (the master had its 2 workers) and a worker rank died in the fitness:
    # not some start-up crash
    assert "STARTED 2 workers" in proc.stdout, output(proc)
    dying = re.search(r"^DYING rank (\d+) pid (\d+)$", proc.stderr, re.M)
    assert dying and dying[1] in ("1", "2"), output(proc)
    rank = dying[1]
    assert "results:" not in proc.stdout, output(proc)
    # the launcher reports the death; Open MPI's names the lost rank
    printed = proc.stdout + proc.stderr
    if flavour == "openmpi":
        if how == "kill":
            named = re.search(
                rf"process rank {rank} with PID \d+ on node \S+ exited on signal 9", printed
            )
        else:
            named = re.search(rf"Process name: \[\[\d+,\d+\],{rank}\]\s+Exit code:\s+3", printed)
        assert named, output(proc)
    else:
        # MPICH's hydra names no rank: it kills every other rank at once and reports the first
        # process it finds dead by PID, often one it killed itself (the DYING line above is the
        # evidence of who died); after os._exit(3) it may instead pass the code 3 on, silently
        hydra = "BAD TERMINATION OF ONE OF YOUR APPLICATION PROCESSES" in printed
        if how == "kill" or proc.returncode != 3:
            assert hydra and "Killed (signal 9)" in printed, output(proc)
        # the master names the rank and the evaluation (its death watch) when it is first: a
        # worker killed outright cannot linger as one dying of a fault does (tests/test_policies
        # requires that line every time), so hydra's SIGKILL may win here: if said, right
        said = re.search(
            rf"^evocluster: MPI worker rank {rank} of 3 on host \S+ \(pid \d+\) ended without a "
            r"word .* while evaluating "
            r"(?:one of )?items? (\d+)(?:-(\d+))? of __main__\.fitness",
            proc.stderr,
            re.M,
        )
        if "ended without a word" in proc.stderr:
            assert said and int(said[1]) <= 5 <= int(said[2] or said[1]), output(proc)


@pytest.mark.parametrize(
    "mpi",
    [
        "local",
        pytest.param("mpich-wheel", marks=pytest.mark.mpi),
        pytest.param("openmpi", marks=pytest.mark.mpi),
    ],
)
def test_job_import_failing_on_workers_is_reported(mpi: str) -> None:
    job = str(JOBS / "worker_import_fails.py")
    local = mpi == "local"
    proc = run(launch_on(mpi, 2, job), 120)
    assert proc.returncode == 1, proc.stderr
    assert "could not import the job" in proc.stderr
    assert "licence server is not reachable" in proc.stderr
    assert ("local worker" if local else "worker rank") in proc.stderr


@pytest.mark.parametrize(
    "mpi",
    [
        "local",
        pytest.param("mpich-wheel", marks=pytest.mark.mpi),
        pytest.param("openmpi", marks=pytest.mark.mpi),
    ],
)
def test_failing_job_with_a_worker_stuck_in_an_evaluation_ends_now(mpi: str) -> None:
    job = str(JOBS / "stuck_worker.py")
    started = time.monotonic()
    # the job raises once the worker has begun its 600 s evaluation (it waits for the evidence)
    proc = run(launch_on(mpi, 2, job), 120)
    assert proc.returncode != 0, output(proc)
    assert "the job gives up" in proc.stderr, output(proc)
    assert time.monotonic() - started < 60, output(proc)  # ended now, not after the evaluation


@pytest.mark.mpi
@pytest.mark.parametrize("flavour", ["mpich-wheel", "openmpi"])
def test_worker_rank_alive_without_its_serve_loop_the_master_ends_the_job(flavour: str) -> None:
    """A worker's own loop fails (not its fitness) and its process lives on in MPI_Finalize: the
    MPI launcher, which ends a job when a rank dies, never ends this one.  The master said "the
    MPI launcher ends the job"; seconds later it ends it itself, and says so (f035c23 ran until
    killed, as with ``--eval-timeout inf``)."""
    proc = run(mpi_command(flavour, 3, str(JOBS / "worker_loop_fails.py")), 90, no_leftovers=True)
    # (backends/mpi.py's LOST_WORKER_CODE and LAUNCHER_GRACE: importing it here would start MPI)
    assert proc.returncode == 1, output(proc)
    assert "STARTED 2 workers" in proc.stdout and "results:" not in proc.stdout, output(proc)
    breaking = re.search(r"^BREAKING rank (\d+) pid (\d+)$", proc.stderr, re.M)
    assert breaking, output(proc)
    ours = [line for line in proc.stderr.splitlines() if line.startswith("evocluster:")]
    assert len(ours) == 2, output(proc)
    died = rf"evocluster: MPI worker rank {breaking[1]} of 3 on host \S+ \(pid {breaking[2]}\) "
    assert re.match(died + r"ended without a word .*; the MPI launcher ends the job", ours[0]), (
        output(proc)
    )
    assert ours[1] == (
        "evocluster: the MPI launcher has not ended the job 5 s after MPI "
        f"worker rank {breaking[1]} of 3 ended: evocluster ends it (MPI_Abort, exit code 1)"
    ), output(proc)
