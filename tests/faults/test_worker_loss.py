"""A lost worker (its process killed mid-run) under ``on_worker_loss``: ``fail`` (the default)
breaks the pool; ``continue`` sends what it held to the workers left, and the run ends as if it had
never been lost; losing every worker still breaks the pool.  Real local workers, killed with
SIGKILL by the test while they evaluate (each evaluation says where it runs in a marker file)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import (
    FIXTURES,
    OPENMPI_FLAGS,
    OPENMPI_PYTHON,
    clean_env,
    launcher,
    output,
    require_openmpi,
    run,
    started,
)

import evocluster
from evocluster import BrokenPool, ConfigurationError
from evocluster import _cli as cli
from evocluster import _config as config

JOB = str(FIXTURES / "jobs" / "worker_loss.py")
N = 24


def marks_of(marks: Path) -> list[tuple[int, int]]:
    """``(item, pid)`` of every evaluation started so far."""
    found = []
    for path in marks.iterdir():
        item, _, pid = path.name.partition("-")
        if item.isdigit() and pid.isdigit():
            found.append((int(item), int(pid)))
    return found


def first_pid(
    marks: Path, proc: subprocess.Popen[str] | None, *, but: frozenset[int] = frozenset()
) -> int:
    """The pid of a worker evaluating now (its first marker), other than those in ``but``."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pids = [pid for _, pid in sorted(marks_of(marks)) if pid not in but]
        if pids:
            return pids[0]
        assert proc is None or proc.poll() is None, "the run ended before any evaluation started"
        time.sleep(0.02)
    raise AssertionError("no evaluation started within 60 s")


