"""SCOOP over three emulated hosts: ``python -m scoop --hostfile HOSTFILE job.py`` runs of an
evocluster job, and after each, a look at every host by PID: no process of the run (launcher,
broker, launch processes, workers, the ssh stand-in's shells) may be left on any host
:data:`WITHIN` s after the launcher ended.

The hosts are network namespaces (``tests/multihost.py``), brought up once for the module and
torn down in the fixture's finalizer, whatever happens.  The job:
``tests/fixtures/jobs/scoop_multihost.py``.

A short job ends before every worker on the other hosts has joined the run; those workers used to
wait for SCOOP's broker for good, and so did every worker there after a killed launcher
(``evocluster/_backends/scoop/watch.py``, :class:`_BrokerWatch`, says why and what ends them now).
``late`` workers make the first case certain.  Runs that left processes on the other hosts,
measured on a 2-core VM, 2026-12-02, before the fix / after it: a short job 23 of 32 / 0 of 28;
late workers 8 of 8 / 0 of 28; a job that raises 8 of 22 / 0 of 21; a job on every host 2 of 12 /
0 of 14; a killed launcher 2 of 2 / 0 of 6.  After it, the hosts were empty at most 1.1 s after the
launcher ended.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import multihost
import pytest
from helpers import (
    FIXTURES,
    _record_session,
    clean_env,
    default_signals,
    kill_session,
    run_timeout,
)

pytestmark = [pytest.mark.scoop, pytest.mark.slow, pytest.mark.xdist_group("scoop-multihost")]

JOB = str(FIXTURES / "jobs" / "scoop_multihost.py")
PERNODE = str(FIXTURES / "jobs" / "pernode_share.py")
#: How long the run's processes may take to end after the launcher ended, on every host.
WITHIN = 5.0
SQUARES = "RESULT [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]"


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    left: str  # the processes left WITHIN s after the launcher ended, one a line ("": none)
    took: float  # from the launcher's end until no process of the run was left (or WITHIN)

    def __str__(self) -> str:
        if self.left:
            end = f"left on the hosts {self.took:.1f} s after the launcher ended:\n{self.left}"
        else:
            end = f"the hosts were empty {self.took:.1f} s after the launcher ended"
        return f"exit code {self.code}; {end}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[multihost.Hosts]:
    """Three emulated hosts, 3 SCOOP slots each (9 processes: the origin and 8 workers)."""
    with multihost.emulated(3, tmp_path_factory.mktemp("hosts")) as made:
        yield made


@pytest.fixture(scope="module")
def key_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private XDG_CONFIG_HOME: the runs create their key there (every host reads it: the file
    system is shared, as on a cluster)."""
    return tmp_path_factory.mktemp("xdg")


def scoop_run(
    hosts: multihost.Hosts,
    where: Path,
    key_home: Path,
    *args: str,
    kill_at: str = "",
    job: str = JOB,
    during: Callable[[subprocess.Popen[bytes], float], None] | None = None,
    **env_vars: str,
) -> Run:
    """``python -m scoop --hostfile HOSTFILE JOB ARGS`` on the first host, in the empty directory
    ``where`` (``kill_at``: SIGKILL the launcher once the job printed a line that starts so;
    ``during(proc, deadline)``: what the test does while it runs; ``env_vars``: the run's
    environment besides); then wait up to :data:`WITHIN` s for every host to be empty, and kill
    (by PID) whatever is left, after noting it.

    The output goes to files: a process left behind would hold a pipe open."""
    where.mkdir()
    cmd = hosts.command(
        sys.executable, "-m", "scoop", "--hostfile", str(hosts.hostfile), job, *args
    )
    env = clean_env(
        XDG_CONFIG_HOME=str(key_home),
        PATH=f"{hosts.bin}{os.pathsep}{os.environ['PATH']}",
        **env_vars,
    )
    out, err = where / "stdout", where / "stderr"
    with out.open("w") as fo, err.open("w") as fe:
        proc = subprocess.Popen(
            cmd, cwd=where, env=env, stdin=subprocess.DEVNULL, stdout=fo, stderr=fe,
            start_new_session=True, preexec_fn=default_signals,  # noqa: PLW1509 (signal.signal)
        )  # fmt: skip
    try:
        _record_session(proc.pid)
        deadline = time.monotonic() + run_timeout(90)
        while kill_at and proc.poll() is None and time.monotonic() < deadline:
            if re.search(f"^{re.escape(kill_at)}", out.read_text(), re.M):
                os.kill(proc.pid, signal.SIGKILL)  # the launcher itself (exec'd): no other
                break
            time.sleep(0.05)
        if during is not None:
            during(proc, deadline)
        try:
            code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            hosts.kill()
            pytest.fail(f"{cmd} did not end: killed\n{out.read_text()}\n{err.read_text()}")
        left, took = hosts.wait_empty(WITHIN)
        return Run(code, out.read_text(), err.read_text(), hosts.describe(left), took)
    finally:
        hosts.kill()
        kill_session(proc.pid)


