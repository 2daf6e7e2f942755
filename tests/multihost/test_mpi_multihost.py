"""MPI over three emulated hosts: ``mpiexec`` started on the first host reaches the others through
an ssh stand-in (``tests/multihost.py``: MPICH's hydra ``-launcher ssh -launcher-exec``, Open MPI's
``--mca plm_rsh_agent``), 7 ranks: the master and 2 workers on the first host, 2 workers on each
other.  What one host proves must hold across hosts: the conformance checks, the jobs' populations,
evaluations and doorbells on every host, the run log's ``hosts`` record, faults named where they
happen; and after every run no process of it is left on any host (:data:`WITHIN`).

The hosts are brought up once for the module and torn down in the fixture's finalizer, whatever
happens.  Every test here launches ``mpiexec`` (inside ``ip netns exec``: ``helpers.run`` cannot
see it, so the markers are declared on the module).  Jobs: ``tests/fixtures/conformance_job.py``,
``jobs/``, ``tests/fixtures/jobs/mpi_multihost.py``, ``pernode_share.py`` and ``fault_matrix.py``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import multihost
import pytest
from conformance_job import CHECKS
from helpers import (
    FIXTURES,
    JOBS,
    SHM,
    clean_env,
    mpi_command,
    output,
    run,
    started,
    wait_for,
)
from small_jobs import JOB_ARGS, hashes

from evocluster import _sharing as sharing

sys.path.insert(0, str(FIXTURES / "jobs"))
import fault_matrix  # the job's own table of faults and its check (after the path is set)

pytestmark = [pytest.mark.mpi, pytest.mark.slow, pytest.mark.xdist_group("mpi-multihost")]

#: ranks per host: rank 0 (the master) and 2 workers on the first, 2 workers on each other
RANKS = [3, 2, 2]
#: How long the run's processes may take to end after the launcher ended, on every host.
WITHIN = 5.0
MPI = pytest.param("mpich-wheel", id="mpich")
OPENMPI = pytest.param("openmpi", id="openmpi")
WHERE = str(FIXTURES / "jobs" / "mpi_multihost.py")
PERNODE = str(FIXTURES / "jobs" / "pernode_share.py")
#: the jobs that run in a few seconds (bigdata.py is about moving data, not hosts)
QUICK = [job for job in JOB_ARGS if job != "bigdata.py"]


@dataclass
class Run:
    proc: subprocess.CompletedProcess[str]
    seconds: float  # from the start of mpiexec to its end
    left: str  # the processes left WITHIN s after mpiexec ended, one a line ("": none)

    def __str__(self) -> str:
        end = f"left on the hosts:\n{self.left}" if self.left else "the hosts were empty"
        return f"{output(self.proc)}\n--- after {self.seconds:.1f} s; {end}"


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[multihost.Hosts]:
    """Three emulated hosts."""
    with multihost.emulated(3, tmp_path_factory.mktemp("hosts")) as made:
        yield made


def across(hosts: multihost.Hosts, flavour: str, where: Path, *args: str) -> Run:
    """``mpiexec ... python -m evocluster ARGS`` over the hosts (:data:`RANKS`), in ``where``;
    then wait up to :data:`WITHIN` s for every host to be empty, and kill (by PID) whatever is
    left, after noting it."""
    where.mkdir(parents=True, exist_ok=True)
    cmd = hosts.mpiexec(flavour, RANKS, "-m", "evocluster", *args)
    start = time.monotonic()
    try:
        proc = run(cmd, 120, cwd=where, env=clean_env(XDG_CONFIG_HOME=str(where / "xdg")))
        seconds = time.monotonic() - start
        left, _ = hosts.wait_empty(WITHIN)
        return Run(proc, seconds, hosts.describe(left))
    finally:
        hosts.kill()


def on_one_host(flavour: str, where: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The same with as many ranks on this machine alone, for comparison."""
    where.mkdir(parents=True, exist_ok=True)
    cmd = mpi_command(flavour, sum(RANKS), *args)
    return run(cmd, 120, cwd=where, env=clean_env(XDG_CONFIG_HOME=str(where / "xdg")))


