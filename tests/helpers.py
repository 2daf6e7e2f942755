"""Shared by the tests: run evocluster the way users do, as a subprocess with a timeout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
MPIEXEC = shutil.which("mpiexec")


def launcher(*args: str, mpi: int | None = None) -> list[str]:
    """The command line of ``[mpiexec -n N] python -m evocluster ARGS``."""
    cmd = [sys.executable, "-m", "evocluster", *args]
    if mpi is not None:
        assert MPIEXEC, "mpiexec not found: pip install 'evocluster[mpi]'"
        cmd = [MPIEXEC, "-n", str(mpi), *cmd]
    return cmd


def run(cmd: list[str], timeout: float = 300, **kw: object) -> subprocess.CompletedProcess[str]:
    """Run ``cmd``; a run that does not end within ``timeout`` fails the test (it hung)."""
    env = dict(os.environ)
    env.pop("EVOCLUSTER_BACKEND", None)
    env.update(kw.pop("env", {}) or {})  # type: ignore[call-overload]
    try:
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=env, **kw  # type: ignore[call-overload]
        )
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{' '.join(cmd)} did not end within {timeout} s (a hang)") from e
