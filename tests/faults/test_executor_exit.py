"""The Executor at the interpreter's exit, as the stdlib documents it, in real processes: no work
accepted once exit has begun, no hang from an executor shut down without waiting, the work of one
never shut down finished, and the process-wide executor closed exactly once."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
from helpers import launcher, mpi_command, output, run

HEADER = """\
import atexit, os, sys, time
import evocluster
from evocluster import Executor

def sleeper(s):
    time.sleep(s)
    return s

def touch(path):
    time.sleep(0.2)
    open(path, "w").close()
    return path
"""


def job(tmp_path: Path, body: str) -> str:
    """A job file whose ``main()`` is ``body``, run under the main guard."""
    main = textwrap.indent(textwrap.dedent(body), "    ")
    path = tmp_path / "job.py"
    path.write_text(f"{HEADER}\n\ndef main():\n{main}\n\nif __name__ == '__main__':\n    main()\n")
    return str(path)


@pytest.mark.parametrize("backend", ["local", "serial"])
def test_submit_after_interpreter_shutdown_began_raises(tmp_path: Path, backend: str) -> None:
    script = job(
        tmp_path,
        f"""
        ex = Executor(backend={backend!r}, workers=1)
        assert ex.submit(abs, -2).result(timeout=60) == 2

        @atexit.register
        def late():
            for call in (lambda: ex.submit(abs, -1), lambda: ex.map(abs, [1])):
                try:
                    call()
                except RuntimeError as e:
                    print("refused:", e, flush=True)
                else:
                    print("accepted", flush=True)
        """,
    )
    r = run([sys.executable, script], timeout=60, no_leftovers=True)
    assert r.returncode == 0, output(r)
    refused = [line for line in r.stdout.splitlines() if line.startswith("refused:")]
    assert len(refused) == 2 and "interpreter shutdown" in refused[0], output(r)


def test_shutdown_without_wait_never_holds_the_exit(tmp_path: Path) -> None:
    script = job(
        tmp_path,
        """
        ex = Executor(backend="local", workers=2)
        futures = [ex.submit(sleeper, 600) for _ in range(3)]
        deadline = time.monotonic() + 60
        while not futures[0].running() and time.monotonic() < deadline:
            time.sleep(0.01)
        ex.shutdown(wait=False)
        print("leaving", futures[0].running(), flush=True)
        """,
    )
    # the evaluations would take 600 s: the exit must not wait for them, nor leave them behind
    r = run([sys.executable, script], timeout=60, no_leftovers=True)
    assert r.returncode == 0, output(r)
    assert "leaving True" in r.stdout, output(r)


def test_work_of_an_executor_never_shut_down_finishes_before_exit(tmp_path: Path) -> None:
    marks = [tmp_path / f"mark{i}" for i in range(4)]
    script = job(
        tmp_path,
        f"""
        ex = Executor(backend="local", workers=2)
        futures = [ex.submit(touch, p) for p in {[str(m) for m in marks]!r}]
        print("submitted", flush=True)
        """,
    )
    r = run([sys.executable, script], timeout=60, no_leftovers=True)
    assert r.returncode == 0, output(r)
    assert all(m.exists() for m in marks), output(r)  # as the stdlib's executors do


def command(how: str, script: str) -> list[str]:
    """``script`` run without the launcher, under it on a local pool or serially, or under MPI."""
    if how == "plain-python":
        return [sys.executable, script]
    if how == "launcher-local":
        return launcher("--backend", "local", "--workers", "2", script)
    if how == "launcher-serial":
        return launcher("--backend", "serial", script)
    return mpi_command("mpich-wheel", 3, script)


BODY_DEFAULT_SHUTDOWN = """
ex = evocluster.get_executor()
assert evocluster.map(abs, [-1, -2]) == [1, 2]
ex.shutdown()
ex.shutdown()
print("done", flush=True)
"""


@pytest.mark.parametrize(
    "how",
    [
        "plain-python",
        "launcher-local",
        "launcher-serial",
        pytest.param("mpi-n3", marks=pytest.mark.mpi),
    ],
)
def test_default_executor_shut_down_then_exit_time_shutdown(tmp_path: Path, how: str) -> None:
    r = run(command(how, job(tmp_path, BODY_DEFAULT_SHUTDOWN)), timeout=90, no_leftovers=True)
    assert r.returncode == 0, output(r)
    assert "done" in r.stdout, output(r)
    assert "Exception ignored" not in r.stderr and "Traceback" not in r.stderr, output(r)


BODY_DEFAULT_AS_CONTEXT = """
with evocluster.get_executor() as ex:
    assert list(ex.map(abs, [-1])) == [1]
# the default executor was shut down by the with block: the next call gets a new handle
assert evocluster.map(abs, [-2, -3]) == [2, 3]
assert evocluster.get_executor().submit(abs, -4).result(timeout=60) == 4
print("done", flush=True)
"""


@pytest.mark.parametrize(
    "how", ["plain-python", "launcher-local", pytest.param("mpi-n3", marks=pytest.mark.mpi)]
)
def test_default_executor_used_as_a_context_manager_then_again(tmp_path: Path, how: str) -> None:
    r = run(command(how, job(tmp_path, BODY_DEFAULT_AS_CONTEXT)), timeout=90, no_leftovers=True)
    assert r.returncode == 0 and "done" in r.stdout, output(r)
