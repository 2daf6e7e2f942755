"""Shared by the tests: run evocluster the way users do, as a subprocess with a timeout, in a
clean environment, and leave nothing of it behind.

* Every run gets a timeout that ends before the test's own pytest timeout (``run`` caps it at the
  test's remaining time less ``MARGIN``), so ``run`` always kills a hung run itself; its
  ``finally`` kills the run's whole session even when pytest-timeout interrupts the test.
* Every session ``run`` starts is recorded (``SESSIONS_ENV``), with when it ran; ``conftest.py``
  checks at the end of the test session that none of their processes is alive, and that none of
  them left an MPI library's shared memory in ``/dev/shm``.
* Every process a test starts begins with the signals it relies on at their defaults
  (``default_signals``), whatever the test process inherited: under ``nohup`` SIGHUP is ignored,
  in a script's background job (``bash .ci/run &``) SIGINT, and a run would inherit that.
* A missing prerequisite (``mpiexec``, the system Open MPI environment, SLURM) goes through
  ``prerequisite``: a skip with the reason on a developer's machine, a failure under CI.
* A test that launches ``mpiexec``/``srun``/SCOOP must carry the ``mpi``/``slurm``/``scoop``
  marker, so that ``-m "not mpi"`` never launches it: ``run`` fails an unmarked one.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"  # the jobs and modules the tests launch
JOBS = ROOT / "jobs"

#: Longest a launched run may take by default: past this it is treated as a hang, never as slow.
TIMEOUT = 120
#: Seconds kept between a run's own timeout and the test's pytest timeout: killing the run's
#: processes and collecting what it printed fit in it, so a hang is reported (and its processes
#: killed) by ``run``, never cut short by pytest-timeout with ranks left running.
MARGIN = 20

MPIEXEC = shutil.which("mpiexec")

#: A second interpreter whose mpi4py is compiled against the system's Open MPI (``.ci/openmpi``
#: builds it), and that MPI's own launcher: the same tests on a system MPI, not on a wheel.
OPENMPI_PYTHON = ROOT / ".venv-openmpi" / "bin" / "python"
OPENMPI_MPIEXEC = shutil.which("mpiexec.openmpi")  # Debian's name; plain mpiexec is the wheel's
#: Root is refused and more ranks than cores are refused unless asked for (CI runs as root, and
#: 17 ranks share 2 cores); shared memory and loopback only, as on one node of a cluster.
OPENMPI_FLAGS = ["--allow-run-as-root", "--oversubscribe", "--mca", "btl", "self,vader"]

#: Where ``run`` records the session id of every run it starts, one file per pytest process
#: (xdist workers included); ``conftest.py`` sets it up and checks the sessions at the end.
SESSIONS_ENV = "PYTEST_EVOCLUSTER_SESSIONS"

#: The signals the tests send to the processes they start (or rely on at their defaults there):
#: each begins every such process at its default disposition (``default_signals``).  An ignored
#: signal stays ignored across fork and exec, and a test process may have inherited one: under
#: ``nohup`` (over ssh) SIGHUP, in a script's background job (``bash .ci/run &``) SIGINT and
#: SIGQUIT.  Runs then ignored what their tests sent them, and the tests waited 60-120 s and
#: failed.
DEFAULT_SIGNALS = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)

#: /dev/shm entries of the MPI libraries (MPICH's ``mpich_shm_*`` and ``mpich_vci_*``, Open
#: MPI 4's ``vader_segment.*``, 5's ``sm_segment.*``) and evocluster's own (a master's copy of a
#: large shared object, ``evocluster-shared-*``), which a run must not leave behind.
SHM = "/dev/shm"
SHM_PREFIXES = ("mpich_shm_", "mpich_vci_", "vader_segment.", "sm_segment.", "evocluster-shared-")

#: Variables that would change which backend a child chooses, or make it think it is an MPI rank.
_FOREIGN = ("EVOCLUSTER_", "PMI_", "PMIX_", "OMPI_", "HYDRA_", "MPI_LOCALNRANKS", SESSIONS_ENV)

#: Set by ``conftest.py`` around each test: the test item, and when its pytest timeout fires
#: (``time.monotonic()``; None without a timeout).
current_test: pytest.Item | None = None
test_deadline: float | None = None


# ---------------------------------------------------------------------------- prerequisites
def under_ci() -> bool:
    """Whether this is a CI run (``CI`` set and not empty/``0``/``false``): ``.ci/run`` sets it."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def prerequisite(why: str) -> NoReturn:
    """A prerequisite of the test is missing: skip it with ``why`` on a developer's machine, fail
    it under CI, where every prerequisite must be there (a skip would hide a lost test)."""
    if under_ci():
        pytest.fail(f"{why} (a failure under CI, a skip elsewhere)", pytrace=False)
    pytest.skip(why)


def require_mpiexec() -> str:
    """The MPICH wheel's ``mpiexec`` (``pip install -e '.[mpi]'`` brings it)."""
    if MPIEXEC is None:
        prerequisite("mpiexec is not on PATH: pip install -e '.[mpi,test]' (the MPICH wheel)")
    return MPIEXEC


