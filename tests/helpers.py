"""Shared by the tests: run evocluster the way users do, as a subprocess with a timeout, in a
clean environment."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
JOBS = ROOT / "jobs"

#: Longest a launched run may take by default: past this it is treated as a hang, never as slow.
TIMEOUT = 120

MPIEXEC = shutil.which("mpiexec")

#: A second interpreter whose mpi4py is compiled against the system's Open MPI (``.ci/openmpi``
#: builds it), and that MPI's own launcher: the same tests on a system MPI, not on a wheel.
OPENMPI_PYTHON = ROOT / ".venv-openmpi" / "bin" / "python"
OPENMPI_MPIEXEC = shutil.which("mpiexec.openmpi")  # Debian's name; plain mpiexec is the wheel's
#: Root is refused and more ranks than cores are refused unless asked for (CI runs as root, and
#: 17 ranks share 2 cores); shared memory and loopback only, as on one node of a cluster.
OPENMPI_FLAGS = ["--allow-run-as-root", "--oversubscribe", "--mca", "btl", "self,vader"]

#: Variables that would change which backend a child chooses, or make it think it is an MPI rank.
_FOREIGN = ("EVOCLUSTER_", "PMI_", "PMIX_", "OMPI_", "HYDRA_", "MPI_LOCALNRANKS")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN)}
    env.update(extra)
    return env


def launcher(*args: str, mpi: int | None = None) -> list[str]:
    """The command line of ``[mpiexec -n MPI] python -m evocluster ARGS``."""
    cmd = [sys.executable, "-m", "evocluster", *args]
    if mpi is not None:
        cmd = [MPIEXEC or "mpiexec", "-n", str(mpi), *cmd]
    return cmd


def mpi_launcher(n: int, *args: str) -> list[str]:
    return launcher(*args, mpi=n)


def openmpi_launcher(n: int, *args: str) -> list[str]:
    """``mpiexec -n N python -m evocluster ARGS`` with the system's Open MPI (fails the test when
    that environment is missing under CI, skips it elsewhere: ``bash .ci/openmpi`` builds it)."""
    if OPENMPI_MPIEXEC is None or not OPENMPI_PYTHON.exists():
        why = "no system Open MPI environment: run `bash .ci/openmpi` to build .venv-openmpi"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    return [
        OPENMPI_MPIEXEC,
        *OPENMPI_FLAGS,
        "-n",
        str(n),
        str(OPENMPI_PYTHON),
        "-m",
        "evocluster",
        *args,
    ]


def mpi_command(flavour: str, n: int, *args: str) -> list[str]:
    """``mpiexec -n N python -m evocluster ARGS`` with the MPICH wheel (``"mpich-wheel"``) or the
    system's Open MPI (``"openmpi"``)."""
    if flavour == "openmpi":
        return openmpi_launcher(n, *args)
    if MPIEXEC is None:
        pytest.skip("mpiexec is not on PATH")
    return launcher(*args, mpi=n)


def launch_on(where: str, workers: int, *args: str) -> list[str]:
    """The launcher's command for ``workers`` workers: a local pool (``"local"``), or one MPI rank
    more with the MPICH wheel (``"mpich-wheel"``) or the system's Open MPI (``"openmpi"``)."""
    if where == "local":
        return launcher("--backend", "local", "--workers", str(workers), *args)
    return mpi_command(where, workers + 1, *args)


def session_processes(sid: int) -> list[int]:
    """Processes of session ``sid`` still alive (zombies excluded)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rpartition(")")[2].split()
            if int(fields[3]) == sid and fields[0] != "Z":
                found.append(int(entry))
    return found


def run(
    cmd: list[str],
    timeout: float = TIMEOUT,
    *,
    cwd: os.PathLike[str] | str | None = None,
    env: dict[str, str] | None = None,
    no_leftovers: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` to its end; fail the test (after killing its process group) if it hangs, and
    with ``no_leftovers`` if any process of its session outlives it by 10 s."""
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=clean_env() if env is None else env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # one process group: mpiexec, its proxies and every rank
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
        pytest.fail(f"{cmd} did not end within {timeout} s\n--- stdout\n{out}\n--- stderr\n{err}")
    result = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    deadline = time.monotonic() + 10
    while no_leftovers and (left := session_processes(proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    if no_leftovers and (left := session_processes(proc.pid)):
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        pytest.fail(f"{cmd} left processes {left} behind\n{output(result)}")
    return result


def output(r: subprocess.CompletedProcess[str]) -> str:
    """What a run printed, for assertion messages."""
    return f"exit code {r.returncode}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}"