def runs_that_left(runs: list[Run]) -> str:
    """What the runs that left processes behind left, for the assertion message."""
    bad = [(i, r) for i, r in enumerate(runs, 1) if r.left]
    head = f"processes outlived {len(bad)} of {len(runs)} runs by {WITHIN:g} s"
    return head + "".join(f"\n--- run {i}\n{r}" for i, r in bad)


def check(mode: str, r: Run) -> None:
    """The job's results and the run's end, as on one host."""
    assert SQUARES in r.stdout, r
    said = [line for line in r.stderr.splitlines() if line.startswith("evocluster:")]
    if mode == "raise":
        assert r.code == -signal.SIGTERM, r  # the exit guard ends the launcher: 143 in a shell
        assert "RuntimeError: the job failed on purpose" in r.stdout + r.stderr, r  # SCOOP: stdout
        assert len(said) == 1 and "the job raised RuntimeError" in said[0], r
        assert "END" not in r.stdout.splitlines(), r
    else:
        assert r.code == 0, r
        assert not said, r
        assert "END" in r.stdout.splitlines(), r


@pytest.mark.parametrize(
    ("mode", "late", "n"),
    [("short", False, 4), ("short", True, 2), ("raise", False, 3), ("raise", True, 2)],
    ids=["short", "short-late-workers", "raise", "raise-late-workers"],
)
def test_a_run_leaves_no_process_on_any_host(
    mode: str, late: bool, n: int, hosts: multihost.Hosts, key_home: Path, tmp_path: Path
) -> None:
    # short: the job is over before the workers on the other hosts have all joined the run, most
    # of the time; with late workers, always
    args = [mode, ",".join(hosts.names), *(["late"] if late else [])]
    runs = [scoop_run(hosts, tmp_path / f"run{i}", key_home, *args) for i in range(n)]
    for r in runs:
        check(mode, r)
    assert not any(r.left for r in runs), runs_that_left(runs)


def test_a_run_on_every_host_leaves_no_process_on_any_host(
    hosts: multihost.Hosts, key_home: Path, tmp_path: Path
) -> None:
    names = ",".join(hosts.names)
    runs = [scoop_run(hosts, tmp_path / f"run{i}", key_home, "every-host", names) for i in range(2)]
    for r in runs:
        check("every-host", r)
        assert re.search(rf"^HOSTS {','.join(sorted(hosts.names))}$", r.stdout, re.M), r
    assert not any(r.left for r in runs), runs_that_left(runs)


def test_a_killed_launcher_leaves_no_process_on_any_host(
    hosts: multihost.Hosts, key_home: Path, tmp_path: Path
) -> None:
    # SIGKILL (the OOM killer): the broker dies with the launcher, and the workers on the other
    # hosts, busy with the job, never get a SHUTDOWN
    names = ",".join(hosts.names)
    runs = [
        scoop_run(hosts, tmp_path / f"run{i}", key_home, "until-killed", names, kill_at="HOSTS ")
        for i in range(2)
    ]
    for r in runs:
        assert r.code == -signal.SIGKILL, r
        assert re.search(rf"^HOSTS {','.join(sorted(hosts.names))}$", r.stdout, re.M), r
    assert not any(r.left for r in runs), runs_that_left(runs)


def test_a_large_shared_array_reaches_workers_on_every_host(
    hosts: multihost.Hosts, key_home: Path, tmp_path: Path
) -> None:
    """Issue 23: with workers on other hosts, SCOOP's broadcast of a large shared array stays
    whole (a reference to the origin's shared memory would not reach them): every worker, on
    every host, reads the same array, each holding its own copy."""
    where = tmp_path / "run"
    r = scoop_run(hosts, where, key_home, str(where), "normal", "8", job=PERNODE)
    assert r.code == 0 and not r.left, r
    got = json.loads((where / "out.json").read_text())
    size = got["nbytes"]
    for total, dtype, shape, writeable, _ in got["seen"]:
        assert (total, dtype, shape) == (got["expected_sum"], "float64", [size // 8]), got
        assert writeable, got["seen"]  # its own copy, not a view of shared memory
    assert len({host for host, _ in got["places"].values()}) > 1, got["places"]
    assert all(not segments for _, segments in got["places"].values()), got["places"]
    assert size <= got["bytes_sent"] < 1.1 * size, got["bytes_sent"]  # broadcast once