# ---------------------------------------------------------------------------- same results
@pytest.mark.parametrize("flavour", [MPI, OPENMPI])
def test_the_conformance_checks_pass_across_hosts(
    flavour: str, hosts: multihost.Hosts, tmp_path: Path
) -> None:
    out = tmp_path / "result.json"
    r = across(hosts, flavour, tmp_path, str(FIXTURES / "conformance_job.py"), "--json", str(out))
    assert r.proc.returncode == 0 and out.exists(), r
    outcome = json.loads(out.read_text())
    assert (outcome["_backend"], outcome["_workers"]) == ("mpi", "6"), outcome
    failed = {check: outcome.get(check, "no report") for check in CHECKS}
    assert {check: said for check, said in failed.items() if said != "ok"} == {}, r
    assert not r.left, r


@pytest.mark.parametrize("flavour", [MPI, OPENMPI])
@pytest.mark.parametrize("job", QUICK)
def test_a_job_gives_the_same_population_across_hosts_as_on_one(
    job: str, flavour: str, hosts: multihost.Hosts, tmp_path: Path
) -> None:
    def args(name: str) -> list[str]:
        return [str(JOBS / job), *JOB_ARGS[job], "--json", str(tmp_path / f"{name}.json")]

    one = on_one_host(flavour, tmp_path / "one", *args("one"))
    assert one.returncode == 0, output(one)
    r = across(hosts, flavour, tmp_path / "three", *args("three"))
    assert r.proc.returncode == 0, r
    summaries = [json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "three")]
    assert all((s["backend"], s["n_workers"]) == ("mpi", 6) for s in summaries), summaries
    assert hashes(summaries[0]), summaries[0]  # something to compare
    assert hashes(summaries[1]) == hashes(summaries[0]), f"{job}: 3 hosts differ from one"
    assert not r.left, r


# ---------------------------------------------------------------------------- where it runs
_where: dict[str, tuple[Run, dict[str, Any], list[dict[str, Any]]]] = {}


def where_run(
    flavour: str, hosts: multihost.Hosts, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Run, dict[str, Any], list[dict[str, Any]]]:
    """One run of ``mpi_multihost.py where`` with a run log, per flavour: (the run, the job's
    JSON line, the log's records)."""
    if flavour not in _where:
        where = tmp_path_factory.mktemp(f"where-{flavour}")
        r = across(hosts, flavour, where, "--log", "run.jsonl", WHERE, "where")
        assert r.proc.returncode == 0, r
        said = json.loads(r.proc.stdout.strip().splitlines()[-1])
        log = [json.loads(line) for line in (where / "run.jsonl").read_text().splitlines()]
        _where[flavour] = (r, said, log)
    return _where[flavour]


@pytest.mark.parametrize("flavour", [MPI, OPENMPI])
def test_every_host_evaluates(
    flavour: str, hosts: multihost.Hosts, tmp_path_factory: pytest.TempPathFactory
) -> None:
    r, said, _ = where_run(flavour, hosts, tmp_path_factory)
    assert said["master"] == hosts.names[0], r
    # every worker evaluated something, 2 of them on each host
    assert said["workers"] == {name: 2 for name in hosts.names}, r
    assert not r.left, r


@pytest.mark.parametrize("flavour", [MPI, OPENMPI])
def test_doorbells_connect_from_every_host(
    flavour: str, hosts: multihost.Hosts, tmp_path_factory: pytest.TempPathFactory
) -> None:
    r, said, _ = where_run(flavour, hosts, tmp_path_factory)
    assert said["doorbells"] == 6, r  # 4 of them from the other hosts, over the bridge
    assert "doorbell" not in r.proc.stderr, r  # no worker polls for want of one