def require_openmpi() -> str:
    """The system's Open MPI launcher, with ``.venv-openmpi`` (``bash .ci/openmpi`` builds it)."""
    if OPENMPI_MPIEXEC is None or not OPENMPI_PYTHON.exists():
        prerequisite(
            "no system Open MPI environment: run `bash .ci/openmpi` to build .venv-openmpi"
        )
    return OPENMPI_MPIEXEC


def require_slurm() -> str:
    """SLURM's ``sbatch`` (and with it ``srun``/``squeue``) on PATH."""
    found = shutil.which("sbatch")
    if found is None:
        prerequisite("SLURM is not available here: no sbatch on PATH")
    return found


def require_module(name: str) -> ModuleType:
    """Import ``name``, a dependency of the ``test`` extra, under the same policy."""
    try:
        with warnings.catch_warnings():  # as pytest.importorskip: its import-time warnings are
            warnings.simplefilter("ignore")  # the module's business (cma's about matplotlib)
            return importlib.import_module(name)
    except ImportError as e:
        prerequisite(f"{name} cannot be imported ({e}): pip install -e '.[test]'")


# ---------------------------------------------------------------------------- commands
def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN)}
    env.update(extra)
    return env


def launcher(*args: str, mpi: int | None = None) -> list[str]:
    """The command line of ``[mpiexec -n MPI] python -m evocluster ARGS`` (the MPICH wheel's)."""
    cmd = [sys.executable, "-m", "evocluster", *args]
    if mpi is not None:
        cmd = [require_mpiexec(), "-n", str(mpi), *cmd]
    return cmd


def mpi_launcher(n: int, *args: str) -> list[str]:
    return launcher(*args, mpi=n)


def openmpi_launcher(n: int, *args: str) -> list[str]:
    """``mpiexec -n N python -m evocluster ARGS`` with the system's Open MPI (see
    ``require_openmpi``)."""
    return [
        require_openmpi(),
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
    if flavour != "mpich-wheel":
        raise ValueError(f"unknown MPI flavour {flavour!r}")
    return launcher(*args, mpi=n)


def launch_on(where: str, workers: int, *args: str) -> list[str]:
    """The launcher's command for ``workers`` workers: a local pool (``"local"``), or one MPI rank
    more with the MPICH wheel (``"mpich-wheel"``) or the system's Open MPI (``"openmpi"``)."""
    if where == "local":
        return launcher("--backend", "local", "--workers", str(workers), *args)
    return mpi_command(where, workers + 1, *args)


def declare(
    values: Iterable[str], *, mpi: Iterable[str] = (), scoop: Iterable[str] = (), marks: Any = ()
) -> list[Any]:
    """``values`` as pytest parameters, those named in ``mpi``/``scoop`` marked as launching
    mpiexec/SCOOP (conftest.py refuses a test whose parameters name such a configuration without
    its marker; a marker is declared, never inferred), each also with ``marks(value)`` if given."""
    mpi, scoop = set(mpi), set(scoop)
    out = []
    for v in values:
        extra = list(marks(v)) if callable(marks) else list(marks)
        extra += [pytest.mark.mpi] if v in mpi else []
        extra += [pytest.mark.scoop] if v in scoop else []
        out.append(pytest.param(v, marks=extra))
    return out


def launches(cmd: list[str]) -> str | None:
    """The marker a test running ``cmd`` must carry: ``"mpi"``, ``"slurm"``, ``"scoop"`` or None."""
    program = os.path.basename(cmd[0]) if cmd else ""
    if program.startswith(("mpiexec", "mpirun")):
        return "mpi"
    if program in ("srun", "sbatch", "salloc"):
        return "slurm"
    if any(cmd[i : i + 2] == ["-m", "scoop"] for i in range(len(cmd) - 1)):
        return "scoop"
    return None


# ---------------------------------------------------------------------------- processes
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


def kill_session(sid: int) -> list[int]:
    """SIGKILL every process of session ``sid`` (its process group and any process that left the
    group but not the session); return the processes that were found alive."""
    left = session_processes(sid)
    if left:  # only then: a group id nobody holds any more may be reused by a stranger
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(sid, signal.SIGKILL)
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    return left


def default_signals() -> None:
    """The ``preexec_fn`` of every process a test starts: ``DEFAULT_SIGNALS`` at their defaults,
    as a shell started from a terminal would give them (runs in the child, before exec)."""
    for signum in DEFAULT_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)


def _record_session(sid: int, started: float | None = None) -> None:
    """Note ``sid`` for the end-of-session check, before anything can go wrong with the run, and
    when it started (``time.time()``; now if not given): what MPI leaves in /dev/shm is told
    from what other programs leave there by when it was made."""
    where = os.environ.get(SESSIONS_ENV)
    if where:
        with open(os.path.join(where, f"{os.getpid()}.sids"), "a") as fh:
            fh.write(f"{sid}\n")
        with open(os.path.join(where, f"{os.getpid()}.runs"), "a") as fh:
            fh.write(f"{sid} start {time.time() if started is None else started}\n")


