"""A map's input that never ends (issue 20, item 11): ``ex.map(f, itertools.count(), timeout=2)``
never returned, deaf to SIGINT and SIGTERM, while the master's memory grew by gigabytes a second
(``list(iterable)`` reads in C until the input ends; Python runs signal handlers only between
bytecodes).  The input is read in steps: a signal ends the read as it ends the run, and a
``timeout=`` bounds it (``TimeoutError``), for ``Executor.map``/``starmap`` and
``evocluster.map``/``starmap``, whatever the backend.

Each job caps its master's address space 3 GiB above what it uses, so that a read that never
ends fails on the cap (MemoryError) rather than taking the machine's memory; a signal that only
took effect after that (as before: the thread that sends it waits for the read too, which holds
the GIL) is told apart by the MemoryError.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import declare, launcher, output, run

JOB = """\
import itertools, os, resource, signal, sys, threading

import evocluster


def cap_memory():
    with open("/proc/self/status") as fh:
        used = next(int(line.split()[1]) << 10 for line in fh if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (used + (3 << 30), resource.RLIM_INFINITY))


def pow2(x, y=2):
    return x ** y


if __name__ == "__main__":
    how = sys.argv[1]
    ex = evocluster.get_executor()
    assert evocluster.map(abs, [-1, -2]) == [1, 2]  # the workers are up (and their threads)
    cap_memory()
    if how == "timeout":
        calls = {
            "map": lambda: ex.map(abs, itertools.count(), timeout=0.3),
            "map2": lambda: ex.map(pow2, itertools.count(), itertools.repeat(3), timeout=0.3),
            "starmap": lambda: ex.starmap(pow2, zip(itertools.count(), itertools.count()),
                                          timeout=0.3),
        }
        for name, call in calls.items():
            try:
                call()
            except TimeoutError as e:
                print(name, "TimeoutError:", e, flush=True)
        print("then", evocluster.map(abs, [-3]), list(ex.map(pow2, range(3), timeout=60)))
    else:  # a signal to the master while it reads an endless input
        signum = getattr(signal, how)
        threading.Timer(0.3, os.kill, (os.getpid(), signum)).start()
        reader = evocluster.starmap if len(sys.argv) > 2 else evocluster.map
        try:
            reader(abs, itertools.count() if reader is evocluster.map else zip(itertools.count()))
        except MemoryError:  # read in C to the cap: the signal (its thread, too) had to wait
            print("the read ran out of memory", flush=True)
            raise
        except KeyboardInterrupt:  # the launcher's, for SIGINT and SIGTERM alike
            print("the read was interrupted", flush=True)
            raise
"""

#: the signals this test sends, at their defaults in the run (the test process may ignore one:
#: a script's background job ignores SIGINT), then the launcher's command
DEFAULTS = [
    sys.executable,
    "-c",
    "import os, signal, sys\n"
    "for s in (signal.SIGINT, signal.SIGTERM): signal.signal(s, signal.SIG_DFL)\n"
    "os.execvp(sys.argv[1], sys.argv[1:])",
]

WHERE = {
    "serial": ["--backend", "serial"],
    "local": ["--backend", "local", "--workers", "2"],
    "mpich-wheel": [],
}


def _run(tmp_path: Path, where: str, *args: str) -> subprocess.CompletedProcess[str]:
    job = tmp_path / "job.py"
    job.write_text(JOB)
    cmd = launcher(*WHERE[where], str(job), *args, mpi=3 if where.startswith("mpich") else None)
    return run([*DEFAULTS, *cmd], timeout=90, cwd=tmp_path, no_leftovers=True)


@pytest.mark.parametrize("where", declare(WHERE, mpi=["mpich-wheel"]))
def test_a_timeout_bounds_the_read_of_an_endless_input(tmp_path: Path, where: str) -> None:
    r = _run(tmp_path, where, "timeout")
    assert r.returncode == 0, output(r)
    lines = r.stdout.splitlines()
    for name in ("map", "map2", "starmap"):
        said = [line for line in lines if line.startswith(f"{name} TimeoutError:")]
        assert len(said) == 1 and "is an iterable endless?" in said[0], output(r)
    assert "then [3] [0, 1, 4]" in lines, output(r)


@pytest.mark.parametrize("where", ["local", pytest.param("mpich-wheel", marks=pytest.mark.mpi)])
@pytest.mark.parametrize(
    ("name", "call"), [("SIGINT", "map"), ("SIGTERM", "map"), ("SIGINT", "starmap")]
)
def test_a_signal_ends_the_read_of_an_endless_input(
    tmp_path: Path, where: str, name: str, call: str
) -> None:
    """(``starmap`` read its input in a Python loop already: the signal ended it.)"""
    signum = signal.Signals[name]
    r = _run(tmp_path, where, name, *(["starmap"] if call == "starmap" else []))
    assert r.returncode == 128 + signum, output(r)
    assert f"evocluster: interrupted ({name})" in r.stderr, output(r)
    assert r.stdout.splitlines() == ["the read was interrupted"], output(r)
