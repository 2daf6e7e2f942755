"""Checkpoint files: round trip, every way a file can be wrong refused by name before anything is
unpickled, atomic writes under SIGKILL, and a job's own loop resumed after SIGUSR1 giving the
same result as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import clean_env, launcher, mpi_command, output, run

import evocluster
from evocluster import checkpoint
from evocluster.checkpoint import MAGIC, Checkpoint, CheckpointError

KEY = "k" * 40


@pytest.fixture(autouse=True)
def key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVOCLUSTER_KEY", KEY)


STATE = {"population": np.arange(12.0).reshape(3, 4), "generation": 7, "history": [1, 2]}


def written(tmp_path: Path) -> Path:
    path = tmp_path / "run.ckpt"
    checkpoint.save(path, STATE, algorithm="generational", seed=3, extra={"job": "j.py"})
    return path


def test_round_trip_and_header(tmp_path: Path) -> None:
    path = written(tmp_path)
    header, state = checkpoint.load(path, algorithm="generational", seed=3)
    assert np.array_equal(state["population"], STATE["population"])
    assert state["generation"] == 7 and state["history"] == [1, 2]
    assert header["format"] == checkpoint.FORMAT and header["evocluster"] == evocluster.__version__
    assert header["algorithm"] == "generational" and header["seed"] == 3 and header["job"] == "j.py"
    assert KEY not in path.read_bytes().decode("latin-1")  # a fingerprint, never the key
    assert checkpoint.read_header(path)["created"] == header["created"]


def refused(path: Path, reason: str, **kw: object) -> CheckpointError:
    with pytest.raises(CheckpointError) as info:
        checkpoint.load(path, **kw)  # type: ignore[arg-type]
    assert info.value.reason == reason, str(info.value)
    assert str(path) in str(info.value)
    return info.value


def test_truncated_files_are_refused_as_truncated(tmp_path: Path) -> None:
    data = written(tmp_path).read_bytes()
    for cut in (3, len(MAGIC) + 2, len(MAGIC) + 10, len(data) // 2, len(data) - 1):
        path = tmp_path / f"cut{cut}.ckpt"
        path.write_bytes(data[:cut])
        refused(path, "truncated")


def test_a_flipped_body_byte_is_corruption(tmp_path: Path) -> None:
    path = written(tmp_path)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    refused(path, "corrupted")


def test_an_edited_header_is_tampering(tmp_path: Path) -> None:
    path = written(tmp_path)
    data = path.read_bytes()
    # change the seed in the header, keeping its length: the body is intact, the tag is not
    edited = data.replace(b'"seed": 3', b'"seed": 4')
    assert edited != data
    path.write_bytes(edited)
    err = refused(path, "tampered")
    assert "not loaded" in str(err)


def test_another_users_key_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = written(tmp_path)
    monkeypatch.setenv("EVOCLUSTER_KEY", "z" * 40)
    refused(path, "foreign-key")


def test_a_newer_format_is_refused_with_the_version(tmp_path: Path) -> None:
    path = written(tmp_path)
    data = path.read_bytes()
    future = data.replace(b'"format": 1', b'"format": 9')
    path.write_bytes(future)
    err = refused(path, "future-version")
    assert "format 9" in str(err) and "upgrade" in str(err)


def test_other_files_are_not_checkpoints(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello, this is not a checkpoint at all")
    refused(path, "not-a-checkpoint")
    refused(tmp_path / "absent.ckpt", "missing")


def test_another_run_is_refused(tmp_path: Path) -> None:
    path = written(tmp_path)
    refused(path, "mismatch", seed=4)
    refused(path, "mismatch", algorithm="nsga2")


class Boom:
    def __reduce__(self) -> tuple[object, ...]:
        raise RuntimeError("cannot pickle me")


def test_nothing_is_unpickled_before_verification(tmp_path: Path) -> None:
    # a body that would run code when unpickled, with a forged header: refused, never run
    marker = tmp_path / "ran"
    body = (
        b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    )  # pickle protocol 0: os.system("touch ...")
    head = json.dumps(
        {
            "format": 1,
            "body_bytes": len(body),
            "body_sha256": __import__("hashlib").sha256(body).hexdigest(),
            "key": "0" * 16,
        }
    ).encode()
    path = tmp_path / "evil.ckpt"
    path.write_bytes(MAGIC + len(head).to_bytes(4, "big") + head + b"\0" * 32 + body)
    refused(path, "foreign-key")
    assert not marker.exists()


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    path = written(tmp_path)
    before = path.read_bytes()
    with pytest.raises(CheckpointError) as info:
        checkpoint.save(path, {"x": Boom()}, algorithm="generational", seed=3)
    assert info.value.reason == "unwritable"
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["run.ckpt"]  # no temporary file left


WRITER = """
import os, sys
import numpy as np
from evocluster import checkpoint
path = sys.argv[1]
i = 0
while True:
    i += 1
    state = {"i": i, "data": np.full(200_000, float(i))}
    checkpoint.save(path, state, algorithm="writer", seed=1)
    if i == 1:
        print("first", flush=True)