def run_and_kill(tmp_path: Path, *options: str) -> tuple[int, str, str, int]:
    """The job under the launcher (3 local workers, items of 0.3 s), one worker killed by SIGKILL
    while it evaluates; ``(exit code, stdout, stderr, the killed pid)``."""
    marks = tmp_path / "marks"
    marks.mkdir()
    cmd = launcher("--backend", "local", "--workers", "3", "--quiet", *options, JOB)
    with started([*cmd, str(marks), str(N), "0.3"]) as proc:
        victim = first_pid(marks, proc)
        time.sleep(0.1)  # well inside its evaluation of 0.3 s
        os.kill(victim, signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err, victim


def results_of(out: str) -> list[int]:
    (line,) = [line for line in out.splitlines() if line.startswith("results: ")]
    return json.loads(line.removeprefix("results: "))  # type: ignore[no-any-return]


def test_with_continue_a_killed_worker_costs_the_run_nothing(tmp_path: Path) -> None:
    log = tmp_path / "run.jsonl"
    code, out, err, victim = run_and_kill(
        tmp_path, "--on-worker-loss", "continue", "--log", str(log)
    )
    assert code == 0, f"{code}\n{out}\n{err}"
    assert results_of(out) == [x * x for x in range(N)]  # what a run without the kill gives
    lost = [line for line in err.splitlines() if "lost local worker" in line]
    assert len(lost) == 1, err
    assert lost[0].startswith("evocluster: lost local worker ")
    assert f"(pid {victim}): its " in lost[0] and " go to the 2 workers left" in lost[0]
    assert "SIGKILL" in lost[0]
    failures = [json.loads(line[9:]) for line in out.splitlines() if line.startswith("failure: ")]
    assert failures, out  # it was evaluating: at least that evaluation was sent again
    for f in failures:
        assert f["error"] == "evocluster.errors.WorkerLost", f
        assert f["action"] == "retried" and f["attempt"] == 1, f
        assert f"(pid {victim})" in f["worker"] and " on host " in f["worker"], f
    records = [json.loads(line) for line in log.read_text().splitlines()]
    (loss,) = [r for r in records if r["record"] == "worker_lost"]
    assert f"(pid {victim})" in loss["worker"] and loss["left"] == 2, loss
    assert loss["evaluations"] == len(failures), loss
    logged = [r for r in records if r["record"] == "failure"]
    assert sorted(r["item"] for r in logged) == sorted(f["item"] for f in failures)
    (end,) = [r for r in records if r["record"] == "end"]
    assert end["exit_code"] == 0 and end["evaluations"] >= N, end


def test_by_default_a_killed_worker_fails_the_run_with_broken_pool(tmp_path: Path) -> None:
    code, out, err, victim = run_and_kill(tmp_path)
    assert code == 1, f"{code}\n{out}\n{err}"
    assert "BrokenPool" in err and f"(pid {victim}) was lost" in err and "SIGKILL" in err
    assert not [line for line in out.splitlines() if line.startswith("results: ")], out


def _marks_and_sleeps(x: int, marks: str, seconds: float) -> int:
    with open(os.path.join(marks, f"{x}-{os.getpid()}"), "w"):
        pass
    time.sleep(seconds)
    return x * x


def test_every_worker_lost_breaks_the_pool_naming_each_loss(tmp_path: Path) -> None:
    with evocluster.Executor(2, on_worker_loss="continue") as ex:
        out: dict[str, BaseException] = {}

        def mapping() -> None:
            try:
                list(ex.map(_marks_and_sleeps, range(6), [str(tmp_path)] * 6, [5.0] * 6))
            except BaseException as e:
                out["error"] = e

        t = threading.Thread(target=mapping)
        t.start()
        first = first_pid(tmp_path, None)
        second = first_pid(tmp_path, None, but=frozenset({first}))
        os.kill(first, signal.SIGKILL)
        time.sleep(0.5)  # the first loss is seen: its work goes to the second worker
        os.kill(second, signal.SIGKILL)
        t.join(60)
        assert not t.is_alive()
        error = out.get("error")
        assert isinstance(error, BrokenPool), error
        assert "every worker was lost" in str(error)
        assert f"(pid {first})" in str(error) and f"(pid {second})" in str(error)
        assert [f.error for f in ex.failures][:1] == ["evocluster.errors.WorkerLost"]
        with pytest.raises(BrokenPool):
            ex.submit(abs, -1)


def _fails_first_after_go(x: int, marks: str) -> int:
    """Item 0 waits for ``go``, then fails its first attempt; the others sleep 2 or 30 ms
    (uneven: a retry then waits for an idle worker rather than queue behind a busy one)."""
    with open(os.path.join(marks, f"{x}-{os.getpid()}"), "w"):
        pass
    if x != 0:
        time.sleep(0.002 if x % 2 else 0.03)
        return x
    while not os.path.exists(os.path.join(marks, "go")):
        time.sleep(0.01)
    try:
        fd = os.open(os.path.join(marks, "failed"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return x
    os.close(fd)
    raise RuntimeError("first attempt fails")


def test_a_retry_avoiding_its_worker_goes_back_to_it_when_the_others_are_dead(
    tmp_path: Path,
) -> None:
    """Item 0 fails on worker A; its retry avoids A, where there is another worker: here the
    other one was lost meanwhile, so A takes it (and the run does not wait for ever)."""
    with evocluster.Executor(2, on_worker_loss="continue", on_error="retry:1") as ex:
        teach = tmp_path / "teach"
        teach.mkdir()
        # both workers up, and the function's durations known to be uneven
        assert list(ex.map(_fails_first_after_go, range(1, 9), [str(teach)] * 8)) == [*range(1, 9)]
        results: list[int] = []
        t = threading.Thread(
            target=lambda: results.extend(
                ex.map(_fails_first_after_go, range(8), [str(tmp_path)] * 8)
            )
        )
        t.start()
        deadline = time.monotonic() + 60
        while not any(item == 0 for item, _ in marks_of(tmp_path)):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        (a,) = [pid for item, pid in marks_of(tmp_path) if item == 0]
        b = first_pid(tmp_path, None, but=frozenset({a}))
        os.kill(b, signal.SIGKILL)
        time.sleep(0.5)
        (tmp_path / "go").touch()
        t.join(30)
        assert not t.is_alive(), "the retry waits for the lost worker"
        assert results == list(range(8))
        kinds = {(f.error, f.action, f.attempt) for f in ex.failures}
        assert ("builtins.RuntimeError", "retried", 1) in kinds, ex.failures
        assert {f.error for f in ex.failures} <= {
            "builtins.RuntimeError",
            "evocluster.errors.WorkerLost",
        }


def test_the_option_is_checked_wherever_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    assert config.resolve().on_worker_loss == "fail"
    assert config.resolve(on_worker_loss="continue").on_worker_loss == "continue"
    with pytest.raises(ConfigurationError, match="on_worker_loss must be fail or continue"):
        evocluster.Executor(1, on_worker_loss="go on")
    monkeypatch.setenv("EVOCLUSTER_ON_WORKER_LOSS", "continue")
    assert config.resolve().on_worker_loss == "continue"
    # MPI cannot outlive a rank: refused, not silently ignored
    monkeypatch.setenv("PMI_SIZE", "3")
    with pytest.raises(ConfigurationError, match="cannot work under this MPI launcher"):
        cli.backend_rule(config.resolve())
    # ... except where the launcher lets the job outlive it (Open MPI's --enable-recovery)
    monkeypatch.setenv("OMPI_MCA_orte_enable_recovery", "1")
    assert cli.backend_rule(config.resolve()) == "mpi"
    monkeypatch.delenv("OMPI_MCA_orte_enable_recovery")
    monkeypatch.setenv("EVOCLUSTER_ON_WORKER_LOSS", "fail")
    assert cli.backend_rule(config.resolve()) == "mpi"


def test_a_bad_flag_value_is_a_one_line_usage_error(tmp_path: Path) -> None:
    r = run(launcher("--on-worker-loss", "maybe", JOB, str(tmp_path), "1", "0"), 60)
    assert r.returncode == 2, output(r)
    assert "on_worker_loss must be fail or continue, not 'maybe'" in r.stderr
    r = run([sys.executable, "-m", "evocluster", "--help"], 60, env=clean_env())
    assert "--on-worker-loss" in r.stdout and "EVOCLUSTER_ON_WORKER_LOSS" in r.stdout


def scoop_kill(tmp_path: Path, kills: int) -> tuple[int, str, str, set[int]]:
    """The job under ``python -m scoop -n 4`` (3 workers) with ``EVOCLUSTER_ON_WORKER_LOSS=
    continue``, ``kills`` of its workers killed by SIGKILL while they evaluate."""
    marks = tmp_path / "marks"
    marks.mkdir()
    env = clean_env(XDG_CONFIG_HOME=str(tmp_path / "xdg"), EVOCLUSTER_ON_WORKER_LOSS="continue")
    cmd = [sys.executable, "-m", "scoop", "-n", "4", JOB, str(marks), "30", "0.3"]
    killed: set[int] = set()
    with started(cmd, env=env) as proc:
        while len(killed) < kills:
            victim = first_pid(marks, proc, but=frozenset(killed))
            time.sleep(0.1)
            os.kill(victim, signal.SIGKILL)
            killed.add(victim)
        out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err, killed


@pytest.mark.scoop
def test_scoop_with_continue_a_killed_worker_costs_the_run_nothing(tmp_path: Path) -> None:
    code, out, err, (victim,) = scoop_kill(tmp_path, 1)
    assert code == 0, f"{code}\n{out}\n{err}"
    assert results_of(out) == [x * x for x in range(30)]
    lost = [line for line in err.splitlines() if line.startswith("evocluster: lost ")]
    assert len(lost) == 1, err
    assert "SCOOP worker on host " in lost[0] and f"(pid {victim})" in lost[0], lost
    assert "go again to the 2 workers left" in lost[0], lost
    failures = [json.loads(line[9:]) for line in out.splitlines() if line.startswith("failure: ")]
    assert failures, out  # it was evaluating: that evaluation's first sending never answered
    for f in failures:
        assert f["error"] == "evocluster.errors.WorkerLost" and f["action"] == "retried", f
        assert f"(pid {victim})" in f["worker"], f


@pytest.mark.scoop
def test_scoop_every_worker_killed_breaks_the_pool(tmp_path: Path) -> None:
    code, out, err, killed = scoop_kill(tmp_path, 3)
    assert code == -signal.SIGTERM, f"{code}\n{out}\n{err}"  # the run failed (see test_scoop)
    assert not [line for line in out.splitlines() if line.startswith("results: ")], out
    assert "BrokenPool" in out + err and "every worker was lost" in out + err
    assert all(f"(pid {pid})" in out + err for pid in killed)


def openmpi_kill(tmp_path: Path, *flags: str) -> tuple[int, str, str, int]:
    """The job under Open MPI's ``mpirun FLAGS -n 4`` (3 worker ranks, items of 0.3 s) with
    ``--on-worker-loss continue``, one worker rank killed by SIGKILL while it evaluates."""
    marks = tmp_path / "marks"
    marks.mkdir()
    cmd = [require_openmpi(), *OPENMPI_FLAGS, *flags, "-n", "4", str(OPENMPI_PYTHON)]
    cmd += ["-m", "evocluster", "--quiet", "--on-worker-loss", "continue"]
    with started([*cmd, JOB, str(marks), str(N), "0.3"]) as proc:
        victim = first_pid(marks, proc)
        time.sleep(0.1)  # well inside its evaluation of 0.3 s
        os.kill(victim, signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err, victim


@pytest.mark.mpi
def test_open_mpi_with_recovery_and_continue_a_killed_rank_costs_the_run_nothing(
    tmp_path: Path,
) -> None:
    """Where the MPI launcher lets the job outlive a rank (Open MPI's ``mpirun
    --enable-recovery``), a worker rank killed mid-run is survived as a local worker is: what
    it held goes to the ranks left, the results are those of a run without the kill, exit 0,
    and the job ends (no hang in ``MPI_Finalize``)."""
    code, out, err, victim = openmpi_kill(tmp_path, "--enable-recovery")
    assert code == 0, f"{code}\n{out}\n{err}"
    assert results_of(out) == [x * x for x in range(N)]
    lost = [line for line in err.splitlines() if line.startswith("evocluster: lost ")]
    assert len(lost) == 1 and f"(pid {victim})" in lost[0], err
    assert " go to the 2 workers left" in lost[0], lost[0]


@pytest.mark.mpi
def test_open_mpi_without_recovery_refuses_continue(tmp_path: Path) -> None:
    """Without ``--enable-recovery`` Open MPI ends every rank when one dies: ``continue`` is
    refused at once (a usage error), not accepted and then broken by the launcher."""
    cmd = [require_openmpi(), *OPENMPI_FLAGS, "-n", "2", str(OPENMPI_PYTHON), "-m", "evocluster"]
    r = run([*cmd, "--on-worker-loss", "continue", JOB, str(tmp_path), "1", "0"], 60)
    assert r.returncode != 0, output(r)
    assert "cannot work under this MPI launcher" in r.stderr, output(r)
    assert "--enable-recovery" in r.stderr, output(r)
