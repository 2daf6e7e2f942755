"""The SCOOP backend: real ``python -m scoop`` runs (subprocesses with timeouts) and the signing
layer in process.

The conformance suite runs under SCOOP from ``test_conformance.py``; here: exit status after
failures (which SCOOP's launcher would report as 0), worker loss, waits that return the first
settled future, forged payloads, serialisation policies, the example jobs giving the same results
as serial runs, and the key file.  Every SCOOP run gets its own key directory
(``XDG_CONFIG_HOME``), and must leave no process behind.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from helpers import FIXTURES, JOBS, clean_env, launcher, output, run
from hypothesis import given, settings
from hypothesis import strategies as st

import evocluster
from evocluster import ConfigurationError, WorkerError
from evocluster import _signing as signing
from evocluster._backends.scoop import pool as backend

SCOOP_JOBS = FIXTURES / "jobs"
EXIT_JOB = str(SCOOP_JOBS / "scoop_exit.py")
#: how the launcher ends after evocluster ended a failed run: by SIGTERM (a shell shows 143)
FAILED = -signal.SIGTERM


# ------------------------------------------------------------------ running SCOOP
@pytest.fixture(scope="module")
def key_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private XDG_CONFIG_HOME: the runs create their key there, not in the real home."""
    return tmp_path_factory.mktemp("xdg")


def scoop_run(
    args: list[str], key_home: Path, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    """``python -m scoop ARGS`` to its end, in its own session; fail the test if it hangs or
    leaves a process behind."""
    cmd = [sys.executable, "-m", "scoop", *args]
    return run(cmd, timeout, env=clean_env(XDG_CONFIG_HOME=str(key_home), **env), no_leftovers=True)


def evocluster_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("evocluster:")]


@pytest.mark.scoop
# ------------------------------------------------------------------ exit status
@pytest.mark.parametrize("mode", ["ok", "exit0"])
def test_a_run_that_ends_normally_exits_0(mode: str, key_home: Path) -> None:
    r = scoop_run(["-n", "3", EXIT_JOB, mode], key_home)
    assert r.returncode == 0, output(r)
    assert "BACKEND scoop 2" in r.stdout
    assert "RESULT [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]" in r.stdout
    if mode == "ok":  # instances of the job's classes, to the workers and back
        assert "POINTS Point [2, 3]" in r.stdout, output(r)
    assert not evocluster_lines(r.stderr), output(r)


@pytest.mark.scoop
@pytest.mark.parametrize(
    ("mode", "says"),
    [
        ("raise", "the job raised RuntimeError"),
        ("raise-early", "the job raised RuntimeError"),
        ("fitness-raises", "the job raised ValueError"),
        ("exit3", "the job exited with code 3"),
    ],
)
def test_a_failed_job_exits_non_zero_with_one_message(mode: str, says: str, key_home: Path) -> None:
    r = scoop_run(["-n", "3", EXIT_JOB, mode], key_home)
    assert r.returncode == FAILED, output(r)  # SCOOP's launcher alone exits 0 here
    lines = evocluster_lines(r.stderr)
    assert len(lines) == 1 and says in lines[0], output(r)
    assert "exit code 143" in lines[0] and "SCOOP's launcher would exit 0" in lines[0]
    assert "END" not in r.stdout.splitlines()
    if mode == "fitness-raises":  # the worker's traceback and where it ran, as under MPI
        tb = r.stdout + r.stderr
        assert "individual 2 is infeasible" in tb and "in fails\n    raise ValueError" in tb, tb
        assert re.search(r"SCOOP worker on host \S+ \(pid \d+\)", tb), tb


@pytest.mark.scoop
@pytest.mark.parametrize("name", ["fail_scoop.py", "scoop.job.py"])
def test_the_exit_guard_holds_whatever_the_job_file_is_called(
    name: str, key_home: Path, tmp_path: Path
) -> None:
    # the guard found SCOOP's launcher by its command line, and took any argument holding
    # "scoop." for one of SCOOP's own children: a job named so exited 0 after it failed
    job = tmp_path / name
    job.write_text(Path(EXIT_JOB).read_text())
    r = scoop_run(["-n", "2", str(job), "raise"], key_home)
    assert r.returncode == FAILED, output(r)
    (line,) = evocluster_lines(r.stderr)
    assert "the job raised RuntimeError" in line and "exit code 143" in line, line


