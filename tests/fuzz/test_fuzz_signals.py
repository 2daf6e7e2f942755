"""Fault injection at random points: signals to the master (or to ``mpiexec``) during a map, during
the checkpoint writes of an engine loop and during the exit, and SIGKILL of a worker or of its
isolated child, on a local pool, serial and MPI; Hypothesis draws the signal, the target, the
delay and a second signal.

Invariants, every time:

* the run ends within its time limit (a hang is killed with its session and fails the test);
* its exit code is a documented one: 0 (the signal came too late to matter), 1 (a lost worker:
  ``BrokenPool``), 75 (an engine loop stopped by SIGUSR1/SIGTERM and checkpointed), 128 + n
  (stopped by signal n, as the signal itself or through ``MPI_Abort``); a non-zero exit says why
  on stderr, naming the signal or the lost worker;
* nothing is left: no process of the run's session, no new /dev/shm segment, no checkpoint
  temporary (``.<name>.*.tmp``) once a later run used the same path;
* an engine run stopped at any point and resumed with ``--resume`` (on another backend, drawn)
  ends with the digest of an uninterrupted run computed in this process, or refuses clearly
  (``--resume`` of a checkpoint never written: exit 2); a map run that is not stopped prints the
  builtin map's results (penalties only for evaluations recorded as failed).

Budgets, seeds and how to run longer: ``tests/fuzz/fuzz_support.py``.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import fuzz_signal_job
import helpers
import pytest
from fuzz_support import (
    Campaign,
    ShmWatch,
    command,
    fuzz,
    fuzz_timeout,
    launched,
    shown_command,
    tagged,
    tagged_left,
    tagged_processes,
    tmp_left,
)
from hypothesis import given
from hypothesis import strategies as st

import evocluster

JOB = str(helpers.FIXTURES / "fuzz_signal_job.py")
KEY = "f" * 40  # checkpoints are signed: the same key for the stopped and the resumed run
ENV = helpers.clean_env(EVOCLUSTER_KEY=KEY)
SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGKILL]
NAMES: dict[int, str] = {int(s): s.name for s in SIGNALS}


# ---------------------------------------------------------------------------- one signalled run
#: runs that were sent at least one signal, by test: each test checks that some were (a target
#: never found, or every signal planned after the run's end, would pass without testing anything)
SIGNALLED: dict[str, int] = {}


def _count_signalled(r: Signalled) -> None:
    if r.sent and helpers.current_test is not None:
        key = helpers.current_test.nodeid
        SIGNALLED[key] = SIGNALLED.get(key, 0) + 1


def assert_some_were_signalled() -> None:
    key = helpers.current_test.nodeid if helpers.current_test is not None else ""
    assert SIGNALLED.get(key, 0) > 0, "no run was sent a signal: the test tested nothing"


class Signalled:
    """A run and what was done to it: ``returncode``, ``stdout``, ``stderr``, the signals sent
    (``sent``: ``(seconds after the job started, target, signal)``), and what it left."""

    def __init__(self) -> None:
        self.returncode: int  # set once the run has ended
        self.stdout = self.stderr = ""
        self.sent: list[tuple[float, str, int]] = []
        self.problems: list[str] = []


def _targets(session: int, tag: str, master: int | None, kind: str) -> list[int]:
    """Processes of the run to signal: ``master`` (the job's process), ``launcher`` (the
    session's leader: the master itself, or mpiexec), ``worker`` (a local worker or an MPI rank
    other than 0, which MPICH starts in a session of its own: found by the run's tag), ``child``
    (an isolated child)."""
    if kind == "launcher":
        return [session]
    if kind == "master":
        return [master] if master else []
    found = []
    for pid in tagged_processes(tag):
        with contextlib.suppress(OSError):
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            env = Path(f"/proc/{pid}/environ").read_bytes()
            if kind == "child":
                chosen = b"evocluster._isolation" in cmd
            else:  # a local pool's worker, or an MPI rank other than 0
                chosen = b"evocluster._backends.local" in cmd or (
                    b"-m evocluster " in cmd and _rank(env) not in (None, 0)
                )
            if chosen:
                found.append(pid)
    return found


def _rank(environ: bytes) -> int | None:
    for entry in environ.split(b"\0"):
        if entry.startswith(b"PMI_RANK="):
            return int(entry[9:])
    return None


def signalled_run(
    cmd: list[str], where: Path, plan: list[tuple[float, str, int]], timeout: float = 90
) -> Signalled:
    """Run ``cmd`` in ``where`` and, once the job has written ``master.pid``, send each signal of
    ``plan`` (delay from then, target, signal) to a process of the run, as long as it runs."""
    out = Signalled()
    shm = ShmWatch()
    env, tag = tagged(ENV)
    (where / "master.pid").unlink(missing_ok=True)
    limit = helpers.run_timeout(timeout)
    with open(where / "stdout", "w") as so, open(where / "stderr", "w") as se:
        proc = subprocess.Popen(
            shm.wrap(cmd), cwd=where, env=env, stdin=subprocess.DEVNULL, stdout=so, stderr=se,
            start_new_session=True,
            preexec_fn=helpers.default_signals,  # noqa: PLW1509 (only signal.signal runs there)
        )  # fmt: skip
    try:
        helpers._record_session(proc.pid)  # conftest.py checks every session at the end
        master, started = _await_master(proc, where, limit)
        for delay, target, signum in plan:
            time.sleep(max(0.0, started + delay - time.monotonic()))
            if proc.poll() is not None:
                break
            pids = _targets(proc.pid, tag, master, target)
            if pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(random.Random(delay).choice(pids), signum)
                out.sent.append((round(delay, 3), target, signum))
        try:
            proc.wait(timeout=max(1.0, started + limit - time.monotonic()))
        except subprocess.TimeoutExpired:
            out.problems.append(f"the run did not end within {limit:.0f} s (killed)")
    finally:
        deadline = time.monotonic() + 10
        while (
            helpers.session_processes(proc.pid) or tagged_processes(tag)
        ) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = helpers.kill_session(proc.pid) + tagged_left(tag, grace=0.0)
        helpers._record_end(proc.pid)
        proc.wait()
        in_shm = shm.left()
    if left:
        out.problems.append(f"processes left behind: {left}")
    if in_shm:
        out.problems.append(f"left in /dev/shm: {in_shm}")
    out.returncode = proc.returncode
    _count_signalled(out)
    out.stdout = (where / "stdout").read_text()
    out.stderr = (where / "stderr").read_text()
    return out


def _await_master(
    proc: subprocess.Popen[Any], where: Path, limit: float
) -> tuple[int | None, float]:
    """The job's pid, once it has written it (its imports and the pool's start-up are behind it),
    and when that was seen; None if the run ended first."""
    deadline = time.monotonic() + limit
    pidfile = where / "master.pid"
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError, ValueError, IndexError):  # not yet, or half written
            return int(pidfile.read_text().split()[0]), time.monotonic()
        time.sleep(0.01)
    return None, time.monotonic()


def describe(cmd: list[str], r: Signalled) -> str:
    sent = ", ".join(f"{NAMES.get(s, s)} to the {t} at +{d:.2f} s" for d, t, s in r.sent)
    sent = sent or "no signal sent: the run ended first"
    ran = helpers.output(subprocess.CompletedProcess(cmd, r.returncode, r.stdout, r.stderr))
    return (
        f"{shown_command(cmd)}\n  (in a fresh directory; {sent} after the job wrote master.pid)\n"
        f"{ran[-2500:]}"
    )


#: Signals evocluster leaves at their default action, which ends the process at once and silently:
#: the exit status (``-n``, or 128 + n from a shell) is what says why.  SIGKILL, always; SIGUSR1
#: where no engine loop checkpoints (evocluster takes SIGINT, SIGTERM and SIGHUP over from a
#: master of workers, and SIGUSR1 too from a run given --checkpoint).
SILENT = frozenset({signal.SIGKILL})


def code_problem(
    r: Signalled, allowed: set[int], silent: frozenset[int] = SILENT, finished: bool = False
) -> str | None:
    """A documented exit code, and a non-zero one explained on stderr (or, for a signal in
    ``silent`` sent to the run, by the run's death from that very signal).  ``finished``: the
    job printed its result; a signal may then come in the last moments of the interpreter's
    exit, after CPython's finalisation has put every handler back to the default action: death
    by that signal, nothing of the job's lost."""
    sent = {s for *_, s in r.sent}
    # died of a signal sent to it: itself, or (MPICH's mpiexec: "BAD TERMINATION ... EXIT CODE:
    # n", its own exit code then n or another rank's) its master rank
    died_of = {-r.returncode} & sent if r.returncode < 0 else set()
    if "BAD TERMINATION" in r.stdout:
        died_of |= {n for n in sent if f"EXIT CODE: {n}\n" in r.stdout}
    if died_of and (finished or died_of & silent):
        return None
    code = r.returncode if r.returncode >= 0 else 128 - r.returncode
    if code not in allowed:
        return f"exit code {r.returncode}, not one of {sorted(allowed)}"
    if code in (0, 75) or not r.sent:
        return None
    words = [NAMES.get(s, "") for _, _, s in r.sent] + ["worker", "rank", "KeyboardInterrupt"]
    # MPICH's mpiexec says it on stdout: "BAD TERMINATION ... Killed (signal 9)"
    words += [f"(signal {s})" for _, _, s in r.sent]
    if not any(w and w in r.stderr + r.stdout for w in words):
        return f"exit code {r.returncode} and nothing on stderr says why"
    return None


# ---------------------------------------------------------------------------- strategies
STOP_SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1]


