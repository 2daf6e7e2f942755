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
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers import clean_env, default_signals, kill_session, launcher, mpi_command, output, run

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
            [sys.executable, str(script), str(path)], env=env, stdout=subprocess.PIPE, text=True,
            preexec_fn=default_signals,  # noqa: PLW1509 (signal.signal only)
        ) as proc:  # fmt: skip
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


ONEMAX = str(Path(__file__).resolve().parents[2] / "jobs" / "onemax.py")


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
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=default_signals,  # noqa: PLW1509 (the SIGUSR1 sent below: at its default)
    ) as proc:  # fmt: skip
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


# ---------------------------------------------------------------------------- issue 20
def test_an_edited_body_with_a_matching_checksum_is_called_tampering_not_intact(
    tmp_path: Path,
) -> None:
    """An edit to the body with its SHA-256 recomputed in the header was refused as "tampered
    ... although its body is intact": header and body were both changed.  Each message must be
    true: the tampering one names the body as a possibility, the checksum one an edit."""
    import hashlib

    path = written(tmp_path)
    data = path.read_bytes()
    header = checkpoint.read_header(path)
    body = data[-header["body_bytes"] :]
    edited_body = body.replace(b"history", b"hystory")
    assert edited_body != body and len(edited_body) == len(body)
    forged = data[: -len(body)].replace(
        header["body_sha256"].encode(), hashlib.sha256(edited_body).hexdigest().encode()
    )
    path.write_bytes(forged + edited_body)
    err = refused(path, "tampered")
    assert "intact" not in str(err) and "body" in str(err) and "changed" in str(err), str(err)
    path.write_bytes(data[: -len(body)] + edited_body)  # the checksum left as it was
    err = refused(path, "corrupted")
    assert "edited" in str(err), str(err)


def test_a_directory_is_not_a_checkpoint_file(tmp_path: Path) -> None:
    """``--checkpoint adir`` said "exists already ... remove it": a directory is named as one."""
    adir = tmp_path / "adir"
    adir.mkdir()
    err = refused(adir, "not-a-checkpoint")
    assert "directory" in str(err), str(err)
    with pytest.raises(CheckpointError, match="is a directory: give the path of a file"):
        checkpoint.hold(adir)


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    """A directory on a file system mounted read-only (a tmpfs, remounted ro), unmounted after."""
    if os.geteuid() != 0:
        pytest.skip("mounting a read-only file system needs root")
    where = tmp_path / "ro"
    where.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)]
    if subprocess.run(mount, check=False, capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_read_only_file_system_gives_one_checkpoint_error(read_only: Path) -> None:
    """The write's cleanup (unlink of a temporary it never created) raised EROFS and replaced
    the real error, under chained tracebacks: the caller gets CheckpointError, the path and the
    reason, and no OSError in its chain."""
    path = read_only / "run.ckpt"
    with pytest.raises(CheckpointError) as info:
        checkpoint.save(path, STATE, algorithm="generational", seed=3)
    err = info.value
    assert err.reason == "unwritable" and err.path == str(path)
    assert "read-only" in str(err) and str(path) in str(err), str(err)
    assert err.__cause__ is None and err.__suppress_context__, "one traceback, not a chain"
    with pytest.raises(CheckpointError) as info:
        checkpoint.hold(path)  # the lock file cannot be created either
    assert info.value.reason == "unwritable" and "read-only" in str(info.value)


RO_JOB = """
import sys
import evocluster
from evocluster import engine, operators as ops
with evocluster.Executor(backend="serial") as ex:
    engine.generational(lambda g: float(g.sum()), lambda r: ops.random_bits(8, 8, r),
        executor=ex, generations=2, seed=1, crossover=ops.uniform,
        mutate=lambda x, r: ops.bit_flip(x, r, p=0.1), log=None, checkpoint=sys.argv[1])
"""


def test_an_engine_loop_on_a_read_only_file_system_fails_with_one_traceback(
    read_only: Path, tmp_path: Path
) -> None:
    r = run(
        [sys.executable, "-c", RO_JOB, str(read_only / "run.ckpt")],
        env=clean_env(EVOCLUSTER_KEY=KEY),
        cwd=tmp_path,
    )
    assert r.returncode == 1, output(r)
    assert r.stderr.count("Traceback (most recent call last)") == 1, output(r)
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("evocluster.checkpoint.CheckpointError: checkpoint "), output(r)
    assert str(read_only / "run.ckpt") in last and "read-only" in last, output(r)


HOLDER = """
import os, sys, time
from evocluster import checkpoint
checkpoint.REQUEUE_WAIT = float(os.environ.get("WAIT", checkpoint.REQUEUE_WAIT))
try:
    checkpoint.hold(sys.argv[1])
except checkpoint.CheckpointError as e:
    print(f"refused {e.reason}: {e}", flush=True)
    sys.exit(3)
print(f"holding {os.getpid()}", flush=True)
sys.stdin.read()  # until the test closes it (or kills this process)
"""


class Holder:
    """A process holding a checkpoint path (``checkpoint.hold``) until it is killed."""

    def __init__(self, path: Path, **env: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(path)],
            env=clean_env(EVOCLUSTER_KEY=KEY, **env), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
            preexec_fn=default_signals,  # noqa: PLW1509 (signal.signal only)
        )  # fmt: skip
        assert self.proc.stdout is not None
        self.first = self.proc.stdout.readline().strip()

    def close(self) -> None:
        kill_session(self.proc.pid)
        self.proc.communicate(timeout=30)


