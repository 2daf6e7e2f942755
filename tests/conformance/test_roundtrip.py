"""A fitness that returns instances of the job's own classes: they come home as the master's.

``tests/fixtures/jobs/roundtrip_classes.py`` checks, in the job, each kind of class (module level,
DEAP
creator, under the main guard, nested in a function, closed over by a closure; strict's refusal; an
unpicklable result) on every way of running it: serial, a local pool through the launcher, plain
``python job.py``, ``mpiexec -n 3`` with the MPICH wheel and with the system's Open MPI, and
``python -m scoop -n 3``.  Each configuration runs once; each kind is asserted on its own, so a
failure names the kind and the configuration.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import FIXTURES, clean_env, declare, launcher, mpi_command, output, run

JOB = str(FIXTURES / "jobs" / "roundtrip_classes.py")

KINDS = [
    "dataclass",
    "namedtuple",
    "plain class",
    "enum",
    "creator individual",
    "creator fitness",
    "class under the main guard",
    "nested dataclass",
    "nested class keeps its state",
    "nested enum",
    "closure",
    "strict nested",
    "unpicklable result",
]

#: configuration -> the backend and worker count the job must report
CONFIGS = {
    "serial": "serial 1",
    "local": "local 2",
    "plain python": "local 2",
    "mpich-wheel": "mpi 2",
    "openmpi": "mpi 2",
    "scoop": "scoop 2",
}

_runs: dict[str, tuple[Any, dict[str, Any] | None]] = {}

#: one run per configuration and pytest process: a configuration's tests go to one xdist worker
#: (marked ``mpi``/``scoop`` if it launches mpiexec/SCOOP)
CONFIG_PARAMS = declare(
    CONFIGS,
    mpi=["mpich-wheel", "openmpi"],
    scoop=["scoop"],
    marks=lambda c: [pytest.mark.xdist_group(f"roundtrip-{c}")],
)


def command(config: str, out: Path) -> list[str]:
    if config == "serial":
        return launcher("--backend", "serial", JOB, str(out))
    if config == "local":
        return launcher("--backend", "local", "--workers", "2", JOB, str(out))
    if config == "plain python":  # no launcher: evocluster.map starts a local pool itself
        return [sys.executable, JOB, str(out)]
    if config == "scoop":
        return [sys.executable, "-m", "scoop", "-n", "3", JOB, str(out)]
    return mpi_command(config, 3, JOB, str(out))


def outcome(config: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The job's verdicts under ``config`` (run once per session)."""
    if config not in _runs:
        where = tmp_path_factory.mktemp(f"roundtrip-{config.replace(' ', '-')}")
        out = where / "out.json"
        cmd = command(config, out)
        env = clean_env()
        if config == "plain python":
            env["EVOCLUSTER_WORKERS"] = "2"
        if config == "scoop":  # its key in a private XDG_CONFIG_HOME, not in the real home (nor
            env["XDG_CONFIG_HOME"] = str(where / "xdg")  # in the cwd: evocluster/ would shadow)
        r = run(cmd, timeout=120, cwd=where, env=env, no_leftovers=True)
        _runs[config] = (r, json.loads(out.read_text()) if out.exists() else None)
    r, verdicts = _runs[config]
    assert r.returncode == 0 and verdicts is not None, output(r)
    assert verdicts["backend"]["detail"] == CONFIGS[config], verdicts["backend"]
    return verdicts


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("config", CONFIG_PARAMS)
def test_a_result_comes_home_as_the_masters_class(
    config: str, kind: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    verdict = outcome(config, tmp_path_factory)[kind]
    assert verdict["ok"], f"{kind} under {config}: {verdict['detail']}"


@pytest.mark.xdist_group("roundtrip-serial")
def test_the_job_checks_every_kind(tmp_path_factory: pytest.TempPathFactory) -> None:
    verdicts = outcome("serial", tmp_path_factory)
    assert sorted(k for k in verdicts if k != "backend") == sorted(KINDS)