@st.composite
def plans(draw: Any, targets: list[str], signals: Sequence[int], span: float) -> list[Any]:
    """One signal at a random point of ``span`` seconds, sometimes a second one soon after (a
    double Ctrl-C, a signal during the first one's handling)."""
    first = (
        draw(st.floats(0, span)),
        draw(st.sampled_from(targets)),
        draw(st.sampled_from(signals)),
    )
    if draw(st.integers(0, 2)) == 0:
        gap = draw(st.sampled_from([0.0, 0.01, 0.05, 0.3]))
        return [first, (first[0] + gap, first[1], draw(st.sampled_from(signals)))]
    return [first]


def _codes(plan: list[Any], backend: str, extra: frozenset[int] = frozenset()) -> set[int]:
    """0, ``extra``, 128 + n for each signal n of ``plan``; under MPI also n: MPICH's mpiexec
    exits with n when it reports a rank killed by signal n."""
    mpi = {s for _, _, s in plan} if backend == "mpi" else set()
    return {0, *extra, *(128 + s for _, _, s in plan), *mpi}


# ---------------------------------------------------------------------------- signals during a map
@pytest.mark.slow
@pytest.mark.timeout(fuzz_timeout(4, 40, 40))
@pytest.mark.parametrize(
    ("backend", "ci"), [("local", 4), pytest.param("mpi", 3, marks=pytest.mark.mpi)]
)
def test_a_signal_at_a_random_point_of_a_map_or_its_exit(
    backend: str, ci: int, tmp_path: Path
) -> None:
    campaign = Campaign()
    n = iter(range(10**6))
    targets = ["master", "launcher"] if backend == "mpi" else ["master"]

    @fuzz(ci=ci, long=40)
    @given(plan=plans(targets, STOP_SIGNALS, 2.5))
    def check(plan: list[Any]) -> None:
        campaign.check(plan, lambda: _map_signal(backend, plan, tmp_path / f"ex{next(n)}"))

    check()
    campaign.finish()
    assert_some_were_signalled()