@pytest.fixture
def holders() -> Iterator[list[Holder]]:
    made: list[Holder] = []
    try:
        yield made
    finally:
        for h in made:
            h.close()


def test_a_path_is_held_by_one_process_until_it_dies(tmp_path: Path, holders: list[Holder]) -> None:
    path = tmp_path / "run.ckpt"
    first = Holder(path)
    holders.append(first)
    assert first.first == f"holding {first.proc.pid}", first.first
    record = json.loads(checkpoint.lock_path(path).read_text())
    assert record["pid"] == first.proc.pid and record["host"] and record["since"]
    second = Holder(path)
    holders.append(second)
    assert second.first.startswith("refused locked:"), second.first
    assert f"pid {first.proc.pid} on {record['host']}" in second.first
    assert second.proc.wait(timeout=30) == 3
    first.proc.kill()  # SIGKILL: the kernel releases its lock
    first.proc.wait(timeout=30)
    third = Holder(path)
    holders.append(third)
    assert third.first == f"holding {third.proc.pid}", third.first


def test_a_requeued_slurm_job_waits_for_its_previous_runs_lock(
    tmp_path: Path, holders: list[Holder]
) -> None:
    """SLURM requeued the job (same job id, SLURM_RESTART_COUNT > 0) while its previous run's
    lock is still held (a dead node's NFS lease): it waits, bounded, instead of being refused.
    Another job is refused at once."""
    path = tmp_path / "run.ckpt"
    old = Holder(path, SLURM_JOB_ID="4242")
    holders.append(old)
    assert old.first.startswith("holding")
    other = Holder(path, SLURM_JOB_ID="77", SLURM_RESTART_COUNT="1")
    holders.append(other)
    assert other.first.startswith("refused locked:") and "SLURM job 4242" in other.first
    gave_up = Holder(path, SLURM_JOB_ID="4242", SLURM_RESTART_COUNT="1", WAIT="0.1")
    holders.append(gave_up)
    assert gave_up.first.startswith("refused locked:") and "still held" in gave_up.first
    requeued = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        env=clean_env(EVOCLUSTER_KEY=KEY, SLURM_JOB_ID="4242", SLURM_RESTART_COUNT="1"),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, preexec_fn=default_signals,  # noqa: PLW1509 (signal.signal only)
    )  # fmt: skip
    try:
        assert requeued.stderr is not None and requeued.stdout is not None
        waiting = requeued.stderr.readline()
        assert "previous run" in waiting and "waiting up to" in waiting, waiting
        old.proc.kill()  # the lease expires: the lock is released
        assert requeued.stdout.readline().strip() == f"holding {requeued.pid}"
    finally:
        kill_session(requeued.pid)
        requeued.communicate(timeout=30)


LEFTOVER = """
import sys
from pathlib import Path
from evocluster import checkpoint

def parts():
    yield b"x" * 1000
    print("writing", flush=True)
    sys.stdin.read()  # in the middle of the write until killed
    yield b"never"

checkpoint._write_atomically(Path(sys.argv[1]), parts())
"""


def test_temporaries_of_a_killed_write_are_removed_by_the_next_holder(tmp_path: Path) -> None:
    path = tmp_path / "run.ckpt"
    with subprocess.Popen(
        [sys.executable, "-c", LEFTOVER, str(path)], env=clean_env(EVOCLUSTER_KEY=KEY),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        preexec_fn=default_signals,  # noqa: PLW1509 (signal.signal only)
    ) as proc:  # fmt: skip
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
        finally:
            proc.kill()  # SIGKILL in the middle of a write
    left = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(left) == 1 and left[0].startswith(".run.ckpt."), left
    other = tmp_path / ".other.ckpt.123.abcdef12.tmp"  # another path's: not ours to remove
    other.write_bytes(b"")
    checkpoint.hold(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name, "run.ckpt.lock"]
