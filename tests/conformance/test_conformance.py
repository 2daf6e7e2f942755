"""Every behaviour of ``conformance_job.py`` on every backend, each launched as users launch it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from conformance_job import CHECKS
from helpers import FIXTURES, clean_env, declare, launcher, openmpi_launcher, run

JOB = str(FIXTURES / "conformance_job.py")
SCOOP = [sys.executable, "-m", "scoop"]

#: backend configuration -> (launch arguments, MPI ranks, backend the job must see, workers);
#: launch arguments that start with the interpreter are a whole command that names the job.
CONFIGS: dict[str, tuple[list[str], int | None, str, int]] = {
    "serial": (["--backend", "serial"], None, "serial", 1),
    "local-2": (["--backend", "local", "--workers", "2"], None, "local", 2),
    "local-auto-3": (["--workers", "3"], None, "local", 3),
    "mpi-n1": ([], 1, "serial", 1),
    "mpi-n2": ([], 2, "mpi", 1),
    "mpi-n5": ([], 5, "mpi", 4),
    "mpi-n17": ([], 17, "mpi", 16),
    # the system's Open MPI, mpi4py compiled against it (not the MPICH wheel above)
    "openmpi-n2": ([], 2, "mpi", 1),
    "openmpi-n5": ([], 5, "mpi", 4),
    "openmpi-n17": ([], 17, "mpi", 16),
    "scoop-n2": ([*SCOOP, "-n", "2", JOB], None, "scoop", 1),
    "scoop-n4": ([*SCOOP, "-n", "4", JOB], None, "scoop", 3),
    "scoop-hostfile": (
        [*SCOOP, "--hostfile", str(FIXTURES / "jobs" / "scoop_hostfile"), JOB],
        None,
        "scoop",
        2,
    ),
}

_outcomes: dict[str, dict[str, Any]] = {}

#: Each configuration's job runs once per pytest process and every check reads its outcome: all of
#: a configuration's tests go to one xdist worker (``--dist loadgroup``).  Every run takes about
#: 5 s or more, paid by whichever test comes first: all slow.  Those that launch mpiexec or SCOOP
#: are marked ``mpi``, ``scoop``.
MPI_CONFIGS = ["mpi-n1", "mpi-n2", "mpi-n5", "mpi-n17", "openmpi-n2", "openmpi-n5", "openmpi-n17"]
SCOOP_CONFIGS = ["scoop-n2", "scoop-n4", "scoop-hostfile"]
CONFIG_PARAMS = declare(
    CONFIGS,
    mpi=MPI_CONFIGS,
    scoop=SCOOP_CONFIGS,
    marks=lambda c: [pytest.mark.xdist_group(f"conformance-{c}"), pytest.mark.slow],
)


def _outcome(config: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if config not in _outcomes:
        args, ranks, _, _ = CONFIGS[config]
        out = Path(tmp_path_factory.mktemp(config)) / "result.json"
        if args[:1] == [sys.executable]:
            cmd = [*args, "--json", str(out)]
        elif config.startswith("openmpi-"):
            assert ranks is not None
            cmd = openmpi_launcher(ranks, JOB, "--json", str(out))
        else:
            cmd = launcher(*args, JOB, "--json", str(out), mpi=ranks)
        # a key directory of its own (SCOOP runs sign their payloads): not the real home
        proc = run(cmd, timeout=240, env=clean_env(XDG_CONFIG_HOME=str(out.parent)))
        outcome: dict[str, Any] = {"_proc": proc}
        if out.exists():
            outcome.update(json.loads(out.read_text()))
        _outcomes[config] = outcome
    return _outcomes[config]


@pytest.mark.parametrize("config", CONFIG_PARAMS)
def test_run_ends_cleanly(config: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    outcome = _outcome(config, tmp_path_factory)
    proc = outcome["_proc"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, ranks, backend, workers = CONFIGS[config]
    assert outcome["_backend"] == backend
    assert int(outcome["_workers"]) == workers
    if ranks == 1:
        warning = [line for line in proc.stderr.splitlines() if "1 rank" in line]
        assert len(warning) == 1 and "serial" in warning[0], proc.stderr
    libraries = outcome["_mpi_libraries"]
    if config.startswith("openmpi-"):
        assert len(libraries) == 1 and libraries[0].startswith("Open MPI"), libraries
    elif config.startswith("mpi-"):
        assert len(libraries) == 1 and libraries[0].startswith("MPICH"), libraries
    else:  # no MPI at all: nothing loaded it
        assert libraries == [""], libraries


@pytest.mark.parametrize("check", list(CHECKS))
@pytest.mark.parametrize("config", CONFIG_PARAMS)
def test_behaviour(config: str, check: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    outcome = _outcome(config, tmp_path_factory)
    if check not in outcome:
        proc = outcome["_proc"]
        pytest.fail(f"the conformance job did not report (exit {proc.returncode}):\n{proc.stderr}")
    assert outcome[check] == "ok", outcome[check]