def _map_signal(backend: str, plan: list[Any], where: Path) -> str | None:
    where.mkdir(parents=True)
    cmd = command(backend, 2, JOB, "map", "--seconds", "1.5")
    r = signalled_run(cmd, where, plan)
    problems = list(r.problems)
    silent = SILENT | {signal.SIGUSR1}
    if backend == "mpi" and any(t == "launcher" for _, t, _ in plan):
        silent |= {s for _, _, s in plan}  # mpiexec is MPICH's: what it dies of is its business
    problem = code_problem(r, _codes(plan, backend), silent, "RESULT ok" in r.stdout)
    if problem:
        problems.append(problem)
    if r.returncode == 0 and "RESULT ok" not in r.stdout:
        problems.append("exit 0 without the builtin map's results")
    return "; ".join(problems) + "\n" + describe(cmd, r) if problems else None


# ---------------------------------------------------------------------------- a worker killed
@pytest.mark.slow
@pytest.mark.timeout(fuzz_timeout(4, 40, 40))
@pytest.mark.parametrize(
    ("backend", "ci"), [("local", 4), pytest.param("mpi", 2, marks=pytest.mark.mpi)]
)
def test_sigkill_of_a_worker_or_its_isolated_child_at_a_random_point(
    backend: str, ci: int, tmp_path: Path
) -> None:
    campaign = Campaign()
    n = iter(range(10**6))

    @fuzz(ci=ci, long=40)
    @given(example=kill_examples())
    def check(example: dict[str, Any]) -> None:
        plan, isolate = example["plan"], example["isolate"]
        campaign.check(
            example, lambda: _worker_kill(backend, plan, isolate, tmp_path / f"ex{next(n)}")
        )

    check()
    campaign.finish()
    assert_some_were_signalled()


@st.composite
def kill_examples(draw: Any) -> dict[str, Any]:
    """SIGKILL of a worker, or (under isolation only: there is none without) of its child."""
    isolate = draw(st.booleans())
    targets = ["worker", "child"] if isolate else ["worker"]
    return {"plan": draw(plans(targets, [signal.SIGKILL], 2.0)), "isolate": isolate}


def _worker_kill(backend: str, plan: list[Any], isolate: bool, where: Path) -> str | None:
    where.mkdir(parents=True)
    flags = ["--isolate", "--on-error", "penalize", "--penalty=-1"] if isolate else []
    cmd = command(backend, 2, *flags, JOB, "map", "--seconds", "1.5")
    r = signalled_run(cmd, where, plan)
    problems = list(r.problems)
    killed_child = all(t == "child" for _, t, _ in r.sent) and isolate
    # a child killed under isolation costs one evaluation (penalized): the run goes on
    allowed = {0} if killed_child else _codes(r.sent, backend, frozenset({1}))
    problem = code_problem(r, allowed, finished="RESULT ok" in r.stdout)
    if problem:
        problems.append(problem)
    if r.returncode == 0 and "RESULT ok" not in r.stdout:
        problems.append("exit 0 without the builtin map's results (or penalties not recorded)")
    return "; ".join(problems) + "\n" + describe(cmd, r) if problems else None


