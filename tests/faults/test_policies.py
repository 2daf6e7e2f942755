"""Failure policies (``on_error``: raise, penalize, retry:N), the failure records, and timeouts
per evaluation, on real local workers (and the serial backend where it matters)."""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import declare, launcher, output, run

import evocluster
from evocluster import ConfigurationError, EvaluationTimeout, Failure

PENALTY = -1.0


def fails_on_multiples_of_7(x: int) -> int:
    if x % 7 == 0:
        raise ValueError(f"bad individual {x}")
    return x * x


def fails_once(x: int, marks: str) -> tuple[int, int]:
    """Fails the first time it sees ``x`` (anywhere), recording the pid of that attempt."""
    mark = Path(marks) / str(x)
    try:
        fd = os.open(mark, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return x, os.getpid()
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    raise RuntimeError(f"first attempt at {x} fails")


def always_fails(x: int) -> int:
    raise KeyError(x)


def sleeps_on_3(x: int) -> int:
    if x == 3:
        time.sleep(120)
    return x


def base_exceptions(x: int) -> int:
    if x == 1:
        sys.exit(0)
    if x == 2:
        raise KeyboardInterrupt
    if x == 3:
        raise SystemExit(3)
    return x


def forks_and_returns(x: int) -> int:
    """The copy returns too: it must never reach the worker's serve loop."""
    pid = os.fork()
    return pid if pid else -x


def _expected(xs: list[int]) -> list[Any]:
    return [PENALTY if x % 7 == 0 else x * x for x in xs]


def test_raise_is_the_default_and_every_failure_is_recorded(local2: Any) -> None:
    xs = list(range(1, 30))
    with pytest.raises(ValueError, match="bad individual 7") as info:
        list(local2.map(fails_on_multiples_of_7, xs))
    assert "local worker" in str(info.value.__cause__)
    handle = local2.with_policy()  # a record of its own, on the same workers
    with pytest.raises(ValueError):
        list(handle.map(fails_on_multiples_of_7, xs))
    records = handle.failures  # those settled before the map was abandoned at the first
    assert 6 in {f.item for f in records} <= {6, 13, 20, 27}
    assert all(f.function.endswith("fails_on_multiples_of_7") for f in records)
    assert {f.action for f in records} == {"raised"}


def test_penalize_gives_the_penalty_and_keeps_every_healthy_result_in_order(local2: Any) -> None:
    ex = local2.with_policy(on_error="penalize", penalty=PENALTY)
    xs = list(range(1, 200))
    assert list(ex.map(fails_on_multiples_of_7, xs)) == _expected(xs)
    records = ex.failures
    assert sorted(f.item for f in records) == [i for i, x in enumerate(xs) if x % 7 == 0]
    first = min(records, key=lambda f: f.item)
    assert isinstance(first, Failure)
    assert first.item == 6 and first.attempt == 1 and first.action == "penalized"
    assert first.error == "builtins.ValueError" and first.message == "bad individual 7"
    assert first.worker.startswith("local worker")
    assert first.function.endswith("fails_on_multiples_of_7")
    assert local2.failures == [] or all(f.action == "raised" for f in local2.failures)


def test_a_failure_of_the_engines_seeded_call_names_the_fitness(local2: Any) -> None:
    """The engine maps ``partial(evocluster.rng.call, fitness, seed)``: its failure records and
    a worker's death line name the fitness, not ``evocluster.rng.call``."""
    ex = local2.with_policy(on_error="penalize", penalty=PENALTY)
    seeded = functools.partial(evocluster.rng.call, fails_on_multiples_of_7, 11)
    values = list(ex.starmap(seeded, [(0, 6), (1, 7)]))
    assert values[0][0] == 36 and values[1] == PENALTY
    (record,) = ex.failures
    assert record.function == f"{__name__}.fails_on_multiples_of_7", record


def test_penalize_without_a_penalty_is_refused_before_anything_runs(local2: Any) -> None:
    ex = local2.with_policy(on_error="penalize")
    before = ex.stats()["items"]
    with pytest.raises(ConfigurationError, match="penalty"):
        ex.map(fails_on_multiples_of_7, [1, 7])
    assert ex.stats()["items"] == before


def test_a_submit_is_penalized_too(local2: Any) -> None:
    ex = local2.with_policy(on_error="penalize", penalty=(-1e9, 1e9))
    assert ex.submit(fails_on_multiples_of_7, 14).result(timeout=60) == (-1e9, 1e9)
    assert ex.submit(fails_on_multiples_of_7, 3).result(timeout=60) == 9
    assert [f.item for f in ex.failures] == [0]


def test_retry_evaluates_again_on_another_worker(local2: Any, tmp_path: Path) -> None:
    ex = local2.with_policy(on_error="retry:2")
    xs = list(range(12))
    out = list(ex.map(fails_once, xs, [str(tmp_path)] * len(xs)))
    assert [x for x, _ in out] == xs
    for x, pid in out:  # the retry ran on the other worker than the failed attempt
        assert pid != int((tmp_path / str(x)).read_text())
    assert sorted((f.item, f.attempt, f.action) for f in ex.failures) == [
        (x, 1, "retried") for x in xs
    ]


def test_retry_then_raise_when_no_penalty(local2: Any) -> None:
    ex = local2.with_policy(on_error="retry:2")
    with pytest.raises(KeyError):
        ex.submit(always_fails, 5).result(timeout=60)
    assert [(f.attempt, f.action) for f in ex.failures] == [
        (1, "retried"),
        (2, "retried"),
        (3, "raised"),
    ]


def test_retry_then_penalize_when_a_penalty_is_set(local2: Any) -> None:
    ex = local2.with_policy(on_error="retry:1", penalty=PENALTY)
    assert list(ex.map(always_fails, [1, 2, 3])) == [PENALTY] * 3
    assert sorted((f.item, f.attempt, f.action) for f in ex.failures) == [
        (i, a, act) for i in range(3) for a, act in ((1, "retried"), (2, "penalized"))
    ]
    assert ex.stats()["retried"] >= 3


def test_a_timeout_interrupts_the_evaluation_and_the_worker_goes_on() -> None:
    with evocluster.Executor(backend="local", workers=1, eval_timeout=1.0) as ex:
        with pytest.raises(EvaluationTimeout, match="eval_timeout"):
            list(ex.map(sleeps_on_3, [1, 2, 3, 4]))
        assert list(ex.map(sleeps_on_3, [5, 6])) == [5, 6]  # the same worker serves on
        pen = ex.with_policy(on_error="penalize", penalty=-99)
        assert list(pen.map(sleeps_on_3, [1, 2, 3, 4])) == [1, 2, -99, 4]
        (record,) = pen.failures
        assert record.error.endswith("EvaluationTimeout") and record.item == 2
        assert record.seconds >= 0.9


@pytest.mark.parametrize("backend", ["local", "serial"])
def test_what_a_fitness_raises_even_base_exceptions_is_that_evaluation_s(backend: str) -> None:
    with evocluster.Executor(
        backend=backend, workers=1, on_error="penalize", penalty=PENALTY
    ) as ex:
        assert list(ex.map(base_exceptions, [0, 1, 2, 3, 4])) == [0, PENALTY, PENALTY, PENALTY, 4]
        errors = [f.error.rsplit(".", 1)[-1] for f in ex.failures]
        assert errors == ["SystemExit", "KeyboardInterrupt", "SystemExit"]


def test_a_fitness_that_forks_leaves_no_copy_serving() -> None:
    with evocluster.Executor(backend="local", workers=1) as ex:
        out = list(ex.map(forks_and_returns, [1, 2, 3]))
        assert len(out) == 3 and all(pid > 0 for pid in out)  # the parent's values, each once
        assert list(ex.map(abs, [-1, -2])) == [1, 2]  # and the worker is sane
    for pid in out:  # the copies end at once (at most a zombie until their parent exits)
        assert _gone_soon(pid), f"the forked copy {pid} is still running"


def _gone_soon(pid: int, within: float = 10.0) -> bool:
    """Whether ``pid`` ends (or is only a zombie) within ``within`` s: "at once" may take a
    moment on a loaded machine."""
    stat = Path(f"/proc/{pid}/stat")
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if stat.read_text().split(")")[1].split()[0] == "Z":
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_options_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVOCLUSTER_ON_ERROR", "penalize")
    monkeypatch.setenv("EVOCLUSTER_PENALTY", "(-1e9, 1e9)")
    with evocluster.Executor(backend="serial") as ex:
        assert ex.map(always_fails, [1]).__next__() == (-1e9, 1e9)
    monkeypatch.setenv("EVOCLUSTER_ON_ERROR", "retry:x")
    with pytest.raises(ConfigurationError, match="retry:N"):
        evocluster.Executor(backend="serial")


def test_the_launcher_applies_its_options_to_evocluster_map_and_sums_up(tmp_path: Path) -> None:
    """``--on-error penalize --penalty=-1`` reaches ``evocluster.map`` (DEAP's toolbox.map) with
    no change to the job, and the run ends with one line counting the failures."""
    job = tmp_path / "job.py"
    job.write_text(
        "import evocluster\n"
        "def f(x):\n"
        "    if x % 4 == 0:\n"
        "        raise ValueError(x)\n"
        "    return x\n"
        "if __name__ == '__main__':\n"
        "    print(evocluster.map(f, range(1, 13)))\n"
    )
    r = run(
        launcher("--backend", "local", "--workers", "2", "--on-error", "penalize", "--penalty=-1",
                 str(job)),
        cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, output(r)
    assert r.stdout.strip() == str([-1 if x % 4 == 0 else x for x in range(1, 13)])
    assert "evocluster: 3 evaluation attempt(s) failed during the run" in r.stderr, output(r)
    plain = run(launcher("--backend", "local", "--workers", "2", str(job)), cwd=tmp_path)
    assert plain.returncode == 1 and "ValueError: 4" in plain.stderr, output(plain)


EXITS_JOB = """\
import os, sys
import evocluster
def f(x):
    if x == 7:
        os._exit(3)
    return x
if __name__ == '__main__':
    print(evocluster.map(f, range(12)))
"""


@pytest.mark.mpi
@pytest.mark.parametrize("where", ["local", pytest.param("mpich-wheel", marks=pytest.mark.mpi)])
def test_os_exit_in_a_fitness_is_that_evaluations_failure_not_the_runs_end(
    tmp_path: Path, where: str
) -> None:
    """Without isolation too: ``os._exit(3)`` in a fitness used to end its worker (under MPICH:
    the whole job, exit code 9, and no word of the code or the item)."""
    job = tmp_path / "job.py"
    job.write_text(EXITS_JOB)
    options = ["--on-error", "penalize", "--penalty=-1"]
    cmd = (
        launcher("--backend", "local", "--workers", "2", *options)
        if where == "local"
        else launcher(*options, mpi=3)
    )
    r = run([*cmd, str(job)], cwd=tmp_path)
    assert r.returncode == 0, output(r)
    assert r.stdout.strip() == str([-1 if x == 7 else x for x in range(12)])
    raised = run([*cmd[: cmd.index("--on-error")], str(job)], cwd=tmp_path)
    assert raised.returncode == 1, output(raised)
    assert "EvaluationCrashed: the fitness called os._exit(3)" in raised.stderr, output(raised)


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


def raises_unprintable(x: int) -> int:
    if x == 1:
        raise Unprintable()
    return x


def test_an_exception_whose_str_raises_fails_its_item_only(local2: Any) -> None:
    ex = local2.with_policy(on_error="penalize", penalty=PENALTY)
    assert list(ex.map(raises_unprintable, [0, 1, 2])) == [0, PENALTY, 2]
    (record,) = ex.failures
    assert (
        record.error.endswith("Unprintable") and "str() of the exception raised" in record.message
    )
    assert list(local2.map(abs, [-3])) == [3]  # the worker is alive


def returns_a_generator(x: int) -> Any:
    return (i for i in range(x))


def test_an_unpicklable_result_names_the_function_the_item_and_what_came_back(
    local2: Any,
) -> None:
    with pytest.raises(evocluster.SerializationError) as info:
        list(local2.map(returns_a_generator, [1, 2]))
    message = str(info.value)
    assert "returns_a_generator, item 0" in message
    assert "returned a builtins.generator" in message


SEGFAULT_JOB = """\
import ctypes, time
import evocluster
def f(x):
    if x == 7:
        ctypes.string_at(0)
    time.sleep(0.02)
    return x
if __name__ == '__main__':
    print(evocluster.map(f, range(20)))
"""


@pytest.mark.mpi
@pytest.mark.parametrize(("crash", "fault", "code"), [
    ("ctypes.string_at(0)", "Segmentation fault", 139), ("os.abort()", "Aborted", 134),
])  # fmt: skip
def test_a_worker_that_dies_under_mpich_is_named_with_its_evaluation(
    tmp_path: Path, crash: str, fault: str, code: int
) -> None:
    """Without isolation, a fatal signal ends an MPICH job, whose launcher kills every rank the
    moment one dies: the dying worker lingers after its fault report, so the master names it
    first (which worker, of what, evaluating which item, where), every time, then ends the job
    with 128 + the signal."""
    job = tmp_path / "job.py"
    job.write_text("import os\n" + SEGFAULT_JOB.replace("ctypes.string_at(0)", crash))
    for _ in range(3):  # it raced the launcher's SIGKILL before, and lost 1 run in ~10
        r = run(launcher(str(job), mpi=3), cwd=tmp_path)
        assert r.returncode == code, output(r)
        said = [ln for ln in r.stderr.splitlines() if ln.startswith("evocluster: MPI worker")]
        assert len(said) == 1, output(r)
        assert re.match(
            r"evocluster: MPI worker rank [12] of 3 on host \S+ \(pid \d+\) died", said[0]
        )
        # item 7, alone or in its chunk (whose items the master cannot tell apart)
        what = re.search(
            rf"died of {fault} while evaluating (item 7|one of items (\d+)-(\d+)) of __main__\.f ",
            said[0],
        )
        assert what, output(r)
        assert what[2] is None or int(what[2]) <= 7 <= int(what[3]), output(r)
        assert f'File "{job}", line 6 in f' in said[0], output(r)
        assert f"evocluster ends the job (exit code {code})" in said[0], output(r)
    (tmp_path / "ok.py").write_text(SEGFAULT_JOB.replace("x == 7", "x == -1"))
    ok = run(launcher(str(tmp_path / "ok.py"), mpi=3), cwd=tmp_path)  # a normal end: no word
    assert ok.returncode == 0 and "evocluster:" not in ok.stderr, output(ok)


FORK_CRASH_JOB = """\
import ctypes, os
import evocluster
def f(x):
    if x == 3:
        pid = os.fork()
        if pid == 0:
            ctypes.string_at(0)  # the copy dies of a segfault; the worker goes on
        os.waitpid(pid, 0)
    return x
if __name__ == '__main__':
    print(evocluster.map(f, range(8)))
"""


@pytest.mark.mpi
def test_a_crash_in_a_copy_the_fitness_forked_is_not_the_workers(tmp_path: Path) -> None:
    """The copy inherits the worker's fault report to the master: it must not be taken for the
    worker's death (the master would end the job)."""
    job = tmp_path / "job.py"
    job.write_text(FORK_CRASH_JOB)
    r = run(launcher(str(job), mpi=3), cwd=tmp_path)
    assert r.returncode == 0, output(r)
    assert "[0, 1, 2, 3, 4, 5, 6, 7]" in r.stdout and "evocluster:" not in r.stderr, output(r)


def sleeps_for(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def test_the_timeout_is_per_evaluation_within_a_chunk() -> None:
    """One chunk of several evaluations: each has its own ``eval_timeout``, counted from its own
    start (the timer is set once per chunk and moved on as evaluations start)."""
    with evocluster.Executor(backend="local", workers=1, eval_timeout=1.0) as ex:
        pen = ex.with_policy(on_error="penalize", penalty=-1.0)
        # 3 x 0.6 s: the chunk runs 1.8 s, no evaluation 1 s
        assert list(pen.map(sleeps_for, [0.6, 0.6, 0.6], chunksize=3)) == [0.6, 0.6, 0.6]
        # the third is stuck: interrupted about 1 s after it started, not after the chunk did
        out = list(pen.map(sleeps_for, [0.6, 0.6, 30.0, 0.1], chunksize=4))
        assert out == [0.6, 0.6, -1.0, 0.1]
        (record,) = pen.failures
        assert record.item == 2 and 0.9 <= record.seconds < 5.0


# ---------------------------------------------------------------- a fitness's BaseException
BASE_EXIT_JOB = """\
import json, sys
import evocluster

def f(x):
    if x == 5:
        if sys.argv[1] == "exit":
            sys.exit(0)
        raise KeyboardInterrupt("from the fitness")
    return x

if __name__ == "__main__":
    ex = evocluster.get_executor()
    print(json.dumps(evocluster.map(f, range(8))), flush=True)
    print(json.dumps([[r.item, r.error, r.attempt, r.action, r.worker] for r in ex.failures]))
"""

#: the launcher's options per backend (MPI: 3 ranks)
BASE_WHERE = {
    "serial": ["--backend", "serial"],
    "local": ["--backend", "local", "--workers", "2"],
    "local-isolate": ["--backend", "local", "--workers", "2", "--isolate"],
    "mpich-wheel": [],
}


def _base_exit_run(tmp_path: Path, where: str, kind: str, *options: str) -> Any:
    job = tmp_path / "job.py"
    job.write_text(BASE_EXIT_JOB)
    args = [*BASE_WHERE[where], *options, str(job), kind]
    return run(launcher(*args, mpi=3 if where.startswith("mpich") else None), cwd=tmp_path)


@pytest.mark.parametrize("where", declare(BASE_WHERE, mpi=["mpich-wheel"]))
@pytest.mark.parametrize("kind", ["exit", "interrupt"])
def test_a_fitness_s_exit_or_interrupt_is_not_the_master_s(
    tmp_path: Path, where: str, kind: str
) -> None:
    """``sys.exit(0)`` in a fitness used to end the whole run with exit code 0 (a batch job read
    COMPLETED) and its results were lost; a ``KeyboardInterrupt`` ended it with "interrupted
    (SIGINT)" and 130, though nobody pressed Ctrl-C.  It is that evaluation's failure: uncaught,
    an ``EvaluationAborted`` naming the item and the worker, and the run exits 1."""
    r = _base_exit_run(tmp_path, where, kind)
    assert r.returncode == 1, output(r)
    original = "SystemExit(0)" if kind == "exit" else "KeyboardInterrupt('from the fitness')"
    found = re.search(rf"EvaluationAborted: item 5 of __main__\.f raised {re.escape(original)} "
                      r"on (\S.*?): it fails that evaluation only", r.stderr)  # fmt: skip
    assert found, output(r)
    assert "worker" in found[1], output(r)
    assert re.search(r"raised EvaluationAborted( on the master \(rank 0\))?; the run stops "
                     "with exit code 1", r.stderr), output(r)  # fmt: skip
    assert "interrupted" not in r.stderr, output(r)
    # the cause is the original, with the worker's traceback
    assert f'job.py", line {7 if kind == "exit" else 8}, in f' in r.stderr, output(r)


@pytest.mark.parametrize("where", declare(BASE_WHERE, mpi=["mpich-wheel"]))
def test_a_fitness_s_base_exception_goes_through_the_policy(tmp_path: Path, where: str) -> None:
    r = _base_exit_run(tmp_path, where, "exit", "--on-error", "retry:1", "--penalty=-1")
    assert r.returncode == 0, output(r)
    values, records = (json.loads(line) for line in r.stdout.splitlines()[:2])
    assert values == [0, 1, 2, 3, 4, -1, 6, 7], output(r)
    assert [rec[:4] for rec in records] == [
        [5, "builtins.SystemExit", 1, "retried"],
        [5, "builtins.SystemExit", 2, "penalized"],
    ], output(r)
    assert all("worker" in rec[4] for rec in records), output(r)


def exits_with(code: object) -> int:
    sys.exit(code)


def test_an_aborted_evaluation_names_the_item_and_the_worker_with_the_cause(local2: Any) -> None:
    exc = local2.submit(exits_with, 0).exception(timeout=60)
    assert isinstance(exc, evocluster.EvaluationAborted), repr(exc)
    assert exc.item == 0 and exc.worker.startswith("local worker"), repr(exc)
    assert isinstance(exc.__cause__, SystemExit) and exc.__cause__.code == 0
    assert isinstance(exc.__cause__.__cause__, evocluster.RemoteTraceback)
    assert "sys.exit(code)" in str(exc.__cause__.__cause__)  # the worker's traceback
    with pytest.raises(evocluster.EvaluationAborted, match=r"item 1 of \S*base_exceptions rai"):
        list(local2.map(base_exceptions, [0, 1, 2]))
    assert local2.submit(abs, -3).result(timeout=60) == 3  # the worker goes on


@pytest.mark.parametrize("backend", ["local", "serial"])
def test_an_isolated_failure_records_how_long_it_ran(backend: str) -> None:
    """``Failure.seconds`` of an isolated evaluation that timed out was 0.0 (its process was
    killed: no reply said how long it ran); it is the time it ran, its timeout at least.  (The
    timeout is 4 s: at 1 s, a load average of 19 made the instant items time out as well.)"""
    with evocluster.Executor(
        backend=backend, workers=1, eval_timeout=4.0, isolate=True, on_error="penalize",
        penalty=PENALTY,
    ) as ex:  # fmt: skip
        assert list(ex.map(sleeps_on_3, [1, 3, 4])) == [1, PENALTY, 4]
        assert list(ex.map(fails_on_multiples_of_7, [6, 7])) == [36, PENALTY]
        timeout, raised = ex.failures
    assert timeout.error.endswith("EvaluationTimeout") and timeout.item == 1
    assert timeout.seconds >= 3.99  # it ran until its 4 s were up, then it was killed
    assert raised.error == "builtins.ValueError" and raised.seconds > 0.0


@pytest.mark.parametrize("backend", ["local", "serial"])
def test_a_map_whose_items_all_time_out_stops_soon_after_it_raises(backend: str) -> None:
    """Each isolated item that times out costs a new child (about 50 ms here), which the cost per
    item did not count: measured at its timeout (1e-6 s), the second chunk held a quarter of the
    map, which was evaluated, item after item and child after child, after the map had raised
    (1,506 items took 67 s on serial, found by the fuzz suite).  Counted, chunks stay small and
    the map's abandoned rest is never sent."""
    with evocluster.Executor(backend=backend, workers=1, eval_timeout=1e-6, isolate=True) as ex:
        with pytest.raises(EvaluationTimeout):
            list(ex.map(abs, range(400)))
        ex.shutdown(wait=True)  # what was already sent is evaluated: its failures are recorded
        evaluated = len(ex.failures)
    assert 1 <= evaluated <= 20, f"{evaluated} of 400 items evaluated after the map raised"


TIMER_JOB = """\
import signal
import evocluster

real = signal.setitimer


def breaks_the_timer(x):
    def broken(*args):
        signal.setitimer = real  # once: the worker's next chunk has its timer again
        raise OverflowError("the job broke the timer")

    signal.setitimer = broken  # the worker disarms its timer after the chunk, outside the fitness
    return x


if __name__ == "__main__":
    ex = evocluster.Executor(eval_timeout=30)
    try:
        list(ex.map(breaks_the_timer, [1]))
    except evocluster.WorkerError as e:
        print("WorkerError:", e, flush=True)
        print("cause:", "OverflowError: the job broke the timer" in str(e.__cause__), flush=True)
    print(evocluster.map(abs, [-1, -2]), list(ex.map(abs, [-3])), flush=True)
"""


@pytest.mark.parametrize("where", ["local", pytest.param("mpich-wheel", marks=pytest.mark.mpi)])
def test_a_worker_failing_outside_the_fitness_fails_the_chunk_and_goes_on(
    tmp_path: Path, where: str
) -> None:
    """What the worker's own code raises while serving a chunk (here ``setitimer``, which the
    job broke) ended the worker (the pool broke: "was lost: the process exited with code 1");
    the chunk fails with a WorkerError that says so, and the same worker serves on."""
    job = tmp_path / "job.py"
    job.write_text(TIMER_JOB)
    cmd = launcher("--backend", "local", "--workers", "1") if where == "local" else launcher(mpi=2)
    r = run([*cmd, str(job)], cwd=tmp_path)
    assert r.returncode == 0, output(r)
    said = [line for line in r.stdout.splitlines() if line.startswith("WorkerError:")]
    assert len(said) == 1 and "failed outside the fitness while serving this chunk" in said[0]
    assert "(OverflowError: the job broke the timer)" in said[0], output(r)
    assert "cause: True" in r.stdout and "[1, 2] [3]" in r.stdout, output(r)


# ------------------------------------------------------------------ one item that cannot travel
UNLOADABLE_JOB = """\
import evocluster


class TwoArgs(Exception):  # pickles, but its unpickling calls TwoArgs(a): a TypeError
    def __init__(self, a, b):
        super().__init__(a)
        self.b = b


class Unloadable:  # a result that pickles on the worker and fails to load on the master
    def __reduce__(self):
        return (int, ("not a number",))


def length(x):
    return len(x) if isinstance(x, list) else x


def result(x):
    return Unloadable() if x == 2 else x


if __name__ == "__main__":
    ex = evocluster.Executor(on_error="penalize", penalty=-1)
    print("ARGS", list(ex.map(length, [1, 2, [TwoArgs("a", 4)], 4, 5, 6], chunksize=2)))
    print("RESULTS", list(ex.map(result, [1, 2, 3, 4, 5, 6], chunksize=3)))
    print("FAILED", sorted(f.item for f in ex.failures), flush=True)
"""


@pytest.mark.parametrize(
    "where", ["serial", "local", pytest.param("mpich-wheel", marks=pytest.mark.mpi)]
)
def test_an_item_that_cannot_be_loaded_fails_alone_not_its_chunk(
    tmp_path: Path, where: str
) -> None:
    """An argument the worker cannot rebuild, or a result the master cannot, failed every item of
    its chunk: under penalize, its healthy neighbours silently got the penalty (found by the fuzz
    suite).  The chunk's items are now sent again one by one: only that item fails."""
    job = tmp_path / "job.py"
    job.write_text(UNLOADABLE_JOB)
    opts = {"serial": ["--backend", "serial"], "local": ["--backend", "local", "--workers", "2"]}
    cmd = launcher(*opts.get(where, []), mpi=3 if where.startswith("mpich") else None)
    r = run([*cmd, str(job)], timeout=90, cwd=tmp_path)
    assert r.returncode == 0, output(r)
    assert "ARGS [1, 2, -1, 4, 5, 6]" in r.stdout, output(r)
    assert "RESULTS [1, -1, 3, 4, 5, 6]" in r.stdout, output(r)
    assert "FAILED [1, 2]" in r.stdout, output(r)  # item 2 of the first map, 1 of the second