@pytest.mark.parametrize(
    ("args", "launcher"),
    [
        (["python", "-m", "scoop", "-n", "2", "fail_scoop.py"], True),
        (["python", "-m", "scoop", "scoop.launch.py", "-m", "x"], True),
        (["/usr/bin/python3", "-u", "-W", "ignore", "-X", "dev", "-m", "scoop", "job.py"], True),
        (["python", "-mscoop", "job.py"], True),
        (["python", "-m", "scoop.__main__", "job.py"], True),
        (["python", "-m", "scoop.launch.__main__", "2", "--workerName", "job.py"], False),
        (["python", "-m", "scoop.bootstrap.__main__", "job.py"], False),
        (["python", "job.py", "-m", "scoop"], False),
        (["python", "-c", "import x", "-m", "scoop"], False),
        (["python", "-W", "-m", "scoop"], False),  # -m is the value of -W here
        (["bash", "run_scoop.sh"], False),
        ([], False),
    ],
)
def test_the_launcher_is_recognised_by_the_module_python_runs(
    args: list[str], launcher: bool
) -> None:
    from evocluster._backends.scoop.guard import is_launcher_command

    assert is_launcher_command(args) is launcher


@pytest.mark.scoop
@pytest.mark.parametrize("how", ["kill", "exit"])
def test_a_worker_dying_mid_run_ends_the_run_non_zero(how: str, key_home: Path) -> None:
    r = scoop_run(["-n", "3", str(SCOOP_JOBS / "crash.py"), how], key_home)
    assert r.returncode == FAILED, output(r)
    assert not [line for line in r.stdout.splitlines() if line.startswith("results:")]
    assert "BrokenPool" in r.stdout + r.stderr
    (line,) = evocluster_lines(r.stderr)
    assert "lost a worker" in line and "was lost" in line, line


@pytest.mark.scoop
def test_an_idle_worker_killed_breaks_the_pool_and_the_exit_code(key_home: Path) -> None:
    r = scoop_run(["-n", "3", EXIT_JOB, "kill-idle"], key_home)
    victim = re.search(r"KILLED (\d+)", r.stdout)
    assert victim, output(r)
    assert "BROKEN SCOOP worker on host" in r.stdout and f"(pid {victim[1]}) was lost" in r.stdout
    assert "STILL BROKEN" in r.stdout  # later submissions fail at once, they do not hang
    assert "END" in r.stdout.splitlines()  # the job caught BrokenPool and ended normally...
    assert r.returncode == FAILED, output(r)  # ...yet the run failed
    (line,) = evocluster_lines(r.stderr)
    assert "the job ended normally, but the SCOOP pool lost a worker" in line


@pytest.mark.scoop
def test_a_worker_that_cannot_import_the_job_is_reported(key_home: Path) -> None:
    r = scoop_run(["-n", "3", str(SCOOP_JOBS / "scoop_import_fails.py")], key_home)
    assert r.returncode == FAILED, output(r)
    assert not [line for line in r.stdout.splitlines() if line.startswith("RESULT")]
    assert "could not import the job" in r.stderr
    assert "the licence server is not reachable from this node" in r.stderr
    assert "BrokenPool" in r.stdout + r.stderr


# ------------------------------------------------------------------ launching
def test_backend_scoop_without_scoop_says_how_to_launch(tmp_path: Path) -> None:
    job = tmp_path / "job.py"
    job.write_text(
        "import evocluster\nif __name__ == '__main__':\n    print(evocluster.map(abs, [-1]))\n"
    )
    r = run(launcher("--backend", "scoop", str(job)), 60)
    assert r.returncode == 2, output(r)
    assert "python -m scoop [-n N] job.py" in r.stderr
    # a job started without the launcher: an error, never a silent serial run
    r = run([sys.executable, str(job)], 60, env=clean_env(EVOCLUSTER_BACKEND="scoop"))
    assert r.returncode == 1 and "[1]" not in r.stdout, output(r)
    assert "ConfigurationError" in r.stderr and "python -m scoop [-n N] job.py" in r.stderr


def test_backend_scoop_in_process_without_scoop_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ConfigurationError, match=r"python -m scoop \[-n N\] job\.py"):
        evocluster.Executor(backend="scoop")
    monkeypatch.setenv("EVOCLUSTER_BACKEND", "scoop")
    with pytest.raises(ConfigurationError, match="launch with"):
        evocluster.Executor()