# ---------------------------------------------------------------------------- checkpoints
LOOP = {"gens": 8, "pop": 24, "genes": 20000, "seed": 5}
_reference: list[str] = []


def reference() -> str:
    """The digest of an uninterrupted run, computed in this process on a serial executor."""
    if not _reference:
        with evocluster.Executor(backend="serial") as ex:
            r = fuzz_signal_job.loop(ex, LOOP["gens"], LOOP["pop"], LOOP["genes"], LOOP["seed"])
        _reference.append(f"DIGEST {r.digest()} {r.state.evaluations}")
    return _reference[0]


CKPT_BACKENDS = ["serial", "local", "mpi"]


@st.composite
def checkpoint_examples(draw: Any, backend: str) -> dict[str, Any]:
    signals = [signal.SIGUSR1, signal.SIGTERM, signal.SIGINT, signal.SIGKILL]
    return {
        "plan": draw(plans(["master"], signals, 3.0)),
        "every": draw(st.sampled_from(["0", "0", "0.2", "5"])),
        "resume_on": draw(
            st.sampled_from(["serial", "local"] + (["mpi"] if backend == "mpi" else []))
        ),
    }


@pytest.mark.slow
@pytest.mark.timeout(fuzz_timeout(3, 30, 90))
@pytest.mark.parametrize(
    ("backend", "ci"), [("local", 3), ("serial", 2), pytest.param("mpi", 2, marks=pytest.mark.mpi)]
)
def test_a_signal_during_checkpoint_writes_then_resume_ends_as_uninterrupted(
    backend: str, ci: int, tmp_path: Path
) -> None:
    campaign = Campaign()
    n = iter(range(10**6))
    ref = reference()

    @fuzz(ci=ci, long=30)
    @given(example=checkpoint_examples(backend))
    def check(example: dict[str, Any]) -> None:
        where = tmp_path / f"ex{next(n)}"
        campaign.check(example, lambda: _checkpointed(backend, example, where, ref))

    check()
    campaign.finish()
    assert_some_were_signalled()


def _checkpointed(backend: str, example: dict[str, Any], where: Path, ref: str) -> str | None:
    where.mkdir(parents=True)
    args = [f"--{k}={v}" for k, v in LOOP.items()]
    every = ["--checkpoint-every", example["every"]]
    cmd = command(backend, 2, "--checkpoint", "run.ckpt", *every, JOB, "engine", *args)
    r = signalled_run(cmd, where, example["plan"])
    problems = list(r.problems)
    stop = frozenset({75} if {s for _, _, s in r.sent} & {signal.SIGUSR1, signal.SIGTERM} else ())
    # after the loop has ended (its digest printed) SIGUSR1 is back at its default action
    finished = ref in r.stdout or (where / "loop.done").exists()  # (mpiexec may lose stdout)
    silent = SILENT | {signal.SIGUSR1} if finished else SILENT
    problem = code_problem(r, _codes(example["plan"], backend, stop), silent, finished)
    if problem:
        problems.append(problem)
    if r.returncode == 0 and ref not in r.stdout:
        problems.append(f"exit 0 without the uninterrupted run's {ref}")
    if problems:
        return "; ".join(problems) + "\n" + describe(cmd, r)
    return _resumed(example, where, args, ref, cmd, r)


def _resumed(
    example: dict[str, Any], where: Path, args: list[str], ref: str, first: list[str], r: Signalled
) -> str | None:
    """Resume (or start again, if no checkpoint was written) on the drawn backend: the
    uninterrupted run's digest, and no temporaries left beside the checkpoint."""
    ckpt = where / "run.ckpt"
    resume = ["--resume"] if ckpt.exists() else []
    cmd = command(
        example["resume_on"], 2, "--checkpoint", "run.ckpt", *resume, JOB, "engine", *args
    )
    again, problems = launched(cmd, where, 120, ENV)
    if again.returncode != 0 or ref not in again.stdout:
        problems.append(f"the resumed run did not end with the uninterrupted run's {ref}")
    left = tmp_left(ckpt)
    if left:
        problems.append(f"checkpoint temporaries left after the resumed run: {left}")
    if not problems:
        return None
    return (
        "; ".join(problems)
        + f"\nfirst:\n{describe(first, r)}\nthen: {shown_command(cmd)}\n"
        + helpers.output(again)[-2500:]
    )