"""


def test_sigkill_at_any_instant_leaves_a_loadable_checkpoint(tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    path = tmp_path / "w.ckpt"
    env = clean_env(EVOCLUSTER_KEY=KEY)
    seen = []
    for delay in (0.05, 0.13, 0.21, 0.34, 0.5, 0.77):
        with subprocess.Popen(
            [sys.executable, str(script), str(path)], env=env, stdout=subprocess.PIPE, text=True
        ) as proc:
            try:
                assert proc.stdout is not None and proc.stdout.readline().strip() == "first"
                time.sleep(delay)  # somewhere in a write, or between two
            finally:
                proc.kill()
                proc.wait(timeout=30)
        _, state = checkpoint.load(path, algorithm="writer", seed=1)
        assert np.all(state["data"] == float(state["i"]))
        seen.append(state["i"])
    assert len(set(seen)) > 1  # the writes went on between the kills
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) <= len(seen)  # a kill mid-write may leave its temporary file, only


LOOP = """
import random, sys, hashlib
import numpy as np
import evocluster
from evocluster.checkpoint import EXIT_TEMPFAIL

path, ngen, stop_at = sys.argv[1], 40, int(sys.argv[2])
ckpt = evocluster.Checkpoint(path, seed=5).watch_signals()
if ckpt.exists():
    state = ckpt.load()
    print("resumed at", state["gen"], flush=True)
else:
    random.seed(5)
    np.random.seed(5)
    state = {"gen": 0, "pop": [random.random() for _ in range(20)]}
while state["gen"] < ngen:
    # a generation: draws from both global generators
    state["pop"] = [x + random.gauss(0, 1) + float(np.random.normal()) for x in state["pop"]]
    state["gen"] += 1
    if state["gen"] == stop_at:
        import os, signal
        os.kill(os.getpid(), signal.SIGUSR1)  # the batch system's warning, mid-run
    if ckpt.stop_requested:
        ckpt.save(state)
        print("checkpointed at", state["gen"], flush=True)
        sys.exit(EXIT_TEMPFAIL)