def _record_end(sid: int) -> None:
    """Note that the run of session ``sid`` has ended (its processes killed)."""
    where = os.environ.get(SESSIONS_ENV)
    if where:
        with open(os.path.join(where, f"{os.getpid()}.runs"), "a") as fh:
            fh.write(f"{sid} end {time.time()}\n")


def run_windows(where: str | os.PathLike[str], until: float) -> list[tuple[float, float]]:
    """``(start, end)`` (``time.time()``) of every run recorded under ``where``; a run whose end
    was not recorded ends at ``until``."""
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}
    for path in Path(where).glob("*.runs"):
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                sid, what, when = line.split()
                (starts if what == "start" else ends)[f"{path.stem}:{sid}"] = float(when)
    return [(t, ends.get(key, until)) for key, t in starts.items()]


def shm_entries() -> dict[str, int]:
    """The MPI libraries' entries in ``/dev/shm`` (``SHM_PREFIXES``): name -> inode."""
    with contextlib.suppress(OSError):
        return {e.name: e.inode() for e in os.scandir(SHM) if e.name.startswith(SHM_PREFIXES)}
    return {}


def shm_mapped() -> set[str]:
    """The ``/dev/shm`` names some live process maps: in use, not left behind (yet)."""
    found = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{pid}/maps") as fh:
                for line in fh:
                    if f"{SHM}/" in line:
                        found.add(line.split(f"{SHM}/", 1)[1].split()[0])
    return found


def run_timeout(requested: float) -> float:
    """``requested``, capped so that the run ends (and is killed) ``MARGIN`` s before the current
    test's pytest timeout fires."""
    if test_deadline is None:
        return requested
    return max(1.0, min(requested, test_deadline - time.monotonic() - MARGIN))


def run(
    cmd: list[str],
    timeout: float = TIMEOUT,
    *,
    cwd: os.PathLike[str] | str | None = None,
    env: dict[str, str] | None = None,
    no_leftovers: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` to its end in a session of its own; fail the test (after killing the session)
    if it hangs, and with ``no_leftovers`` if any process of its session outlives it by 10 s.

    The timeout is ``timeout`` capped by the test's own pytest timeout (``run_timeout``).  Whatever
    happens (the end, a hang, pytest-timeout's exception, Ctrl-C), nothing of the run survives the
    call: the ``finally`` kills its whole session."""
    needed = launches(cmd)
    if needed and current_test is not None and current_test.get_closest_marker(needed) is None:
        pytest.fail(
            f"{current_test.nodeid} launches {cmd[0]} but is not marked `{needed}`: add "
            f"@pytest.mark.{needed} (or a pytest.param mark), so that -m 'not {needed}' skips it",
            pytrace=False,
        )
    limit = run_timeout(timeout)
    with started(cmd, cwd=cwd, env=env) as proc:
        try:
            out, err = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            kill_session(proc.pid)
            try:
                out, err = proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:  # a pipe held open by a process of another session
                out, err = "(output not collected)", ""
            capped = (
                f" (capped from {timeout} s by the test's pytest timeout)"
                if limit < timeout
                else ""
            )
            pytest.fail(
                f"{cmd} did not end within {limit:.0f} s{capped}: killed\n"
                f"--- stdout\n{out}\n--- stderr\n{err}"
            )
        result = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
        deadline = time.monotonic() + 10
        while no_leftovers and session_processes(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if no_leftovers and (left := kill_session(proc.pid)):
            pytest.fail(f"{cmd} left processes {left} behind\n{output(result)}")
        return result


@contextlib.contextmanager
def started(
    cmd: list[str],
    *,
    cwd: os.PathLike[str] | str | None = None,
    env: dict[str, str] | None = None,
    preexec_fn: Callable[[], None] = default_signals,
) -> Iterator[subprocess.Popen[str]]:
    """Start ``cmd`` in a session of its own, for a test that acts on it while it runs (``run``
    uses it too).  On leaving, whatever happened (pytest-timeout's exception and Ctrl-C
    included), its whole session is killed and its pipes closed: nothing of the run survives."""
    begun = time.time()
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=clean_env() if env is None else env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # one session and group: mpiexec, its proxies and every rank
        preexec_fn=preexec_fn,  # noqa: PLW1509 (only signal.signal runs in the child)
    )
    try:
        _record_session(proc.pid, begun)
        yield proc
    finally:
        kill_session(proc.pid)
        _record_end(proc.pid)
        if proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


def wait_for(path: Path, proc: subprocess.Popen[str], what: str, timeout: float = 60) -> None:
    """Wait until ``path`` exists (the job wrote it); fail with ``what`` and the run's output if
    the run ends first or ``timeout`` passes (capped by ``run_timeout``)."""
    deadline = time.monotonic() + run_timeout(timeout)
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def output(r: subprocess.CompletedProcess[str]) -> str:
    """What a run printed, for assertion messages."""
    return f"exit code {r.returncode}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}"