@pytest.mark.parametrize("flavour", [MPI, OPENMPI])
def test_the_run_log_names_the_hosts(
    flavour: str, hosts: multihost.Hosts, tmp_path_factory: pytest.TempPathFactory
) -> None:
    _, _, log = where_run(flavour, hosts, tmp_path_factory)
    start = log[0]
    assert (start["record"], start["host"], start["ranks"]) == ("start", hosts.names[0], 7), start
    (record,) = [rec for rec in log if rec["record"] == "hosts"]
    assert record["hosts"] == {name: 2 for name in hosts.names}, record
    assert log[-1]["record"] == "end" and log[-1]["hosts"] == record["hosts"], log[-1]


def test_a_large_shared_array_is_one_copy_per_host(hosts: multihost.Hosts, tmp_path: Path) -> None:
    """Issue 23: the master's 2 workers map the copy the master wrote; on each other host one
    worker is sent the array and writes that host's copy, its neighbour maps it (references
    only cross to it): one copy per host, the bytes sent once per other host, and no copy
    left after the run (the hosts share this machine's ``/dev/shm``)."""
    r = across(hosts, "mpich-wheel", tmp_path, PERNODE, str(tmp_path), "normal", "8")
    assert r.proc.returncode == 0 and not r.left, r
    got = json.loads((tmp_path / "out.json").read_text())
    size = got["nbytes"]
    assert len(got["pids"]) == 6, got["pids"]
    for total, dtype, shape, writeable, error in got["seen"]:
        assert (total, dtype, shape) == (got["expected_sum"], "float64", [size // 8]), got
        assert not writeable and "read-only" in error, got["seen"]
    by_host: dict[str, set[str]] = {}
    for host, segments in got["places"].values():
        assert len(segments) == 1, got["places"]  # each worker maps one copy
        by_host.setdefault(host, set()).update(segments)
    assert sorted(by_host) == sorted(hosts.names), got["places"]
    # one copy per host: each host's workers map the same one, and no two hosts the same
    assert all(len(copies) == 1 for copies in by_host.values()), by_host
    assert len(set().union(*by_host.values())) == 3, by_host
    assert 2 * size <= got["bytes_sent"] < 2.2 * size, got["bytes_sent"]
    left = [n for n in os.listdir(SHM) for c in by_host.values() if n.startswith(min(c))]
    assert not left, left


def _copies() -> set[str]:
    return {n for n in os.listdir(SHM) if n.startswith(sharing.SEGMENT_PREFIX)}


@pytest.mark.parametrize("mode", ["raise", "kill_a_writer"])
def test_no_copy_is_left_on_any_host_when_the_run_fails(
    mode: str, hosts: multihost.Hosts, tmp_path: Path
) -> None:
    """The copies written on other hosts go with the run, also when it fails: a fitness raises
    (the job's exit 1), or the worker that wrote a host's copy is killed (SIGKILL: its cleaner
    removes it; the launcher ends the job)."""
    before = _copies()
    job = "raise" if mode == "raise" else "wait"
    cmd = hosts.mpiexec("mpich-wheel", RANKS, "-m", "evocluster", PERNODE, str(tmp_path), job, "8")
    env = clean_env(XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    try:
        with started(cmd, cwd=tmp_path, env=env) as proc:
            if mode == "kill_a_writer":
                wait_for(tmp_path / "master", proc, "no worker mapped the shared array")
                master = (tmp_path / "pid").read_text()
                deadline = time.monotonic() + 30
                while True:  # a copy another host's worker wrote: named after that worker
                    writers = [
                        int(n[len(sharing.SEGMENT_PREFIX) :].split("-")[0])
                        for n in _copies() - before
                        if not n.startswith(f"{sharing.SEGMENT_PREFIX}{master}-")
                    ]
                    if writers or time.monotonic() > deadline:
                        break
                    time.sleep(0.05)
                assert writers, f"no worker wrote a copy: {_copies() - before}"
                os.kill(writers[0], signal.SIGKILL)
            out, err = proc.communicate(timeout=120)
        printed = f"exit code {proc.returncode}\n--- stdout\n{out}\n--- stderr\n{err}"
        assert proc.returncode != 0, printed
        deadline = time.monotonic() + WITHIN
        while _copies() - before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _copies() - before, printed
    finally:
        hosts.kill()


# ---------------------------------------------------------------------------- faults elsewhere
def test_the_fault_matrix_across_hosts(hosts: multihost.Hosts, tmp_path: Path) -> None:
    """Every fault under every policy (tests/faults/test_fault_matrix.py), the failing items
    spread over the hosts by the scheduler."""
    r = across(hosts, "mpich-wheel", tmp_path, str(FIXTURES / "jobs" / "fault_matrix.py"))
    assert r.proc.returncode == 0 and "MATRIX DONE" in r.proc.stdout, r
    problems = fault_matrix.problems(fault_matrix.cases(r.proc.stdout))
    assert not problems, "\n".join(problems) + f"\n{r}"
    assert not r.left, r


def _worker(hosts: multihost.Hosts, text: str) -> re.Match[str]:
    """The first "worker rank R of 7 on host H (pid P)" in ``text`` naming another host."""
    others = "|".join(re.escape(name) for name in hosts.names[1:])
    found = re.search(rf"worker rank (\d) of 7 on host ({others}) \(pid (\d+)\)", text)
    assert found, f"no worker on another host named in:\n{text}"
    return found


def fault_run(hosts: multihost.Hosts, flavour: str, where: Path, *args: str) -> Run:
    """``mpi_multihost.py ARGS``, a fault on another host: the run ends within seconds, not
    zero, before the job's end, and leaves nothing behind."""
    r = across(hosts, flavour, where, *args)
    assert r.proc.returncode != 0 and r.seconds < 20, r  # seconds, not a hang until a timeout
    assert "STARTED 6 workers" in r.proc.stdout and "results:" not in r.proc.stdout, r
    assert not r.left, r
    return r


@pytest.mark.parametrize("flavour", [MPI, OPENMPI])
def test_a_fitness_raising_on_another_host_is_raised_on_the_master(
    flavour: str, hosts: multihost.Hosts, tmp_path: Path
) -> None:
    r = fault_run(hosts, flavour, tmp_path, WHERE, "raise")
    assert r.proc.returncode == 1, r
    err = r.proc.stderr
    # the worker's traceback, labelled with its rank and host, is the cause of what the master
    # raised: the error a fitness raised on that host
    worker = _worker(hosts, err)
    assert "RuntimeError: infeasible individual" in err and f"on {worker[2]}\n" in err, r
    said = [line for line in err.splitlines() if line.startswith("evocluster:")]
    assert "raised RuntimeError on the master (rank 0)" in said[0], r


@pytest.mark.parametrize("flavour", [MPI, OPENMPI])
def test_a_worker_rank_killed_on_another_host_ends_the_run_saying_where(
    flavour: str, hosts: multihost.Hosts, tmp_path: Path
) -> None:
    r = fault_run(hosts, flavour, tmp_path, WHERE, "kill")
    said = (tmp_path / "dying").read_text() if (tmp_path / "dying").exists() else ""
    dying = re.search(r"^DYING rank (\d+) host (\S+) pid (\d+)$", said, re.M)
    assert dying and dying[2] == hosts.names[-1], r
    # one line, by the master's death watch, names the rank and its host; the ranks the launcher
    # kills on that host (and the master's neighbours) are its clean-up, not said as deaths
    died = [line for line in r.proc.stderr.splitlines() if "ended without a word" in line]
    assert len(died) == 1, r
    rank, host, pid = dying.groups()
    assert died[0].startswith(
        f"evocluster: MPI worker rank {rank} of 7 on host {host} (pid {pid}) ended without a word"
    ), r


@pytest.mark.parametrize("flavour", [MPI, OPENMPI])
def test_a_fitness_hanging_on_another_host_is_interrupted_by_the_eval_timeout(
    flavour: str, hosts: multihost.Hosts, tmp_path: Path
) -> None:
    r = fault_run(hosts, flavour, tmp_path, "--eval-timeout", "1", WHERE, "hang")
    assert r.proc.returncode == 1, r
    _worker(hosts, r.proc.stderr)
    assert "EvaluationTimeout: the evaluation ran longer than 1 s (eval_timeout)" in r.proc.stderr