print("final", hashlib.sha256(repr(state["pop"]).encode()).hexdigest(), flush=True)
"""


def test_a_job_loop_resumed_after_sigusr1_ends_as_an_uninterrupted_one(tmp_path: Path) -> None:
    script = tmp_path / "loop.py"
    script.write_text(LOOP)
    env = clean_env(EVOCLUSTER_KEY=KEY)
    whole = run([sys.executable, str(script), str(tmp_path / "a.ckpt"), "0"], env=env, timeout=60)
    assert whole.returncode == 0, output(whole)
    path = str(tmp_path / "b.ckpt")
    first = run([sys.executable, str(script), path, "13"], env=env, timeout=60)
    assert first.returncode == checkpoint.EXIT_TEMPFAIL, output(first)
    assert "checkpointed at 13" in first.stdout
    second = run([sys.executable, str(script), path, "0"], env=env, timeout=60)
    assert second.returncode == 0, output(second)
    assert "resumed at 13" in second.stdout
    final = [line for line in whole.stdout.splitlines() if line.startswith("final")]
    assert final and final[0] in second.stdout.splitlines(), output(whole) + output(second)


def test_signals_are_restored_to_the_test_process() -> None:
    # watch_signals replaces handlers: make sure this test process still has its own afterwards
    before = signal.getsignal(signal.SIGUSR1)
    ckpt = Checkpoint(os.devnull).watch_signals([signal.SIGUSR1])
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while not ckpt.stop_requested and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ckpt.stop_requested and ckpt.signal == signal.SIGUSR1
    finally:
        signal.signal(signal.SIGUSR1, before)


ONEMAX = str(Path(__file__).resolve().parents[1] / "jobs" / "onemax.py")


def final_hash(stdout: str) -> str:
    lines = [line for line in stdout.splitlines() if line.startswith("population sha256")]
    assert lines, stdout
    return lines[0].split()[-1]


@pytest.mark.mpi  # resumed under mpiexec
def test_onemax_stopped_by_sigusr1_resumes_elsewhere_with_the_same_population(
    tmp_path: Path,
) -> None:
    args = ["--ngen", "12", "--pop", "100"]
    env = clean_env(EVOCLUSTER_KEY=KEY)
    whole = run(launcher("--backend", "serial", ONEMAX, *args), env=env, timeout=120)
    assert whole.returncode == 0, output(whole)
    path = tmp_path / "onemax.ckpt"
    cmd = launcher("--workers", "2", ONEMAX, *args, "--checkpoint", str(path))
    with subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            for line in proc.stdout:  # the batch system's warning, in generation 5
                if line.startswith("gen   5"):
                    proc.send_signal(signal.SIGUSR1)
                    break
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == checkpoint.EXIT_TEMPFAIL, f"{proc.returncode}\n{out}\n{err}"
    assert "checkpointed after generation" in out
    # resumed under MPI with three workers instead of a local pool of two
    resumed = run(
        mpi_command("mpich-wheel", 4, ONEMAX, *args, "--checkpoint", str(path)),
        env=env,
        timeout=120,
    )
    assert resumed.returncode == 0, output(resumed)
    assert "resumed from" in resumed.stdout and "gen   0" not in resumed.stdout
    assert final_hash(resumed.stdout) == final_hash(whole.stdout)


def test_checkpoint_without_a_path_is_the_runs_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Checkpoint()``: the launcher's ``--checkpoint``, else ``EVOCLUSTER_CHECKPOINT`` (what
    ``submit --checkpoint`` exports), else a clear error."""
    monkeypatch.delenv(checkpoint.CHECKPOINT_ENV, raising=False)
    with pytest.raises(evocluster.ConfigurationError, match="needs a path"):
        Checkpoint()
    monkeypatch.setenv(checkpoint.CHECKPOINT_ENV, str(tmp_path / "env.ckpt"))
    assert Checkpoint().path == tmp_path / "env.ckpt"
    assert checkpoint.defaults().path == str(tmp_path / "env.ckpt")
    checkpoint.set_defaults(tmp_path / "launcher.ckpt")
    try:  # the launcher's option wins over the environment
        assert Checkpoint().path == tmp_path / "launcher.ckpt"
    finally:
        checkpoint.set_defaults()


def test_an_engine_loop_checkpoints_where_the_environment_says(tmp_path: Path) -> None:
    """A job run without the launcher (SCOOP's origin, plain python) under ``submit
    --checkpoint``: its engine loops write the file ``EVOCLUSTER_CHECKPOINT`` names."""
    job = tmp_path / "job.py"
    job.write_text(
        "import evocluster\n"
        "from evocluster import engine, operators as ops\n"
        "def fit(g):\n    return float(g.sum())\n"
        "if __name__ == '__main__':\n"
        "    with evocluster.Executor(backend='serial') as ex:\n"
        "        engine.generational(fit, lambda r: ops.random_bits(8, 8, r), executor=ex,\n"
        "            generations=2, seed=1, crossover=ops.uniform,\n"
        "            mutate=lambda x, r: ops.bit_flip(x, r, p=0.1), log=None)\n"
    )
    target = tmp_path / "run.ckpt"
    r = run(
        [sys.executable, str(job)],
        cwd=tmp_path,
        env=clean_env(**{checkpoint.CHECKPOINT_ENV: str(target)}),
    )
    assert r.returncode == 0, output(r)
    assert checkpoint.read_header(target)["algorithm"]