def test_scoop_tcp_backend_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend.scoop, "CONFIGURATION", {"backend": "TCP"})
    monkeypatch.setattr(backend, "_pool", None)
    with pytest.raises(ConfigurationError, match="ZMQ backend"):
        backend.shared_pool(evocluster._config.resolve())


def test_importing_evocluster_does_not_import_scoop() -> None:
    code = "import sys, evocluster; evocluster.Executor; print('scoop' in sys.modules)"
    r = run([sys.executable, "-c", code], 60)
    assert r.stdout.strip() == "False", output(r)


#: Imports scoop without running it, then evocluster; prints whether evocluster changed anything a
#: guard changes (atexit, excepthook, signal handlers, threads, profile and trace hooks).  With
#: "forced", scoop.IS_RUNNING is set first: the control that shows the check sees a guard.
GUARD_PROBE = """
import atexit, json, signal, sys, threading
import scoop, scoop.futures
def state():
    handlers = {}
    for signum in signal.valid_signals():
        try:
            handlers[int(signum)] = signal.getsignal(signum)
        except (OSError, ValueError):
            pass
    return (atexit._ncallbacks(), sys.excepthook, handlers, sys.getprofile(), sys.gettrace(),
            sorted(t.name for t in threading.enumerate()))
if sys.argv[1] == "forced":
    scoop.IS_RUNNING = True
before = state()
import evocluster
after = state()
print(json.dumps({"changed": [i for i, (b, a) in enumerate(zip(before, after)) if b != a],
                  "guard loaded": "evocluster._backends.scoop.guard" in sys.modules}))
"""


@pytest.mark.parametrize("how", ["not running", "forced"])
def test_import_evocluster_starts_no_guard_outside_a_scoop_run(how: str) -> None:
    r = run([sys.executable, "-c", GUARD_PROBE, how], 60)
    assert r.returncode == 0, output(r)
    got = json.loads(r.stdout)
    if how == "not running":  # scoop imported but no SCOOP run: evocluster only defines names
        assert got == {"changed": [], "guard loaded": False}, got
    else:  # what start_guards does in a (here pretended) worker of a SCOOP run: its excepthook
        assert got["guard loaded"] and 1 in got["changed"], got


@pytest.mark.scoop
def test_n1_evaluates_on_the_origin_with_a_warning(key_home: Path) -> None:
    r = scoop_run(["-n", "1", EXIT_JOB, "n1"], key_home)
    assert r.returncode == 0, output(r)
    assert "BACKEND scoop 1" in r.stdout and "PIDS True" in r.stdout
    (line,) = evocluster_lines(r.stderr)
    assert "no worker besides the origin" in line and "-n N" in line


@pytest.mark.scoop
def test_the_origin_does_not_spin_while_it_waits(key_home: Path) -> None:
    r = scoop_run(["-n", "2", EXIT_JOB, "idle-cpu"], key_home)
    assert r.returncode == 0, output(r)
    found = re.search(r"IDLE CPU ([\d.e-]+)", r.stdout)
    assert found, output(r)
    assert float(found[1]) < 0.2  # CPU seconds over a 2 s wait (spinning would be ~2)


@pytest.mark.scoop
@pytest.mark.slow
def test_wait_and_as_completed_return_the_first_settled_future(key_home: Path) -> None:
    # wait(FIRST_COMPLETED / FIRST_EXCEPTION / ALL_COMPLETED), as_completed and result/exception,
    # with and without timeouts: what a steady-state engine waits with (the job asserts on which
    # futures are done, not on clocks)
    r = scoop_run(["-n", "3", str(SCOOP_JOBS / "scoop_first_completed.py")], key_home)
    assert r.returncode == 0, output(r)
    checks = [line for line in r.stdout.splitlines() if line.startswith("CHECK ")]
    assert len(checks) == 9 and "ALL OK" in r.stdout.splitlines(), output(r)
    found = re.search(r"WAIT CPU ([\d.e-]+)", r.stdout)
    assert found and float(found[1]) < 0.2, output(r)  # waiting blocks in zmq: no spinning
    assert not evocluster_lines(r.stderr), output(r)


