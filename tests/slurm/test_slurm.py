"""jobs/onemax.py on a real SLURM, every job through ``python -m evocluster submit``.

The cluster (slurmctld, one slurmd, munged: ``slurm/cluster/up.sh``, from Debian's packages that
``.ci/slurm`` installs) is brought up once for the test session and torn down at its end by the
PIDs up.sh recorded (``slurm/cluster/down.sh``).  Where it cannot be brought up (no packages, not
root, another SLURM holding its ports) the tests are skipped with the reason, and fail under CI.

What is checked:
* 5 tasks through srun, mpiexec and SCOOP: the run completes with the population of a serial run.
* The wall-time warning, sent at once with ``scancel --signal=USR1 --batch``: the job checkpoints,
  requeues itself, resumes, and ends with the population of a run that was never interrupted.
* A job that does not checkpoint ignores the warning and runs to its end.
* ``kill -9`` of the master (rank 0's python) between two checkpoints: the job FAILS (srun ends
  the other ranks; the batch script does not requeue a crash, which could only repeat), and the
  same submission again resumes from the last checkpoint and ends with the same population.
* A job array of 3: three different results, each that of a serial run with seed base + index.
* The run log, beside the output: a ``start`` with SLURM's job id and an ``end``; a requeued
  job's log has a run (a ``start``) for each; ``status`` of a running job, and of each task of a
  running array, shows the figures of its log.

A requeued job waits 120 s before SLURM starts it again; the tests start it at once with
``scontrol update jobid=J StartTime=now``, once the previous run has left the node.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from helpers import JOBS, ROOT, clean_env, launcher, output, prerequisite, run

from evocluster._runlog import Run, read

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.xdist_group("slurm")]

ONEMAX = str(JOBS / "onemax.py")
SHORT = ["--ngen", "10", "--pop", "60", "--length", "40"]  # ~1 s of evolution
LONG = ["--ngen", "200", "--pop", "100"]  # a few seconds: time to signal or kill it mid-run
KEY = "slurm-tests-" + "k" * 32  # the checkpoints' signing key, the same in every run

CLUSTER = ROOT / "slurm" / "cluster"
#: The test cluster's own directory (EVOSLURM_ROOT): not the default one a user may have up.
STATE = Path(tempfile.gettempdir()) / "evocluster-slurm-tests"
#: Held while the cluster is brought up, joined, left or torn down: several pytest processes
#: (xdist workers outside their group) share one cluster, and the last one to leave stops it.
LOCK = Path(tempfile.gettempdir()) / "evocluster-slurm-tests.lock"
USERS = Path(tempfile.gettempdir()) / "evocluster-slurm-tests.users"
SBIN = os.pathsep.join(["/usr/sbin", "/sbin"])

FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}

T = TypeVar("T")


# ------------------------------------------------------------------------------------ cluster
@contextlib.contextmanager
def _locked() -> Iterator[None]:
    with open(LOCK, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _users() -> list[int]:
    """The pytest processes using the cluster, those still alive."""
    try:
        pids = [int(p) for p in USERS.read_text().split()]
    except (OSError, ValueError):
        return []
    alive = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, 0)
            alive.append(pid)
    return alive


def _script(name: str) -> subprocess.CompletedProcess[str]:
    env = clean_env(EVOSLURM_ROOT=str(STATE), PATH=f"{os.environ.get('PATH', '')}:{SBIN}")
    return subprocess.run(
        ["bash", str(CLUSTER / name)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def _bring_up() -> None:
    if sys.platform != "linux" or os.geteuid() != 0:
        prerequisite("bringing up a test SLURM cluster needs root on Linux (slurm/cluster/up.sh)")
    if (STATE / "run").exists():  # left by a session that died: its PIDs are recorded there
        _script("down.sh")
    up = _script("up.sh")
    if up.returncode != 0:
        last = (up.stderr.strip().splitlines() or ["(no message)"])[-1]
        reason = re.sub(r"^\[up\s+[\d.]+s\]\s*(error:\s*)?", "", last)
        _script("down.sh")  # whatever did start
        prerequisite(f"no SLURM cluster could be brought up here: {reason}")


@pytest.fixture(scope="session")
def cluster() -> Iterator[dict[str, str]]:
    """The environment for SLURM commands and ``submit`` against the test cluster."""
    with _locked():
        users = _users()
        if not users or not (STATE / "etc" / "slurm.conf").exists():
            _bring_up()
            users = []
        USERS.write_text(" ".join(str(p) for p in [*users, os.getpid()]))
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    env = clean_env(SLURM_CONF=str(STATE / "etc" / "slurm.conf"), EVOCLUSTER_KEY=KEY, PATH=path)
    for name in list(env):  # nothing of an enclosing allocation (pytest run inside a job)
        if name.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_")) and name != "SLURM_CONF":
            del env[name]
    try:
        yield env
    finally:
        with _locked():
            left = [p for p in _users() if p != os.getpid()]
            USERS.write_text(" ".join(str(p) for p in left))
            if not left:
                USERS.unlink()
                down = _script("down.sh")
                assert down.returncode == 0, down.stdout + down.stderr


# ------------------------------------------------------------------------------------ helpers
def wait_for(what: str, check: Callable[[], T | None], timeout: float = 120) -> T:
    """Poll ``check`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout:.0f} s for {what}")
        time.sleep(0.2)


def slurm_cmd(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        list(args), env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"{args}: {done.stderr}"
    return done.stdout


def job_info(env: dict[str, str], jobid: str) -> dict[str, str]:
    """``scontrol show job`` of one job (not an array): JobState, Restarts, ExitCode, StdOut..."""
    text = slurm_cmd(env, "scontrol", "show", "job", "-o", jobid)
    return dict(re.findall(r"(\w+)=(\S*)", text))


class Jobs:
    """Submits through ``python -m evocluster submit`` in a test's directory; cancels at the end
    whatever is still queued or running, so that a failed test leaves no job behind."""

    def __init__(self, env: dict[str, str], where: Path) -> None:
        self.env, self.where, self.ids = env, where, []

    def submit(self, *args: str) -> str:
        r = run(
            [sys.executable, "-m", "evocluster", "submit", *args],
            cwd=self.where,
            env=self.env,
            timeout=60,
        )
        assert r.returncode == 0, output(r)
        jobid = r.stdout.strip()
        assert jobid.isdigit(), output(r)
        self.ids.append(jobid)
        return jobid

    def output(self, name: str) -> str:
        path = self.where / name
        return path.read_text() if path.exists() else ""

    def state(self, jobid: str) -> str:
        return job_info(self.env, jobid).get("JobState", "")

    def finished(self, jobid: str, timeout: float = 120) -> dict[str, str]:
        def done() -> dict[str, str] | None:
            info = job_info(self.env, jobid)
            return info if info.get("JobState") in FINISHED else None

        return wait_for(f"job {jobid} to end", done, timeout)

    def status(self, jobid: str) -> str:
        r = run([sys.executable, "-m", "evocluster", "status", jobid], env=self.env, timeout=60)
        assert r.returncode == 0, output(r)
        return r.stdout

    def restart_now(self, jobid: str) -> None:
        """Start a requeued job at once instead of 120 s later.  Not before the previous run has
        left the node: slurmd refuses to start a job again within the second its last run was
        killed in ("Job credential revoked"), and that fails the job for good."""

        def requeued() -> bool:
            info = job_info(self.env, jobid)
            return info.get("JobState") == "PENDING" and info.get("Restarts") != "0"

        wait_for(f"job {jobid} to be requeued", requeued)
        wait_for(
            f"the processes of job {jobid}'s first run to end",
            lambda: not job_pids(jobid) and not stepds(jobid),
        )
        time.sleep(1.5)  # SLURM's credentials count in whole seconds: the next one, at least
        slurm_cmd(self.env, "scontrol", "update", f"jobid={jobid}", "StartTime=now")

    def cancel_all(self) -> None:
        if self.ids:
            subprocess.run(
                ["scancel", *self.ids], env=self.env, capture_output=True, timeout=60, check=False
            )


@pytest.fixture
def jobs(cluster: dict[str, str], tmp_path: Path) -> Iterator[Jobs]:
    handle = Jobs(cluster, tmp_path)
    try:
        yield handle
    finally:
        handle.cancel_all()


def job_pids(jobid: str, **env_has: str) -> list[int]:
    """Processes of this machine that belong to job ``jobid`` (by their environment)."""
    want = {f"SLURM_JOB_ID={jobid}".encode(), *(f"{k}={v}".encode() for k, v in env_has.items())}
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            with open(f"/proc/{entry}/environ", "rb") as fh:
                variables = set(fh.read().split(b"\0"))
            if want <= variables:
                found.append(int(entry))
    return found


def stepds(jobid: str) -> list[int]:
    """This machine's slurmstepd processes of job ``jobid`` (titled ``slurmstepd: [J.S]``)."""
    title = f"slurmstepd: [{jobid}."
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (cmdline(int(entry)) or [""])[0].startswith(title):
            found.append(int(entry))
    return found


def cmdline(pid: int) -> list[str]:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as fh:
        return fh.read().decode(errors="replace").split("\0")
    return []


def final_hash(text: str) -> str:
    found = re.findall(r"^population sha256 ([0-9a-f]{64})$", text, re.M)
    assert found, text
    return found[-1]


@pytest.fixture(scope="module")
def serial() -> Callable[..., str]:
    """``serial(*args)``: the final population hash of jobs/onemax.py run serially, locally."""
    done: dict[tuple[str, ...], str] = {}

    def get(*args: str) -> str:
        if args not in done:
            r = run(launcher("--backend", "serial", ONEMAX, *args), timeout=120)
            assert r.returncode == 0, output(r)
            done[args] = final_hash(r.stdout)
        return done[args]

    return get


def run_log(path: Path) -> list[Run]:
    """The runs of the run log at ``path``, read whole (no torn line: the job has ended)."""
    runs, note = read(path)
    assert note == "", note
    return runs


def generations(text: str) -> list[int]:
    return [int(g) for g in re.findall(r"^gen\s+(\d+)\s", text, re.M)]


# -------------------------------------------------------------------------------------- tests
HOW = {
    "srun": ([], "mpi"),
    "mpiexec": (["--launcher", "mpiexec"], "mpi"),
    "scoop": (["--backend", "scoop"], "scoop"),
}
HOW_PARAMS = [pytest.param(h, marks=getattr(pytest.mark, HOW[h][1]), id=h) for h in HOW]


@pytest.mark.parametrize("how", HOW_PARAMS)
def test_onemax_on_5_tasks_completes_with_the_serial_population(
    jobs: Jobs, serial: Callable[..., str], how: str
) -> None:
    options, backend = HOW[how]
    jobid = jobs.submit(ONEMAX, "--ntasks", "5", "--time", "00:10:00", *options, "--", *SHORT)
    info = jobs.finished(jobid)
    out = jobs.output(f"onemax-{jobid}.out")
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", out
    assert generations(out) == list(range(11)), out
    assert f"evaluated by backend {backend} with 4 worker(s)" in out, out
    assert final_hash(out) == serial(*SHORT)
    status = jobs.status(jobid).splitlines()
    assert status[0].split()[:4] == ["JOB", "STATE", "EXIT", "RESTARTS"]
    assert status[1].split()[:4] == [jobid, "COMPLETED", "0", "0"], status
    assert status[1].endswith("evaluated by backend " + f"{backend} with 4 worker(s)"), status
    # the run log, beside the output; SCOOP's job runs without the launcher: no exit code there
    (logged,) = run_log(jobs.where / f"onemax-{jobid}.jsonl")
    assert logged.start["slurm"]["job_id"] == jobid
    assert logged.start["slurm"]["restart_count"] == 0
    assert logged.ended is not None and logged.ended["exit_code"] == (0 if how != "scoop" else None)


@pytest.mark.parametrize("how", HOW_PARAMS)
def test_the_warning_checkpoints_requeues_and_resumes_to_the_same_population(
    jobs: Jobs, serial: Callable[..., str], how: str
) -> None:
    options, _ = HOW[how]
    jobid = jobs.submit(
        ONEMAX, "-n", "5", "-t", "00:10:00", "--checkpoint", "run.ckpt", *options, "--", *LONG
    )
    name = f"onemax-{jobid}.out"
    wait_for("generation 5", lambda: 5 in generations(jobs.output(name)))
    # the wall-time warning, now: what --signal=B:USR1@LEAD sends, to the batch shell only
    slurm_cmd(jobs.env, "scancel", "--signal=USR1", "--batch", jobid)
    jobs.restart_now(jobid)
    info = jobs.finished(jobid)
    out = jobs.output(name)
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", out
    stopped = re.findall(r"^checkpointed after generation (\d+)", out, re.M)
    resumed = re.findall(r"^resumed from run\.ckpt after generation (\d+)", out, re.M)
    assert len(stopped) == 1 and resumed == stopped, out
    assert "requeueing job " + jobid in out, out
    g = int(stopped[0])
    assert generations(out) == [*range(g + 1), *range(g + 1, 201)], out  # none lost, none twice
    assert final_hash(out) == serial(*LONG)
    assert jobs.status(jobid).splitlines()[1].split()[:4] == [jobid, "COMPLETED", "0", "1"]
    # the run log: appended to by both runs, a start each
    runs = run_log(jobs.where / f"onemax-{jobid}.jsonl")
    assert [r.start["slurm"]["job_id"] for r in runs] == [jobid, jobid]
    assert [r.start["slurm"]["restart_count"] for r in runs] == [0, 1]
    assert runs[1].ended is not None


@pytest.mark.mpi
def test_a_job_that_does_not_checkpoint_runs_on_after_the_warning(
    jobs: Jobs, serial: Callable[..., str]
) -> None:
    jobid = jobs.submit(ONEMAX, "-n", "5", "-t", "00:10:00", "--", *LONG)
    name = f"onemax-{jobid}.out"
    wait_for("generation 5", lambda: 5 in generations(jobs.output(name)))
    slurm_cmd(jobs.env, "scancel", "--signal=USR1", "--batch", jobid)
    info = jobs.finished(jobid)
    out = jobs.output(name)
    assert "asking the run to checkpoint" in out, out  # the warning came during the run
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "0", out
    assert generations(out) == list(range(201)), out
    assert final_hash(out) == serial(*LONG)


@pytest.mark.mpi
def test_a_killed_master_fails_the_job_and_resubmitting_resumes_to_the_same_population(
    jobs: Jobs, serial: Callable[..., str]
) -> None:
    args = [ONEMAX, "-n", "5", "-t", "00:10:00", "--checkpoint", "run.ckpt", "--", *LONG]
    first = jobs.submit(*args)
    name = f"onemax-{first}.out"
    wait_for("generation 5", lambda: 5 in generations(jobs.output(name)))
    masters = [pid for pid in job_pids(first, PMI_RANK="0") if "evocluster" in cmdline(pid)[1:4]]
    assert len(masters) == 1, masters
    os.kill(masters[0], signal.SIGKILL)  # between two checkpoints: one is saved per generation
    info = jobs.finished(first)
    remove_mpich_segments(first)
    out = jobs.output(name)
    assert info["JobState"] == "FAILED" and info["Restarts"] == "0", out
    assert "requeueing" not in out and "population sha256" not in out, out
    assert jobs.status(first).splitlines()[1].split()[1] == "FAILED"
    # the same submission again: it finds the checkpoint
    second = jobs.submit(*args)
    info = jobs.finished(second)
    out = jobs.output(f"onemax-{second}.out")
    assert info["JobState"] == "COMPLETED", out
    resumed = re.findall(r"^resumed from run\.ckpt after generation (\d+)", out, re.M)
    # generation 5's line is printed before its checkpoint is written: a kill between the two
    # (seen in CI under load) resumes after generation 4, which loses nothing
    assert len(resumed) == 1 and int(resumed[0]) >= 4, out
    assert generations(out) == list(range(int(resumed[0]) + 1, 201)), out
    assert final_hash(out) == serial(*LONG)


def mpich_segments(jobid: str) -> list[Path]:
    """What MPICH has in /dev/shm for step ``jobid``.0: its shared memory, named after the FNV-1a
    hash of the PMI name srun gives the step (``J.0``)."""
    digest = 2166136261
    for byte in f"{jobid}.0".encode():
        digest = ((digest ^ byte) * 16777619) & 0xFFFFFFFF
    return list(Path("/dev/shm").glob(f"mpich_*_{digest:x}_*"))


def remove_mpich_segments(jobid: str) -> None:
    """Remove what MPICH leaves in /dev/shm when the ranks of step ``jobid``.0 are killed."""
    for path in mpich_segments(jobid):
        path.unlink(missing_ok=True)


#: jobs/onemax.py with its seed from evocluster.run_seed: task i of a job array runs seed 7 + i
ARRAY_JOB = """
import argparse
import sys

sys.path.insert(0, {jobs!r})
import evocluster
import onemax

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    for option in ("--ngen", "--pop", "--length"):
        p.add_argument(option, type=int)
    p.add_argument("--checkpoint")
    a = p.parse_args()
    seed = evocluster.run_seed(7)
    population = onemax.main(seed, a.ngen, a.pop, a.length, a.checkpoint)
    print(f"seed {{seed}}")
    print(f"population sha256 {{onemax.population_hash(population)}}")
"""


@pytest.mark.mpi
def test_a_job_array_runs_each_task_with_its_own_seed(
    jobs: Jobs, serial: Callable[..., str]
) -> None:
    job = jobs.where / "seeded.py"
    job.write_text(ARRAY_JOB.format(jobs=str(JOBS)))
    jobid = jobs.submit(
        str(job),
        "-n",
        "3",
        "-t",
        "00:10:00",
        "--array",
        "0-2",
        "--checkpoint",
        "seeded-%a.ckpt",
        "--",
        *SHORT,
    )
    hashes = []
    for task in range(3):
        info = jobs.finished(f"{jobid}_{task}")
        out = jobs.output(f"seeded-{jobid}_{task}.out")
        assert info["JobState"] == "COMPLETED", out
        assert f"seed {7 + task}\n" in out, out
        assert (jobs.where / f"seeded-{task}.ckpt").exists()  # a checkpoint file per task
        hashes.append(final_hash(out))
    assert hashes == [serial(*SHORT, "--seed", str(7 + t)) for t in range(3)]
    assert len(set(hashes)) == 3
    status = jobs.status(jobid).splitlines()
    assert [line.split()[:2] for line in status[1:4]] == [
        [f"{jobid}_{t}", "COMPLETED"] for t in range(3)
    ], status
    assert status[4] == f"{jobid} (seeded): 3 COMPLETED", status


#: a job that says its last words and exits with the code it is given
LAST_WORDS_JOB = """
import sys
import evocluster

if __name__ == "__main__":
    print(evocluster.map(abs, [-1, -2]))
    print("the last words of the job", flush=True)
    sys.exit(int(sys.argv[1]))
"""


@pytest.mark.mpi
def test_status_of_a_task_of_an_array_and_of_a_task_it_does_not_have(jobs: Jobs) -> None:
    job = jobs.where / "words.py"
    job.write_text(LAST_WORDS_JOB)
    jobid = jobs.submit(str(job), "-n", "2", "-t", "00:05:00", "--array", "0-1", "--", "0")
    for task in (0, 1):
        jobs.finished(f"{jobid}_{task}")
    lines = jobs.status(f"{jobid}_1").splitlines()
    assert len(lines) == 2 and lines[1].split()[:4] == [f"{jobid}_1", "COMPLETED", "0", "0"]
    assert lines[1].endswith("the last words of the job"), lines
    # f035c23 printed only "evocluster: status: scontrol: exit 1" (scontrol says "Job J_9 not
    # found" on its stdout)
    r = run([sys.executable, "-m", "evocluster", "status", f"{jobid}_9"], env=jobs.env, timeout=60)
    assert r.returncode == 1, output(r)
    assert r.stderr.splitlines() == [
        f"evocluster: status: job array {jobid} has no task 9 (its tasks: 0, 1; finished jobs "
        "are forgotten after MinJobAge, unless accounting keeps them for sacct)"
    ], output(r)


@pytest.mark.mpi
def test_status_shows_the_jobs_last_line_not_the_launchers_teardown(jobs: Jobs) -> None:
    job = jobs.where / "words.py"
    job.write_text(LAST_WORDS_JOB)
    jobid = jobs.submit(str(job), "-n", "2", "-t", "00:05:00", "--", "3")
    info = jobs.finished(jobid)
    out = jobs.output(f"words-{jobid}.out")
    assert info["JobState"] == "FAILED", out
    # srun's teardown comes after the job's last words (f035c23's status showed it)
    assert "srun: error: localhost: task 0: Exited with exit code 3" in out, out
    assert out.index("the last words of the job") < out.index("srun: error:"), out
    (line,) = jobs.status(jobid).splitlines()[1:]
    assert line.split()[:4] == [jobid, "FAILED", "3", "0"], line
    assert line.endswith("the last words of the job"), line


def test_status_of_a_job_slurm_does_not_know(cluster: dict[str, str]) -> None:
    r = run([sys.executable, "-m", "evocluster", "status", "999999"], env=cluster, timeout=60)
    assert r.returncode == 1, output(r)
    assert r.stderr.splitlines() == [
        "evocluster: status: SLURM does not know job 999999 (finished jobs are forgotten after "
        "MinJobAge, unless accounting keeps them for sacct)"
    ]


def test_the_cluster_runs_what_the_templates_need(cluster: dict[str, str]) -> None:
    # srun wires PyPI's MPICH through PMI-2 (MpiDefault=pmi2): one world, not 3 singletons
    assert shutil.which("srun", path=cluster["PATH"]) is not None
    out = slurm_cmd(cluster, "scontrol", "show", "config")
    assert re.search(r"^MpiDefault\s+= pmi2$", out, re.M), out


#: an engine loop whose fitness sleeps: a run long enough to look at while it runs
SLOW_JOB = """
import functools
import sys
import time

import evocluster
from evocluster import engine, operators as ops


def fitness(genome):
    time.sleep(0.02)
    return float(genome.sum())


if __name__ == "__main__":
    engine.generational(
        fitness,
        lambda rng: ops.random_bits(20, 16, rng),
        executor=evocluster.get_executor(),
        generations=int(sys.argv[1]),
        seed=evocluster.run_seed(1),
        crossover=ops.two_point,
        mutate=functools.partial(ops.bit_flip, p=0.1),
    )
"""
#: what status shows of a running task: every figure of its run log's last run
PROGRESS = re.compile(
    r"^\d+:\d\d:\d\d  gen \d+/5000  map \d+/\d+ \(\d+%\)  [\d.e+]+ evals/s  workers \d/2 busy  "
    r"0 failed  best [\d.]+  ~\d+:\d\d:\d\d left  \d+ evals in all  checkpoint gen \d+ \d+ s ago  "
    r"\(log \d+ s ago\)$"
)


def running(jobs: Jobs, jobid: str, tasks: list[str]) -> dict[str, str]:
    """Poll ``status jobid`` until every one of ``tasks`` is RUNNING with its progress shown;
    return their progress, by task."""

    def shown() -> dict[str, str] | None:
        lines = jobs.status(jobid).splitlines()[1:]
        found = {}
        for line in lines:
            ident, state, code, restarts, *rest = line.split(maxsplit=4)
            if ident in tasks and (state, code, restarts) == ("RUNNING", "-", "0"):
                found[ident] = rest[0] if rest else ""
        ready = all(PROGRESS.match(found.get(t, "")) for t in tasks)
        return found if ready else None

    return wait_for("status to show the progress of " + ", ".join(tasks), shown)


def stop(jobs: Jobs, *jobids: str) -> None:
    """Cancel running MPI jobs and remove what their killed ranks leave in /dev/shm."""
    slurm_cmd(jobs.env, "scancel", *jobids)
    for jobid in jobids:
        jobs.finished(jobid)
        remove_mpich_segments(job_info(jobs.env, jobid)["JobId"])


@pytest.mark.mpi
def test_status_of_a_running_job_shows_the_progress_in_its_run_log(jobs: Jobs) -> None:
    (jobs.where / "slow.py").write_text(SLOW_JOB)
    jobs.env = {**jobs.env, "EVOCLUSTER_LOG_EVERY": "0.5"}  # sbatch passes it on to the job
    jobid = jobs.submit(
        "slow.py", "-n", "3", "-t", "00:10:00", "--checkpoint", "s.ckpt", "--", "5000"
    )
    try:
        progress = running(jobs, jobid, [jobid])
    finally:
        stop(jobs, jobid)
    assert PROGRESS.match(progress[jobid]), progress
    (logged,), _ = read(jobs.where / f"slow-{jobid}.jsonl")  # beside slow-JOBID.out
    assert logged.start["slurm"]["job_id"] == jobid and logged.start["workers"] == 2
    assert len(logged.of("interval")) >= 2 and logged.last("checkpoint") is not None


@pytest.mark.mpi
def test_status_of_a_running_array_shows_each_tasks_progress(jobs: Jobs) -> None:
    (jobs.where / "slow.py").write_text(SLOW_JOB)
    jobs.env = {**jobs.env, "EVOCLUSTER_LOG_EVERY": "0.5"}
    jobid = jobs.submit(
        "slow.py", "-n", "3", "-t", "00:10:00", "--array", "0-1", "--checkpoint", "s-%a.ckpt",
        "--", "5000",
    )  # fmt: skip
    tasks = [f"{jobid}_0", f"{jobid}_1"]
    try:
        progress = running(jobs, jobid, tasks)
        lines = jobs.status(jobid).splitlines()
    finally:
        stop(jobs, *tasks)
    assert [line.split()[0] for line in lines[1:3]] == tasks, lines
    assert lines[3] == f"{jobid} (slow): 2 RUNNING", lines
    for t in (0, 1):
        assert PROGRESS.match(progress[f"{jobid}_{t}"]), progress
        (logged,), _ = read(jobs.where / f"slow-{jobid}_{t}.jsonl")  # cancelled: maybe torn
        assert logged.start["slurm"]["array_job_id"] == jobid
        assert logged.start["slurm"]["array_task_id"] == str(t)
