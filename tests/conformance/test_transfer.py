"""Payloads: messages over 2 GiB, and waiting that does not burn CPU."""

from __future__ import annotations

import json

import pytest
from helpers import FIXTURES, launch_on, run

JOBS = FIXTURES / "jobs"


@pytest.mark.slow
# each run holds several copies of 2 GiB in memory: never two at once (one xdist worker runs them)
@pytest.mark.xdist_group("2-gib-messages")
@pytest.mark.parametrize(
    "where",
    [
        "local",
        pytest.param("mpich-wheel", marks=pytest.mark.mpi),
        pytest.param("openmpi", marks=pytest.mark.mpi),
    ],
)
def test_message_larger_than_2_gib(where: str) -> None:
    job = str(JOBS / "big_message.py")
    proc = run(launch_on(where, 1, job), timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "big message ok" in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "config",
    [
        pytest.param("mpich-wheel-9", marks=pytest.mark.mpi),
        pytest.param("mpich-wheel-17", marks=pytest.mark.mpi),
        pytest.param("openmpi-9", marks=pytest.mark.mpi),
        pytest.param("openmpi-17", marks=pytest.mark.mpi),
        "local-8",
    ],
)
def test_waiting_ranks_sleep(config: str) -> None:
    """CPU time (not wall time) burned while waiting: a rank that spins burns a share of a core
    for the whole wait (about 4 CPU-s here for 2 s on 2 cores); a sleeping one almost nothing."""
    kind, n = config.rsplit("-", 1)
    job = [str(JOBS / "idle_cpu.py"), "2"]
    workers = int(n) if kind == "local" else int(n) - 1  # the MPI configurations count ranks
    proc = run(launch_on(kind, workers, *job), timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cpu = json.loads(proc.stdout.strip().splitlines()[-1])
    assert cpu["workers_idle"] < 0.4, cpu  # all workers together, 2 s idle
    assert cpu["master_idle"] < 0.2, cpu
    assert cpu["master_waiting"] < 0.3, cpu  # the master while workers evaluate for 2 s