@pytest.mark.scoop
# ------------------------------------------------------------------ signed payloads
def test_forged_payloads_are_refused_before_unpickling_and_logged(
    key_home: Path, tmp_path: Path
) -> None:
    out, marker = tmp_path / "out.json", tmp_path / "marker"
    r = scoop_run(["-n", "2", str(SCOOP_JOBS / "scoop_forged.py"), str(out), str(marker)], key_home)
    assert r.returncode == 0, output(r)
    report = json.loads(out.read_text())
    assert not marker.exists() and report["marker exists"] is False  # nothing was unpickled
    forged = ["unsigned", "zero tag", "other key", "tag of other frames", "not sealed"]
    for name in forged:
        entry = report[name]
        assert entry["done"] and entry["type"] == "WorkerError", (name, entry)
        assert "refused the task" in entry["message"], (name, entry)
        assert entry["label"].startswith("SCOOP worker on host")
    assert "not a sealed evocluster payload" in report["not sealed"]["message"]
    assert "signature does not verify" in report["other key"]["message"]
    logged = [line for line in evocluster_lines(r.stderr) if "refused a task" in line]
    assert len(logged) == len(forged), r.stderr  # each refusal is logged by the worker
    assert all("it was not unpickled" in line for line in logged)
    assert report["after"] == [0, 1, 4, 9]  # the worker went on serving


class _Marker:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (os.mkdir, (self.path,))


def test_forged_or_replayed_results_are_refused_on_the_origin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, token = b"k" * 40, b"run-1"
    marker = tmp_path / "marker"
    frames = [pickle.dumps((token, 5, "worker", (_Marker(str(marker)),)))]
    with pytest.raises(WorkerError, match="signature does not verify"):
        backend.open_result(key, token, 5, (signing.sign(b"x" * 40, frames), frames))
    assert not marker.exists()
    assert "refused a result" in capsys.readouterr().err
    with pytest.raises(WorkerError, match="not a sealed evocluster result"):
        backend.open_result(key, token, 5, b"junk")
    good = [pickle.dumps((token, 5, "worker", ("result",)))]
    assert backend.open_result(key, token, 5, (signing.sign(key, good), good)) == (
        "worker",
        ("result",),
    )
    with pytest.raises(WorkerError, match="another chunk or run"):  # replayed into chunk 6
        backend.open_result(key, token, 6, (signing.sign(key, good), good))
    with pytest.raises(WorkerError, match="another chunk or run"):  # from another run
        backend.open_result(key, b"run-2", 5, (signing.sign(key, good), good))


