"""A SLURM job over several nodes: a real cluster over three emulated hosts
(``slurm_nodes.py``: slurmctld on the hosts' bridge, one slurmd per host), every job through
``python -m evocluster submit -N 2``, its MPI ranks started by srun on two hosts.

What is checked:
* The job runs on 2 nodes: the run log's ``hosts`` record names both, and the population is that
  of a one-host run with as many ranks.
* The wall-time warning (``scancel --signal=USR1 --batch``): the job checkpoints, requeues,
  resumes on the nodes SLURM gives it, and ends with the population of a run never interrupted.
* A lost node: every process of the job on its second node is killed (slurmstepd and the ranks;
  slurmd lives on).  The master's death watch names the rank and host lost, the job FAILS (the
  batch script requeues only a checkpoint), the test requeues it (``scontrol requeue``: SLURM
  would requeue by itself only a node it declares down, after SlurmdTimeout, minutes), and it
  resumes from its checkpoint to the population of a run never interrupted.
  Killing that node's slurmd too (tried by hand, 2026-12-07): the death watch and the failed
  run are the same, but the job then stays COMPLETING and the node ``completing*`` for more than
  200 s: SLURM waits for SlurmdTimeout (300 s) to declare the node down, too long for a test.
* After each test no process of the job is left on any host (slurmd excepted), nor MPICH's
  shared memory of its step in /dev/shm.

The cluster is brought up once for the module (~3 s) and down at its end, nothing left.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import slurm_nodes
from helpers import JOBS, mpi_command, output, run
from test_slurm import (
    FINISHED,
    KEY,
    final_hash,
    generations,
    mpich_segments,
    remove_mpich_segments,
    run_log,
    wait_for,
)

from evocluster._runlog import Run

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.mpi,
    pytest.mark.slow,
    pytest.mark.xdist_group("slurm-multinode"),
]

ONEMAX = str(JOBS / "onemax_builtin.py")
SHORT = ["--ngen", "10", "--pop", "60", "--length", "40"]
LONG = ["--ngen", "150", "--pop", "100", "--length", "60"]  # time to signal or kill it mid-run
RESUMED = r"^resumed generational\(\) from run\.ckpt: generation (\d+)"
#: how long a job's processes may take to leave the hosts after the job ended
WITHIN = 15.0


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[slurm_nodes.SlurmNodes]:
    try:
        with slurm_nodes.cluster(3, tmp_path_factory.mktemp("nodes")) as made:
            yield made
    except RuntimeError as e:  # up.sh failed: its last line says why
        pytest.fail(str(e))


class Jobs:
    """Submits through ``python -m evocluster submit`` (in the controller's namespace) in a test's
    directory; at the end cancels what is still queued, and checks that no process of a job is
    left on any host (killing it, by PID, if one is)."""

    def __init__(self, nodes: slurm_nodes.SlurmNodes, where: Path) -> None:
        self.nodes, self.where = nodes, where
        path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
        self.env = nodes.env(EVOCLUSTER_KEY=KEY, PATH=path)
        self.ids: list[str] = []

    def cmd(self, *args: str) -> str:
        done = subprocess.run(
            self.nodes.client(*args),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, f"{args}: {done.stderr}"
        return done.stdout

    def submit(self, *args: str) -> str:
        cmd = self.nodes.client(sys.executable, "-m", "evocluster", "submit", *args)
        r = run(cmd, cwd=self.where, env=self.env, timeout=60)
        assert r.returncode == 0, output(r)
        jobid = r.stdout.strip()
        assert jobid.isdigit(), output(r)
        self.ids.append(jobid)
        return jobid

    def info(self, jobid: str) -> dict[str, str]:
        return dict(re.findall(r"(\w+)=(\S*)", self.cmd("scontrol", "show", "job", "-o", jobid)))

    def output(self, jobid: str, name: str = "onemax_builtin") -> str:
        path = self.where / f"{name}-{jobid}.out"
        return path.read_text() if path.exists() else ""

    def finished(self, jobid: str, timeout: float = 180) -> dict[str, str]:
        def done() -> dict[str, str] | None:
            info = self.info(jobid)
            return info if info.get("JobState") in FINISHED else None

        return wait_for(f"job {jobid} to end", done, timeout)

    def left(self) -> str:
        """What is left of the jobs on the hosts after :data:`WITHIN` s, one process a line."""
        deadline = time.monotonic() + WITHIN
        while (found := self.nodes.job_processes()) and time.monotonic() < deadline:
            time.sleep(0.2)
        return self.nodes.hosts.describe(found)

    def restart_now(self, jobid: str) -> None:
        """Start a requeued job at once rather than 120 s later, once its first run has left
        every host (tests/slurm/test_slurm.py's ``Jobs.restart_now`` says why)."""

        def requeued() -> bool:
            info = self.info(jobid)
            return info.get("JobState") == "PENDING" and info.get("Restarts") != "0"

        wait_for(f"job {jobid} to be requeued", requeued)
        assert self.left() == ""
        time.sleep(1.5)
        self.cmd("scontrol", "update", f"jobid={jobid}", "StartTime=now")

    def close(self) -> None:
        if self.ids:
            subprocess.run(
                self.nodes.client("scancel", *self.ids),
                env=self.env,
                capture_output=True,
                timeout=60,
                check=False,
            )
        left = self.left()
        for pids in self.nodes.job_processes().values():
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
        segments = [path for jobid in self.ids for path in mpich_segments(jobid)]
        for path in segments:
            path.unlink(missing_ok=True)
        assert left == "", f"left on the hosts:\n{left}"
        assert segments == [], "left in /dev/shm"


@pytest.fixture
def jobs(nodes: slurm_nodes.SlurmNodes, tmp_path: Path) -> Iterator[Jobs]:
    handle = Jobs(nodes, tmp_path)
    try:
        yield handle
    finally:
        handle.close()


@pytest.fixture(scope="module")
def one_host() -> Callable[..., str]:
    """``one_host(*args)``: the population hash of the job on 4 MPI ranks on this machine."""
    done: dict[tuple[str, ...], str] = {}

    def get(*args: str) -> str:
        if args not in done:
            r = run(mpi_command("mpich-wheel", 4, ONEMAX, *args), timeout=120)
            assert r.returncode == 0, output(r)
            done[args] = final_hash(r.stdout)
        return done[args]

    return get


def hosts_of(logged: Run) -> dict[str, int]:
    (record,) = logged.of("hosts")
    hosts: dict[str, int] = record["hosts"]
    return hosts


def submit_on_2_nodes(jobs: Jobs, *args: str, job: str = ONEMAX) -> str:
    return jobs.submit(job, "-N", "2", "--ntasks", "4", "--time", "00:10:00", *args)


# -------------------------------------------------------------------------------------- tests
def test_a_job_on_2_nodes_runs_on_both_with_the_population_of_one_host(
    jobs: Jobs, one_host: Callable[..., str]
) -> None:
    jobid = submit_on_2_nodes(jobs, "--", *SHORT)
    info = jobs.finished(jobid)
    out = jobs.output(jobid)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", out
    assert info["NumNodes"] == "2", info
    assert "evaluated by backend mpi with 3 worker(s)" in out, out
    assert generations(out) == list(range(11)), out
    assert final_hash(out) == one_host(*SHORT)
    (logged,) = run_log(jobs.where / f"onemax_builtin-{jobid}.jsonl")
    assert logged.start["slurm"]["job_id"] == jobid
    hosts = hosts_of(logged)  # workers per host: the master's host has the others of its node
    on = re.search(r"^evocluster batch: job \d+, run 1, 4 task\(s\) on (\S+)$", out, re.M)
    assert on and len(expand(on[1])) == 2 and set(expand(on[1])) <= set(jobs.nodes.nodes), out
    assert set(hosts) == set(expand(on[1])), hosts
    assert sum(hosts.values()) == 3, hosts
    assert logged.ended is not None and logged.ended["exit_code"] == 0


def test_the_warning_checkpoints_requeues_and_resumes_across_nodes(
    jobs: Jobs, one_host: Callable[..., str]
) -> None:
    jobid = submit_on_2_nodes(jobs, "--checkpoint", "run.ckpt", "--", *LONG)
    wait_for("generation 5", lambda: 5 in generations(jobs.output(jobid)))
    jobs.cmd("scancel", "--signal=USR1", "--batch", jobid)
    jobs.restart_now(jobid)
    info = jobs.finished(jobid)
    out = jobs.output(jobid)
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", out
    stopped = re.findall(
        r"^evocluster: SIGUSR1: generational\(\) stopped at generation (\d+)", out, re.M
    )
    resumed = re.findall(RESUMED, out, re.M)
    assert len(stopped) == 1 and resumed == stopped, out
    assert f"requeueing job {jobid}" in out, out
    g = int(stopped[0])
    assert generations(out) == [*range(g + 1), *range(g + 1, 151)], out
    assert final_hash(out) == one_host(*LONG)
    runs = run_log(jobs.where / f"onemax_builtin-{jobid}.jsonl")
    assert [r.start["slurm"]["restart_count"] for r in runs] == [0, 1]
    assert all(len(hosts_of(r)) == 2 for r in runs), [r.of("hosts") for r in runs]


#: jobs/onemax_builtin.py checkpointing every generation (the launcher's default is every 60 s,
#: and submit has no --checkpoint-every): a lost node loses at most the generation it was in
EVERY_GENERATION_JOB = """
import sys

sys.path.insert(0, {jobs!r})
import onemax_builtin

if __name__ == "__main__":
    ngen, pop, length = (int(a) for a in sys.argv[1:])
    result = onemax_builtin.main(42, ngen, pop, length, checkpoint_every=0)
    print(f"population sha256 {{result.digest()}}")
"""


def test_a_lost_node_ends_the_job_saying_where_and_it_resumes_after_a_requeue(
    jobs: Jobs, one_host: Callable[..., str]
) -> None:
    (jobs.where / "every.py").write_text(EVERY_GENERATION_JOB.format(jobs=str(JOBS)))
    jobid = submit_on_2_nodes(jobs, "--checkpoint", "run.ckpt", "--", *LONG[1::2], job="every.py")
    wait_for("generation 5", lambda: 5 in generations(jobs.output(jobid, "every")))
    info = jobs.info(jobid)
    allocated = expand(info["NodeList"])
    (lost,) = [n for n in allocated if n != info["BatchHost"]]
    # the node is lost: every process of the job there (its slurmstepd and ranks), slurmd lives
    killed = jobs.nodes.job_processes().get(lost, [])
    assert killed, f"nothing of job {jobid} on {lost}"
    start = time.monotonic()
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    wait_for("the death watch", lambda: "ended without a word" in jobs.output(jobid, "every"), 10)
    said = time.monotonic() - start
    info = jobs.finished(jobid, 60)
    seconds = time.monotonic() - start
    print(f"lost node: said after {said:.1f} s, the job ended after {seconds:.1f} s")
    remove_mpich_segments(jobid)  # what the ranks killed leave in /dev/shm
    out = jobs.output(jobid, "every")
    assert info["JobState"] == "FAILED" and info["Restarts"] == "0", out
    assert seconds < 30, f"the job took {seconds:.0f} s to end\n{out}"
    died = [line for line in out.splitlines() if "ended without a word" in line]
    assert died and all(f"on host {lost}" in line for line in died), out
    assert "population sha256" not in out, out
    # SLURM requeues a job by itself only when it declares its node down: the test does
    jobs.cmd("scontrol", "requeue", jobid)
    jobs.restart_now(jobid)
    info = jobs.finished(jobid)
    out = jobs.output(jobid, "every")
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", out
    resumed = re.findall(RESUMED, out, re.M)
    assert len(resumed) == 1 and int(resumed[0]) >= 4, out
    assert generations(out)[-1] == 150, out
    assert final_hash(out) == one_host(*LONG)


def expand(nodelist: str) -> list[str]:
    """``evtXh[1-2]`` or ``evtXh1,evtXh3``: the node names (of this cluster's form only)."""
    found = re.fullmatch(r"(\w+?h)\[([\d,-]+)\]", nodelist)
    if not found:
        return nodelist.split(",")
    names = []
    for part in found[2].split(","):
        first, _, last = part.partition("-")
        names += [f"{found[1]}{i}" for i in range(int(first), int(last or first) + 1)]
    return names
