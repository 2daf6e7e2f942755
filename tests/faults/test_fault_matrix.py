"""The fault matrix: each backend x each injected fault x each ``on_error`` policy.

One launch per backend runs every case (tests/fixtures/jobs/fault_matrix.py): the run must end
normally (the job catches what "raise" raises), within its time limit, and for each case:

* raise: the map raises the fault's exception at the first injected item, every result before it
  is correct and in order, and every recorded failure is an injected one;
* penalize: all N results, the injected items with the penalty, every other one correct; the
  failures recorded are exactly the injected items, once each;
* retry:2 (with a penalty): the same results; each injected item failed three times (two retries,
  then penalized), and no healthy item failed.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest
from helpers import FIXTURES, launcher, mpi_command, output, run

sys.path.insert(0, str(FIXTURES / "jobs"))
import fault_matrix  # the job's own table of faults and its check (after the path is set)

JOB = str(FIXTURES / "jobs" / "fault_matrix.py")
SCOOP = [sys.executable, "-m", "scoop"]

BACKENDS = {
    "serial": (launcher("--backend", "serial", JOB), None),
    "local": (launcher("--backend", "local", "--workers", "2", JOB), None),
    "mpi": (None, pytest.mark.mpi),  # built in the test: needs mpiexec
    "openmpi": (None, pytest.mark.mpi),
    "scoop": ([*SCOOP, "-n", "3", JOB], pytest.mark.scoop),
}


def _command(backend: str) -> list[str]:
    if backend == "mpi":
        return mpi_command("mpich-wheel", 5, JOB)
    if backend == "openmpi":
        return mpi_command("openmpi", 5, JOB)
    cmd = BACKENDS[backend][0]
    assert cmd is not None
    return cmd


_runs: dict[str, tuple[Any, dict[tuple[str, str], dict[str, Any]]]] = {}


def _matrix(backend: str) -> tuple[Any, dict[tuple[str, str], dict[str, Any]]]:
    """One launch per backend, shared by its cases."""
    if backend not in _runs:
        r = run(_command(backend), timeout=240, no_leftovers=True)
        _runs[backend] = (r, fault_matrix.cases(r.stdout))
    return _runs[backend]


PARAMS = [
    pytest.param(b, marks=[m, pytest.mark.slow] if m else [pytest.mark.slow], id=b)
    for b, (_, m) in BACKENDS.items()
]


@pytest.mark.parametrize("backend", PARAMS)
@pytest.mark.timeout(300)
def test_every_fault_under_every_policy(backend: str) -> None:
    r, cases = _matrix(backend)
    assert r.returncode == 0 and "MATRIX DONE" in r.stdout, output(r)
    problems = fault_matrix.problems(cases)
    assert not problems, "\n".join(problems) + "\n" + output(r)
