"""Exit paths of a run whose workers do not all end on their own, in real processes: a job that
returns after a caller-side timeout, SIGTERM / SIGINT / SIGHUP / SIGKILL to the master with a
worker stuck in an evaluation, a fitness that leaves a thread running or changes directory, plain
``mpiexec python job.py``, absurd worker counts and the launcher's fault options.  Every worker
process is checked by PID afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import (
    FIXTURES,
    clean_env,
    default_signals,
    launcher,
    mpi_command,
    output,
    require_mpiexec,
    run,
    run_timeout,
    started,
    wait_for,
)

JOBS = FIXTURES / "jobs"
STUCK = str(JOBS / "exit_stuck.py")


def alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie is not)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def stuck_workers(where: Path) -> list[int]:
    return [int(p.name[7:]) for p in where.iterdir() if p.name.startswith("worker-")]


def assert_gone(pids: list[int], r: object) -> None:
    """Every process of ``pids`` ends within 10 s (the runs' exit paths kill within seconds)."""
    deadline = time.monotonic() + 10
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [p for p in pids if alive(p)]
    assert not left, f"worker processes {left} outlived the run\n{r}"


def command(how: str, *args: str) -> list[str]:
    if how == "plain-python":
        return [sys.executable, *args]
    if how == "launcher-local":
        return launcher("--backend", "local", "--workers", "2", *args)
    return mpi_command("mpich-wheel", 3, *args)


# ------------------------------------------------------------------ a normal end after a timeout
@pytest.mark.parametrize(
    "how",
    ["plain-python", "launcher-local", pytest.param("mpi-n3", marks=[pytest.mark.mpi])],
)
def test_job_returning_after_a_map_timeout_exits_0_and_kills_the_stuck_evaluation(
    tmp_path: Path, how: str
) -> None:
    r = run(command(how, STUCK, str(tmp_path), "map-timeout"), timeout=90, no_leftovers=True)
    assert r.returncode == 0, output(r)
    assert "CAUGHT TimeoutError" in r.stdout and "RETURNING" in r.stdout, output(r)
    said = [line for line in r.stderr.splitlines() if line.startswith("evocluster:")]
    assert len(said) == 1 and "stopped waiting for" in said[0], output(r)
    assert "Traceback" not in r.stderr, output(r)
    workers = stuck_workers(tmp_path)
    assert len(workers) == 1, output(r)
    assert_gone(workers, output(r))


# ------------------------------------------------------------------ signals to the master
def interrupt(cmd: list[str], where: Path, signum: int, group: bool = False) -> tuple[str, ...]:
    """Run ``cmd`` (an ``exit_stuck.py ... wait`` job), send ``signum`` to its master (``group``:
    to its whole process group, as Ctrl-C in a terminal does) once a worker is stuck in the
    evaluation; return (exit code, stdout, stderr, the worker's PID, every PID of the run)."""
    with started(cmd) as proc:
        wait_for(where / "master", proc, "no worker started the evaluation")
        children = subprocess.run(
            ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        if group:
            os.killpg(proc.pid, signum)
        else:
            os.kill(proc.pid, signum)
        out, err = proc.communicate(timeout=run_timeout(60))
        return proc.returncode, out, err, stuck_workers(where), [int(c) for c in children]


@pytest.mark.parametrize("how", ["plain-python", "launcher-local"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_to_the_master_prints_one_line_kills_the_workers_and_exits_128_plus_signum(
    tmp_path: Path, how: str, signum: int
) -> None:
    code, out, err, stuck, children = interrupt(
        command(how, STUCK, str(tmp_path), "wait"), tmp_path, signum
    )
    printed = f"exit code {code}\n--- stdout\n{out}\n--- stderr\n{err}"
    assert code == 128 + signum, printed
    name = signal.Signals(signum).name
    assert err.strip().splitlines() == [f"evocluster: interrupted ({name})"], printed
    assert len(stuck) == 1 and stuck[0] in children and len(children) == 2, printed
    assert_gone(children, printed)


@pytest.mark.mpi
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_to_mpiexec_prints_one_line_of_ours_and_leaves_no_rank(
    tmp_path: Path, signum: int
) -> None:
    """mpiexec passes the signal on to every rank: the workers ignore it (a worker dying of it
    first would end the job before the master could checkpoint), the master ends the run."""
    code, out, err, stuck, _ = interrupt(
        command("mpi-n3", STUCK, str(tmp_path), "wait"), tmp_path, signum
    )
    printed = f"exit code {code}\n--- stdout\n{out}\n--- stderr\n{err}"
    assert code == 128 + signum, printed
    ours = [line for line in err.splitlines() if line.startswith("evocluster:")]
    assert ours == [f"evocluster: interrupted ({signal.Signals(signum).name})"], printed
    assert "Traceback" not in err, printed
    assert len(stuck) == 1, printed
    assert_gone(stuck, printed)


def test_ctrl_c_to_the_process_group_prints_one_line_not_a_traceback_per_worker(
    tmp_path: Path,
) -> None:
    cmd = command("launcher-local", STUCK, str(tmp_path), "wait")
    code, out, err, _, children = interrupt(cmd, tmp_path, signal.SIGINT, group=True)
    printed = f"exit code {code}\n--- stdout\n{out}\n--- stderr\n{err}"
    assert code == 130, printed
    assert err.strip().splitlines() == ["evocluster: interrupted (SIGINT)"], printed
    assert_gone(children, printed)


@pytest.mark.parametrize("how", ["plain-python", "launcher-local"])
def test_workers_die_with_a_master_killed_by_sigkill(tmp_path: Path, how: str) -> None:
    cmd = command(how, STUCK, str(tmp_path), "wait")
    code, out, err, stuck, children = interrupt(cmd, tmp_path, signal.SIGKILL)
    printed = f"exit code {code}\n--- stdout\n{out}\n--- stderr\n{err}"
    assert code == -signal.SIGKILL and len(children) == 2 and stuck[0] in children, printed
    assert_gone(children, printed)  # the stuck one too: no socket read tells it


# ------------------------------------------------------------------ what a fitness leaves behind
def test_local_worker_exits_cleanly_after_bye_despite_a_thread_of_the_fitness() -> None:
    r = run([sys.executable, str(JOBS / "exit_thread.py"), "own"], timeout=60, no_leftovers=True)
    assert r.returncode == 0, output(r)
    assert "RESULTS [0, 1, 4]" in r.stdout, output(r)
    # 0: it left by itself after its BYE, not killed by the master after waiting for it
    assert "WORKER EXIT CODES [0]" in r.stdout, output(r)


@pytest.mark.mpi
def test_mpi_run_ends_although_a_fitness_left_a_thread_running() -> None:
    cmd = mpi_command("mpich-wheel", 3, str(JOBS / "exit_thread.py"), "default")
    r = run(cmd, timeout=60, no_leftovers=True)
    assert r.returncode == 0, output(r)
    assert "RESULTS [0, 1, 4]" in r.stdout, output(r)


def test_fitness_changing_directory_does_not_move_the_serial_master(tmp_path: Path) -> None:
    # (the fitness goes to the temporary directory: the run starts elsewhere)
    r = run(launcher("--backend", "serial", str(JOBS / "exit_chdir.py")), 60, cwd=tmp_path)
    assert r.returncode == 0, output(r)
    assert "RESULTS [2, 3]" in r.stdout and "SAME DIRECTORY True" in r.stdout, output(r)


# ------------------------------------------------------------------ MPI without the launcher
@pytest.mark.mpi
def test_plain_mpiexec_of_a_job_is_one_message_and_exit_code_2() -> None:
    r = run([require_mpiexec(), "-n", "5", sys.executable, str(JOBS / "exit_plain_mpi.py")], 90)
    assert r.returncode == 2, output(r)
    said = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(said) == 1 and "python -m evocluster" in said[0], output(r)
    assert said[0].startswith("evocluster: this process is one of 5 MPI ranks"), output(r)
    assert "RESULTS" not in r.stdout, output(r)


def test_backend_mpi_without_an_mpi_launcher_is_a_usage_error() -> None:
    r = run(launcher("--backend", "mpi", str(JOBS / "exit_plain_mpi.py")), timeout=60)
    assert r.returncode == 2, output(r)
    assert (
        r.stderr.strip().splitlines()
        == [
            line
            for line in r.stderr.strip().splitlines()
            if "--backend mpi needs an MPI launcher" in line
        ]
        != []
    ), output(r)
    assert "RESULTS" not in r.stdout, output(r)


# ------------------------------------------------------------------ absurd worker counts
TOO_MANY = 4 * (os.cpu_count() or 1) + 1


def test_too_many_workers_from_the_environment_are_capped_with_a_warning() -> None:
    env = clean_env(EVOCLUSTER_WORKERS=str(TOO_MANY))
    r = run([sys.executable, str(JOBS / "exit_workers.py")], 90, env=env, no_leftovers=True)
    assert r.returncode == 0, output(r)
    assert f"DEFAULT {TOO_MANY - 1}" in r.stdout, output(r)
    warned = [line for line in r.stderr.splitlines() if line.startswith("evocluster:")]
    assert len(warned) == 1 and f"{TOO_MANY} local workers asked for" in warned[0], output(r)


def test_too_many_workers_of_an_executor_are_capped_with_a_warning() -> None:
    cmd = [sys.executable, str(JOBS / "exit_workers.py"), str(TOO_MANY)]
    r = run(cmd, timeout=90, no_leftovers=True)
    assert r.returncode == 0, output(r)
    assert f"OWN {TOO_MANY - 1}" in r.stdout, output(r)
    assert "--force-workers" in r.stderr, output(r)


def test_force_workers_starts_them_all_without_a_warning() -> None:
    cmd = launcher("--workers", str(TOO_MANY), "--force-workers", str(JOBS / "exit_workers.py"))
    r = run(cmd, timeout=120, no_leftovers=True)
    assert r.returncode == 0, output(r)
    assert f"DEFAULT {TOO_MANY}" in r.stdout, output(r)
    assert "asked for" not in r.stderr, output(r)


# ------------------------------------------------------------------ the launcher's fault options
@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--on-error", "ignore"], "on_error must be raise, penalize or retry:N"),
        (["--on-error", "retry:x"], "on_error must be raise, penalize or retry:N"),
        (["--penalty", "float('inf')"], "--penalty"),
        (["--eval-timeout", "soon"], "--eval-timeout 'soon' is not a number of seconds"),
        (["--eval-timeout", "-1"], "eval_timeout must be > 0"),
        (["--eval-memory", "lots"], "--eval-memory 'lots' is not a size"),
        (["--eval-memory", "10K"], "eval_memory must be at least 1M"),
    ],
)
def test_bad_fault_option_is_a_one_line_usage_error(flags: list[str], says: str) -> None:
    r = run(launcher(*flags, str(JOBS / "exit_plain_mpi.py")), timeout=60)
    assert r.returncode == 2, output(r)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("evocluster: ") and says in lines[0], output(r)
    assert "RESULTS" not in r.stdout, output(r)


OPTIONS_JOB = """
import evocluster
from evocluster import _executor as executor

def main():
    o = executor._launcher
    print("OPTIONS", o.on_error, o.penalty, o.eval_timeout, o.isolate, o.eval_memory,
          o.force_workers)

if __name__ == "__main__":
    main()
"""


def test_fault_options_reach_the_launchers_options(tmp_path: Path) -> None:
    job = tmp_path / "job.py"
    job.write_text(OPTIONS_JOB)
    flags = ["--on-error", "retry:2", "--penalty=(-1e9, 1e9)", "--eval-timeout", "2.5"]
    flags += ["--eval-memory", "512M", "--force-workers", "--workers", "1"]
    r = run(launcher(*flags, str(job)), timeout=60)
    assert r.returncode == 0, output(r)
    assert "OPTIONS retry:2 (-1000000000.0, 1000000000.0) 2.5 True 536870912 True" in r.stdout, (
        output(r)
    )


# ------------------------------------------------------------------ started under nohup
NOHUP_JOB = """
import os, sys, time
import evocluster

def slow(x):
    time.sleep(0.05)
    return x

if __name__ == "__main__":
    where = sys.argv[1]
    ex = evocluster.get_executor()
    futures = [ex.submit(slow, i) for i in range(10)]
    open(os.path.join(where, "master"), "w").close()
    while not os.path.exists(os.path.join(where, "hung-up")):  # the test's SIGHUP has been sent
        time.sleep(0.01)
    print("RESULTS", [f.result() for f in futures], flush=True)
"""


def _as_under_nohup() -> None:
    default_signals()
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def test_a_sighup_ignored_at_start_stays_ignored_as_nohup_means(tmp_path: Path) -> None:
    """``nohup python -m evocluster job.py``: a hangup (the ssh session closing) must not stop
    the run; the launcher leaves an ignored SIGHUP ignored, in the master and its workers."""
    job = tmp_path / "job.py"
    job.write_text(NOHUP_JOB)
    cmd = launcher("--backend", "local", "--workers", "2", str(job), str(tmp_path))
    with started(cmd, preexec_fn=_as_under_nohup) as proc:
        wait_for(tmp_path / "master", proc, "the job did not start")
        os.killpg(proc.pid, signal.SIGHUP)  # a hangup reaches the whole session
        (tmp_path / "hung-up").touch()
        out, err = proc.communicate(timeout=run_timeout(60))
    printed = f"exit code {proc.returncode}\n--- stdout\n{out}\n--- stderr\n{err}"
    assert proc.returncode == 0, printed
    assert f"RESULTS {list(range(10))}" in out and "evocluster:" not in err, printed
