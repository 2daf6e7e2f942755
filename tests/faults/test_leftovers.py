"""Processes a fitness starts and leaves running are ended with their worker, and named in one
line (issue 20, item 6): on a local pool, under MPI and under isolation, a ``sleep`` started with
``subprocess.Popen`` and a daemon that forks twice and calls ``setsid`` (which leaves the run's
session, so the session check of ``helpers.run`` cannot see it: it is looked for by pid).

Before, the local pool waited 10 s at exit for the daemon (it held the worker's socket), the MPI
run waited for both (``mpiexec`` waits for the output pipes they inherited), and under isolation
they survived the run: ``run`` then timed out.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest
from helpers import declare, launch_on, output, run

JOB = """\
import os, subprocess, sys, time
import evocluster

OUT = sys.argv[1]


def note(x, pid):
    with open(os.path.join(OUT, f"pid-{x}"), "w") as fh:
        fh.write(str(pid))


def popen(x):
    note(x, subprocess.Popen(["sleep", "1000"]).pid)
    return x


def daemon(x):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # a session of its own, then fork again and leave: the grandchild is orphaned
        os.close(r)
        os.setsid()
        if os.fork() == 0:
            os.write(w, str(os.getpid()).encode())
            os.close(w)
            time.sleep(1000)
        os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    grandchild = int(os.read(r, 64))
    os.close(r)
    note(x, grandchild)
    return x


if __name__ == "__main__":
    fitness = popen if sys.argv[2] == "popen" else daemon
    print(evocluster.map(fitness, [1, 2, 3, 4]), flush=True)
"""

WHERE = ["local", "local-isolate", "mpich-wheel", "mpich-wheel-isolate"]


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _gone(pids: list[int], within: float = 10.0) -> list[int]:
    """The pids among ``pids`` still running after ``within`` s (init may take a moment to reap
    an orphan's zombie on a loaded machine)."""
    deadline = time.monotonic() + within
    while (left := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


@pytest.mark.parametrize("where", declare(WHERE, mpi=["mpich-wheel", "mpich-wheel-isolate"]))
@pytest.mark.parametrize("kind", ["popen", "daemon"])
@pytest.mark.timeout(150)
def test_what_a_fitness_leaves_running_is_ended_and_named(
    tmp_path: Path, where: str, kind: str
) -> None:
    job = tmp_path / "job.py"
    job.write_text(JOB)
    out = tmp_path / "pids"
    out.mkdir()
    isolate = where.endswith("-isolate")
    cmd = launch_on(where.removesuffix("-isolate"), 2, *(["--isolate"] if isolate else []))
    try:
        r = run([*cmd, str(job), str(out), kind], timeout=90, no_leftovers=True)
        pids = [int(p.read_text()) for p in out.iterdir()]
        left = _gone(pids)
    finally:  # a daemon outside the run's session: never left behind, whatever the outcome
        for path in out.iterdir():
            pid = int(path.read_text() or 0)
            if pid and _alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert r.returncode == 0 and "[1, 2, 3, 4]" in r.stdout, output(r)
    assert len(pids) == 4, output(r)
    assert not left, f"left running: {left}\n{output(r)}"
    lines = [line for line in r.stderr.splitlines() if "a fitness had left running" in line]
    named = {int(w) for line in lines for w in line.replace(",", " ").split() if w.isdigit()}
    assert set(pids) <= named, output(r)  # each one named, with its command line
    assert all(line.startswith("evocluster: ") for line in lines), output(r)
    assert ("sleep 1000" in r.stderr) == (kind == "popen"), output(r)
    assert all(("(isolated, pid" in line) == isolate for line in lines), output(r)


JOB_RAISES = JOB.replace(
    "    print(evocluster.map(fitness, [1, 2, 3, 4]), flush=True)\n",
    "    print(evocluster.map(fitness, [1, 2, 3, 4]), flush=True)\n"
    "    raise RuntimeError('the job fails after its map')\n",
)


@pytest.mark.parametrize("where", ["local", "local-isolate"])
@pytest.mark.timeout(150)
def test_what_a_fitness_leaves_running_dies_with_workers_killed_at_once(
    tmp_path: Path, where: str
) -> None:
    """A failed job's local workers are killed at once (SIGKILL): the processes their fitness
    left running die with them (they had been orphaned to init, for ever)."""
    job = tmp_path / "job.py"
    job.write_text(JOB_RAISES)
    out = tmp_path / "pids"
    out.mkdir()
    isolate = where.endswith("-isolate")
    cmd = launch_on("local", 2, *(["--isolate"] if isolate else []))
    try:
        r = run([*cmd, str(job), str(out), "popen"], timeout=90, no_leftovers=True)
        left = _gone([int(p.read_text()) for p in out.iterdir()])
    finally:
        for path in out.iterdir():
            pid = int(path.read_text() or 0)
            if pid and _alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert r.returncode == 1 and "the job fails after its map" in r.stderr, output(r)
    assert len(list(out.iterdir())) == 4 and not left, f"left running: {left}\n{output(r)}"


REAPER = """\
import os, subprocess, sys, time
from evocluster import _leftovers

_leftovers.REAP_EVERY = 0.0  # every call looks
assert _leftovers.adopt_orphans()
for _ in range(5):  # the shell exits at once: `true` is orphaned, adopted, and exits
    subprocess.run(["sh", "-c", "true &"], check=True)
time.sleep(1.0)


def zombies():
    return [p for p, state in _leftovers.descendants(os.getpid()).items() if state == "Z"]


before = len(zombies())
_leftovers.reap_zombies()  # first look: they are noted
_leftovers.reap_zombies()  # second look: still zombies, reaped
print(before, len(zombies()))
"""


def test_orphans_a_worker_adopted_are_reaped_between_chunks() -> None:
    """A subreaper adopts every orphan of its descendants: those that exit must not pile up as
    zombies (a fitness running ``cmd &`` per evaluation would fill the process table)."""
    r = run([sys.executable, "-c", REAPER], timeout=60, no_leftovers=True)
    assert r.returncode == 0 and r.stdout.split() == ["5", "0"], output(r)
