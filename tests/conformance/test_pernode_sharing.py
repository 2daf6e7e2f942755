"""One copy per host of a large shared numpy array (issue 23), with real processes.

``evocluster.share`` of a 400 MB array held 3,200 MB over 8 local workers (summed PSS) at
144e27f: each worker loaded its own copy, sent whole to each.  Now the master writes it once
into ``/dev/shm`` and the workers on its host map it read-only: 8 workers (local, and MPI on one
host) hold about one copy, the master sends only references, the values are the same and a
worker that writes to the array gets an error.  And the segment is gone after the run, however
it ended: normally, by a fitness's exception, by SIGINT or SIGTERM to the master, by a killed
worker; and a SIGKILLed master's goes with the next run
(``tests/fixtures/jobs/pernode_share.py``).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    FIXTURES,
    SHM,
    clean_env,
    launcher,
    output,
    run,
    run_timeout,
    started,
    wait_for,
)

from evocluster import _sharing as sharing

JOB = str(FIXTURES / "jobs" / "pernode_share.py")
MB = 50
WORKERS = 8
CONFIGS = {
    "local": (["--backend", "local", "--workers", str(WORKERS)], None),
    "mpi": ([], WORKERS + 1),
    "scoop": (None, None),  # python -m scoop -n 9: the origin and 8 workers
}
PARAMS = [
    pytest.param(c, marks=[getattr(pytest.mark, c)] if c in ("mpi", "scoop") else [])
    for c in CONFIGS
]


def command(config: str, where: Path, mode: str) -> list[str]:
    args, ranks = CONFIGS[config]
    if args is None:
        scoop = [sys.executable, "-m", "scoop", "-n", str(WORKERS + 1)]
        return [*scoop, JOB, str(where), mode, str(MB)]
    return launcher(*args, JOB, str(where), mode, str(MB), mpi=ranks)


def env_of(where: Path) -> dict[str, str]:
    """The run's environment: SCOOP's workers need the key their origin makes, in a directory
    of the test's own."""
    return clean_env(XDG_CONFIG_HOME=str(where / "xdg"))


def segments_of(where: Path) -> list[str]:
    """The ``/dev/shm`` segments of the run's master (named after its pid) still there."""
    pid = (where / "pid").read_text()
    return [n for n in os.listdir(SHM) if n.startswith(f"{sharing.SEGMENT_PREFIX}{pid}-")]


def segments_left(where: Path) -> list[str]:
    """Those still there 5 s after the run (a master killed outright: its cleaner's work)."""
    deadline = time.monotonic() + 5
    while segments_of(where) and time.monotonic() < deadline:
        time.sleep(0.05)
    return segments_of(where)


@pytest.mark.parametrize("config", PARAMS)
def test_workers_on_one_host_hold_one_copy_and_see_the_same_array(
    config: str, tmp_path: Path
) -> None:
    r = run(command(config, tmp_path, "normal"), 240, env=env_of(tmp_path))
    assert r.returncode == 0, output(r)
    got: dict[str, Any] = json.loads((tmp_path / "out.json").read_text())
    size = got["nbytes"]
    assert got["n_workers"] == WORKERS and len(got["pids"]) == WORKERS, got["pids"]
    for total, dtype, shape, writeable, error in got["seen"]:
        assert (total, dtype, shape) == (got["expected_sum"], "float64", [size // 8])
        assert not writeable and "read-only" in error, error
    # 144e27f: 8 copies (8 x 52 MB summed PSS); now one, plus a little per worker
    assert got["pss_bytes"] <= 1.2 * size + WORKERS * 2**20, got["pss_bytes"] / size
    # only references crossed (144e27f: the array once to each worker, 8 x 50 MB)
    assert got["bytes_sent"] < 0.05 * size, got["bytes_sent"]
    assert not segments_of(tmp_path)


@pytest.mark.parametrize("config", PARAMS)
def test_a_failing_fitness_leaves_no_segment(config: str, tmp_path: Path) -> None:
    r = run(command(config, tmp_path, "raise"), 240, env=env_of(tmp_path))
    # (SCOOP's launcher prints the origin's stderr on its stdout)
    assert r.returncode != 0, output(r)
    assert "the fitness failed on purpose" in r.stdout + r.stderr, output(r)
    assert not segments_of(tmp_path)


def sigint_to_the_master(where: Path, launcher_pid: int) -> None:
    os.kill(int((where / "pid").read_text()), signal.SIGINT)


def sigterm_to_the_master(where: Path, launcher_pid: int) -> None:
    os.kill(int((where / "pid").read_text()), signal.SIGTERM)


def kill_the_worker(where: Path, launcher_pid: int) -> None:
    worker = next(int(p.name[7:]) for p in where.iterdir() if p.name.startswith("worker-"))
    os.kill(worker, signal.SIGKILL)


@pytest.mark.parametrize(
    "act", [sigint_to_the_master, sigterm_to_the_master, kill_the_worker], ids=lambda f: f.__name__
)
@pytest.mark.parametrize("config", PARAMS)
def test_a_run_ended_from_outside_leaves_no_segment(
    config: str, act: Callable[[Path, int], None], tmp_path: Path
) -> None:
    with started(command(config, tmp_path, "wait"), env=env_of(tmp_path)) as proc:
        wait_for(tmp_path / "master", proc, "no worker mapped the shared array")
        assert segments_of(tmp_path), "the run wrote no segment"
        act(tmp_path, proc.pid)
        out, err = proc.communicate(timeout=run_timeout(120))
    printed = f"exit code {proc.returncode}\n--- stdout\n{out}\n--- stderr\n{err}"
    assert proc.returncode != 0, printed
    # MPI, a killed worker: the launcher kills every rank, the master too (SIGKILL), before or
    # after it has said so and removed its segments itself; if before, its cleaner does
    assert not segments_left(tmp_path), printed


def test_a_killed_masters_segments_go_with_it(tmp_path: Path) -> None:
    """A master killed outright (SIGKILL) cannot unlink its segments: its cleaner process does."""
    with started(command("local", tmp_path, "wait")) as proc:
        wait_for(tmp_path / "master", proc, "no worker mapped the shared array")
        assert segments_of(tmp_path), "the run wrote no segment"
        os.kill(int((tmp_path / "pid").read_text()), signal.SIGKILL)
        proc.wait(timeout=run_timeout(30))
    assert not segments_left(tmp_path)


def test_shared_memory_turned_off_gives_each_worker_its_own_copy(tmp_path: Path) -> None:
    """``EVOCLUSTER_SHARED_MEMORY=0`` (a ``/dev/shm`` too small for the data): the array goes
    whole to each worker, writeable, and no segment is written."""
    env = clean_env(EVOCLUSTER_SHARED_MEMORY="0")
    r = run(command("local", tmp_path, "normal"), 240, env=env)
    assert r.returncode == 0, output(r)
    got: dict[str, Any] = json.loads((tmp_path / "out.json").read_text())
    size = got["nbytes"]
    for total, _, _, writeable, error in got["seen"]:
        assert total == got["expected_sum"] and writeable and not error, got["seen"]
    assert all(not segments for _, segments in got["places"].values()), got["places"]
    assert got["bytes_sent"] >= WORKERS * size, got["bytes_sent"]