# ------------------------------------------------------------------ the key
@pytest.fixture
def keyless(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.delenv(signing.KEY_ENV, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "config" / "evocluster" / "key"


def test_key_file_is_created_private_once_and_reused(keyless: Path) -> None:
    with pytest.raises(ConfigurationError, match="no evocluster key on this host"):
        signing.load_key(create=False)  # a worker never makes a key of its own
    key = signing.load_key()
    assert signing.key_path() == keyless
    assert stat.S_IMODE(keyless.stat().st_mode) == 0o600
    assert stat.S_IMODE(keyless.parent.stat().st_mode) == 0o700
    assert len(key) == 64 and int(key, 16) >= 0
    assert signing.load_key() == key == signing.load_key(create=False)
    assert [p.name for p in keyless.parent.iterdir()] == ["key"]  # no temporary file left


def test_processes_creating_the_key_together_agree(keyless: Path) -> None:
    barrier = threading.Barrier(8)
    keys: list[bytes] = []

    def load() -> None:
        barrier.wait()
        keys.append(signing.load_key())

    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(keys) == 8 and len(set(keys)) == 1


def test_environment_key_wins_and_short_keys_are_refused(
    keyless: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(signing.KEY_ENV, "s" * 40)
    assert signing.load_key() == b"s" * 40
    assert not keyless.exists()  # the file is not needed, so not created
    monkeypatch.setenv(signing.KEY_ENV, "short")
    with pytest.raises(ConfigurationError, match="at least 32"):
        signing.load_key()


def test_a_key_file_others_can_read_is_refused(keyless: Path) -> None:
    signing.load_key()
    keyless.chmod(0o644)
    with pytest.raises(ConfigurationError, match="chmod 600"):
        signing.load_key()


frames_st = st.lists(st.binary(max_size=64), min_size=1, max_size=5)


@settings(max_examples=80, deadline=None)
@given(frames_st, st.data())
def test_any_change_breaks_the_tag(frames: list[bytes], data: st.DataObject) -> None:
    key = b"k" * 32
    tag = signing.sign(key, frames)
    assert signing.verify(key, tag, frames)
    assert signing.verify(key, tag, [bytearray(f) for f in frames])  # any buffer type
    assert not signing.verify(b"j" * 32, tag, frames)
    assert not signing.verify(key, tag, [*frames, b""])  # an extra frame, even empty
    if len(frames) > 1:  # the same bytes, framed differently
        assert not signing.verify(key, tag, [b"".join(frames)])
    i = data.draw(st.integers(0, len(frames) - 1))
    if len(frames[i]) > 1:
        cut = len(frames[i]) // 2
        split = [*frames[:i], frames[i][:cut], frames[i][cut:], *frames[i + 1 :]]
        assert not signing.verify(key, tag, split)
    changed = list(frames)
    changed[i] = frames[i] + b"\0"
    assert not signing.verify(key, tag, changed)
    for bad_tag in (None, "text", tag[:-1], bytearray(tag), 12):
        assert not signing.verify(key, bad_tag, frames)


# ------------------------------------------------------------------ serialisation and jobs
_runs: dict[str, Any] = {}


def _matrix(config: str, key_home: Path, tmp: Path) -> dict[str, Any]:
    if config not in _runs:
        out = tmp / f"matrix-{config}.json"
        job = str(SCOOP_JOBS / "serialization_matrix.py")
        if config == "scoop":
            r = scoop_run(["-n", "3", job, str(out)], key_home, timeout=240)
        else:
            r = run(launcher("--backend", "local", "--workers", "2", job, str(out)), 240)
        assert r.returncode == 0, output(r)
        _runs[config] = json.loads(out.read_text())
    return _runs[config]  # type: ignore[no-any-return]


@pytest.mark.scoop
@pytest.mark.xdist_group("scoop-matrix")  # one run of the matrix, shared
def test_callables_and_policies_behave_as_on_the_local_pool(
    key_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tmp = tmp_path_factory.mktemp("matrix")
    scoop, local = _matrix("scoop", key_home, tmp), _matrix("local", key_home, tmp)
    cases = [k for k in local if "/" in k]
    assert len(cases) > 20
    for case in cases:
        if case.endswith("/strict") and local[case].get("type") == "SerializationError":
            # refused on the master, before dispatch, with the same words as everywhere
            assert scoop[case].get("type") == "SerializationError", (case, scoop[case])
            same = [re.sub(r"0x[0-9a-f]+", "0x..", run[case]["error"]) for run in (scoop, local)]
            assert same[0] == same[1], case
        else:
            assert local[case]["ok"] and scoop[case]["ok"], (case, scoop[case])
    assert scoop["lambda/upgrade"]["ok"] and scoop["closure/upgrade"]["ok"]


@pytest.mark.scoop
@pytest.mark.xdist_group("scoop-matrix")  # one run of the matrix, shared
def test_a_big_closure_is_broadcast_once(
    key_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    big = _matrix("scoop", key_home, tmp_path_factory.mktemp("matrix"))["big closure"]
    assert big["ok"], big
    assert big["functions_sent"] == 1, big  # one broadcast for every worker, not one per task
    assert big["array_bytes"] <= big["bytes_sent"] < 1.5 * big["array_bytes"], big


def _job(name: str, args: list[str], key_home: Path, tmp: Path, scoop: bool) -> dict[str, Any]:
    out = tmp / f"{name}-{'scoop' if scoop else 'serial'}.json"
    job = str(JOBS / name)
    if scoop:
        r = scoop_run(["-n", "3", job, *args, "--json", str(out)], key_home, timeout=240)
    else:
        r = run(launcher("--backend", "serial", job, *args, "--json", str(out)), 240)
    assert r.returncode == 0, output(r)
    return json.loads(out.read_text())  # type: ignore[no-any-return]


@pytest.mark.scoop
@pytest.mark.parametrize(
    ("name", "args", "same"),
    [
        ("onemax.py", ["--ngen", "10", "--pop", "60", "--length", "40"], ["best_fitness"]),
        ("symbreg.py", ["--ngen", "4", "--pop", "60"], ["best_error", "best"]),
    ],
)
def test_example_jobs_give_the_serial_result(
    name: str, args: list[str], same: list[str], key_home: Path, tmp_path: Path
) -> None:
    serial = _job(name, args, key_home, tmp_path, scoop=False)
    scoop = _job(name, args, key_home, tmp_path, scoop=True)
    assert scoop["backend"] == "scoop" and scoop["n_workers"] == 2, scoop
    assert scoop["population_sha256"] == serial["population_sha256"]
    for field in same:
        assert scoop[field] == serial[field], field
