"""The isolated evaluator (evocluster/_isolation.py) with real child processes: values and order,
exceptions, crashes (os._exit, a segfault), timeouts (in Python and stuck in C), a memory limit,
forks, the job's import, and that nothing outlives ``close()`` or the worker."""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helpers
import pytest

from evocluster import _jobfile as jobfile
from evocluster import _serialization as serialization
from evocluster._isolation import Isolated
from evocluster.errors import EvaluationCrashed, EvaluationTimeout

JOBS = Path(__file__).resolve().parents[1] / "fixtures" / "jobs"


def _load_fitness_module() -> Any:
    """tests/fixtures/jobs/isolation_fitness.py under its own name, so that its functions pickle by
    reference (the child imports it from the import path the job spec gives it)."""
    name = "isolation_fitness"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, JOBS / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


fit = _load_fitness_module()

#: No job file: the child only extends its import path, as a worker of an interactive master.
JOB = jobfile.JobSpec(None, None, (), os.getcwd(), (str(JOBS),))
LABEL = "test worker 1 (pid 0)"


def _fn(fn: Any) -> tuple[bytes, Any]:
    """A callable as a TASK carries it: a key and its serialised frames."""
    return fn.__name__.encode(), serialization.dumps(fn)


def _run(iso: Isolated, fn: Any, items: list[Any], timeout: float | None = None, **kw: Any) -> Any:
    key, frames = _fn(fn)
    return iso.run(key, frames, items, kw.pop("star", False), kw.pop("kwargs", None), timeout)


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is not: it only waits to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _gone_soon(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


@pytest.fixture
def iso() -> Iterator[Isolated]:
    it = Isolated(JOB, LABEL)
    try:
        yield it
    finally:
        pid = it.pid
        it.close()
        assert pid is None or not _alive(pid)


def _error_type(info: dict[str, Any]) -> str:
    return str(info["type"])


# ---------------------------------------------------------------------------- values
def test_values_in_order_and_one_child_reused(iso: Isolated) -> None:
    values, errors, elapsed = _run(iso, fit.square, list(range(20)))
    assert values == [x * x for x in range(20)]
    assert errors == {}
    assert elapsed >= 0.0
    pid = iso.pid
    values, errors, _ = _run(iso, fit.pid, [0, 1, 2])
    assert values == [pid] * 3 and pid != os.getpid()
    assert iso.starts == 1


def test_star_items_with_keyword_arguments(iso: Isolated) -> None:
    values, errors, _ = _run(iso, fit.add, [(1, 2), (3, 4)], star=True, kwargs={"scale": 10})
    assert (values, errors) == ([30, 70], {})
    values, errors, _ = _run(iso, fit.add, [(1, 2)], star=True)
    assert (values, errors) == ([3], {})


def test_item_frames_are_sent_as_they_came(iso: Isolated) -> None:
    items = list(range(5))
    key, frames = _fn(fit.square)
    task_frames = serialization.dumps((items, False, None))
    values, errors, _ = iso.run(key, frames, items, False, None, None, item_frames=task_frames)
    assert (values, errors) == ([x * x for x in items], {})


def test_callable_is_sent_once_per_child(iso: Isolated) -> None:
    key, frames = _fn(fit.square)
    assert iso.run(key, frames, [3], False, None, None)[:2] == ([9], {})
    # the child has it cached: a chunk without the callable's frames is evaluated
    assert iso.run(key, None, [4], False, None, None)[:2] == ([16], {})


def test_fitness_prints_go_where_the_workers_go(capfd: Any) -> None:
    with Isolated(JOB, LABEL) as iso:  # started now: it inherits the captured stdout
        values, errors, _ = _run(iso, fit.prints, [7, 8])
    assert (values, errors) == ([7, 8], {})
    out = capfd.readouterr().out
    assert "printed by the fitness: 7" in out and "printed by the fitness: 8" in out


# ---------------------------------------------------------------------------- exceptions
def test_an_exception_keeps_the_others_and_the_child(iso: Isolated) -> None:
    values, errors, _ = _run(iso, fit.raises_on_two, list(range(5)))
    pid = iso.pid
    assert values == [0, 1, None, 3, 4]
    assert list(errors) == [2]
    exc = serialization.unpack_exception(errors[2])
    assert isinstance(exc, ValueError) and str(exc) == "bad individual 2"
    assert f"{LABEL} (isolated, pid {pid})" in errors[2]["traceback"]
    assert "raises_on_two" in errors[2]["traceback"]
    assert iso.starts == 1


@pytest.mark.parametrize(
    ("fitness", "error"),
    [
        ("exits_system", "builtins.SystemExit"),
        ("raises_bad_str", "isolation_fitness.BadStr"),
        ("returns_unpicklable", "evocluster.errors.SerializationError"),
    ],
)
def test_what_the_fitness_raises_or_returns_is_that_items_error(
    iso: Isolated, fitness: str, error: str
) -> None:
    values, errors, _ = _run(iso, getattr(fit, fitness), list(range(4)))
    assert values == [0, 1, None, 3]
    assert list(errors) == [2] and _error_type(errors[2]) == error
    assert iso.starts == 1  # no crash: the same child


def test_a_map_inside_the_fitness_is_refused(iso: Isolated) -> None:
    values, errors, _ = _run(iso, fit.maps_inside, [1])
    assert values == [None]
    exc = serialization.unpack_exception(errors[0])
    assert isinstance(exc, RuntimeError) and "inside a fitness evaluation" in str(exc)


# ---------------------------------------------------------------------------- crashes
def _crash(iso: Isolated, fitness: Any) -> tuple[list[Any], dict[int, Any], int]:
    first = iso.pid
    assert first is not None
    values, errors, _ = _run(iso, fitness, list(range(5)))
    assert values == [0, 1, None, 3, 4], "items before and after the crash evaluated"
    assert list(errors) == [2]
    assert iso.pid is not None and iso.pid != first, "a fresh child after the crash"
    assert not _alive(first)
    assert iso.starts == 2
    return values, errors, first


def test_os_exit_is_a_crash_naming_the_code(iso: Isolated) -> None:
    _, errors, first = _crash(iso, fit.exits_on_two)
    exc = serialization.unpack_exception(errors[2])
    assert isinstance(exc, EvaluationCrashed)
    assert str(exc) == "the evaluation's process exited with code 3"
    assert f"(isolated, pid {first})" in errors[2]["traceback"]


def test_a_segfault_is_a_crash_naming_sigsegv(iso: Isolated) -> None:
    _, errors, _ = _crash(iso, fit.segfaults_on_two)
    exc = serialization.unpack_exception(errors[2])
    assert isinstance(exc, EvaluationCrashed)
    assert str(exc) == "the evaluation's process was killed by SIGSEGV"


def test_a_child_killed_between_runs_is_replaced_silently(iso: Isolated) -> None:
    _run(iso, fit.square, [1])
    first = iso.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    assert _gone_soon(first)
    values, errors, _ = _run(iso, fit.square, [1, 2])
    assert (values, errors) == ([1, 4], {})
    assert iso.pid != first and iso.starts == 2


# ---------------------------------------------------------------------------- timeouts
@pytest.mark.parametrize("fitness", ["sleeps_on_two", "stuck_in_c_on_two"])
def test_a_timeout_kills_the_child_and_the_others_go_on(iso: Isolated, fitness: str) -> None:
    _run(iso, fit.square, [0])  # started, job imported: the clock below is the evaluation's
    first = iso.pid
    assert first is not None
    t0 = time.monotonic()
    values, errors, elapsed = _run(iso, getattr(fit, fitness), list(range(5)), timeout=1.0)
    took = time.monotonic() - t0
    assert values == [0, 1, None, 3, 4]
    assert list(errors) == [2]
    exc = serialization.unpack_exception(errors[2])
    assert isinstance(exc, EvaluationTimeout)
    assert "longer than 1 s" in str(exc)
    assert took < 30, f"a 1 s timeout took {took:.1f} s (the fitness sleeps 60 s)"
    assert elapsed >= 1.0
    assert not _alive(first) and iso.pid != first


# ---------------------------------------------------------------------------- chunks in a row
def _submit(iso: Isolated, fn: Any, items: list[Any], timeout: float | None = None) -> None:
    key, frames = _fn(fn)
    iso.submit(key, frames, items, False, None, timeout)


def test_a_chunk_submitted_behind_another_starts_without_the_worker(
    iso: Isolated, tmp_path: Path
) -> None:
    """The child reads the next chunk as soon as it is done with the last one: it does not wait
    for the worker to take the last one's result."""
    _run(iso, fit.square, [0])  # the child is ready: chunks go to it as they are submitted
    marker = tmp_path / "second chunk began"
    _submit(iso, fit.square, [1, 2])
    _submit(iso, fit.touches, [str(marker)])
    assert iso.pending() == 2
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert marker.exists(), "the second chunk waited for the first one's result to be taken"
    assert iso.result()[:2] == ([1, 4], {})
    assert iso.result()[:2] == ([iso.pid], {})
    assert iso.pending() == 0 and iso.starts == 1


def test_a_large_chunk_behind_one_with_many_replies_does_not_hang() -> None:
    """The next chunk is written as the child reads it: a worker blocked writing a chunk larger
    than the socket's buffer while its child blocks writing replies it does not read would hang
    both (W1 under --isolate did)."""
    outcome: list[Any] = []

    def work() -> None:  # the child belongs to the thread that starts it
        with Isolated(JOB, LABEL) as iso:
            _run(iso, fit.square, [0])
            _submit(iso, fit.blob, [1024] * 2000)  # 2 MiB of replies
            _submit(iso, fit.size, [b"y" * (1 << 20)] * 4)  # 4 MiB of items
            outcome.append(iso.result())
            outcome.append(iso.result())

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(120)
    assert not thread.is_alive(), "the worker and its child wait for each other"
    (blobs, errors1, _), (sizes, errors2, _) = outcome
    assert errors1 == errors2 == {}
    assert blobs == [b"x" * 1024] * 2000 and sizes == [1 << 20] * 4


@pytest.mark.parametrize(("fitness", "error"), [
    ("exits_on_two", EvaluationCrashed), ("sleeps_on_two", EvaluationTimeout),
])  # fmt: skip
def test_a_lost_child_takes_the_chunks_behind_it_to_the_next(
    iso: Isolated, fitness: str, error: type[Exception]
) -> None:
    """Chunks sent to a child that then crashed or was killed for time are sent again, in order
    and whole, to the next child."""
    _run(iso, fit.square, [0])
    first = iso.pid
    # the limit ends sleeps_on_two's item; for the crash it only must not end another item (4 s
    # did, in CI, for an item whose new child started slowly under load: a third child)
    _submit(iso, getattr(fit, fitness), list(range(5)), timeout=4.0 if "sleeps" in fitness else 60)
    _submit(iso, fit.square, [5, 6])
    _submit(iso, fit.pid, [None, None])
    values, errors, _ = iso.result()
    assert values == [0, 1, None, 3, 4] and list(errors) == [2]
    assert isinstance(serialization.unpack_exception(errors[2]), error)
    assert iso.result()[:2] == ([25, 36], {})
    pids, errors, _ = iso.result()
    assert errors == {} and pids == [iso.pid, iso.pid] and iso.pid != first
    assert iso.starts == 2 and iso.pending() == 0


def _switches() -> int:
    """How many times this thread has waited (its voluntary context switches)."""
    with open(f"/proc/self/task/{threading.get_native_id()}/status") as fh:
        return int(next(ln for ln in fh if ln.startswith("voluntary_ctxt_switches")).split()[1])


def test_replies_do_not_wake_the_worker_before_the_chunks_last_item(iso: Isolated) -> None:
    """While a chunk has items to go, the worker does not listen to the child: a reply sent
    then wakes nobody, and waits in the socket (a wake-up per 10 ms item cost W2 ~2 %)."""
    _run(iso, fit.naps, list(range(5)))  # the child is up and the cost per item known
    before = _switches()
    values, errors, _ = _run(iso, fit.naps, list(range(40)))
    woke = _switches() - before
    assert values == list(range(40)) and not errors
    assert woke < 20, f"the worker waited {woke} times for 40 replies"


def test_a_chunk_cheaper_than_the_last_is_not_read_late(iso: Isolated) -> None:
    """What the worker expects an item to cost may be another function's, or wrong: after
    items of 0.3 s, a chunk of 1,000 cheap ones is read as it is done, not when 1,000 more
    items of 0.3 s would be (5 minutes): the worker listens again within 0.1 s."""
    _run(iso, fit.sleeps_for, [0.3, 0.3])
    done = threading.Event()
    got: list[Any] = []

    def cheap() -> None:
        got.append(_run(iso, fit.square, list(range(1000))))
        done.set()

    thread = threading.Thread(target=cheap, daemon=True)
    thread.start()
    assert done.wait(30), "a chunk of 1,000 cheap items was not read within 30 s"
    assert got[0][0] == [x * x for x in range(1000)]


@pytest.mark.parametrize(("bad", "error"), [(-1, EvaluationCrashed), (-2, EvaluationTimeout)])
def test_a_crash_or_timeout_while_the_worker_is_not_listening_keeps_the_replies_before_it(
    iso: Isolated, bad: int, error: type
) -> None:
    """Replies sent while the worker was not listening are all read after the child's end (a
    crash) or its deadline (a timeout, counted from the previous reply): nothing is lost, and
    the items after the failed one are evaluated by the next child."""
    _run(iso, fit.naps, list(range(5)))
    items = [*range(20), bad, *range(21, 30)]
    values, errors, _ = _run(iso, fit.naps, items, timeout=2.0)
    assert list(errors) == [20]
    assert isinstance(serialization.unpack_exception(errors[20]), error)
    assert values[:20] == list(range(20)) and values[21:] == list(range(21, 30))


def test_an_exception_in_the_waiting_thread_kills_the_child(iso: Isolated) -> None:
    """A signal handler of the worker that raises while it waits (Ctrl-C, an alarm): the child,
    out of step, is killed, the exception propagates, and the next run has a fresh child."""
    _run(iso, fit.square, [0])
    first = iso.pid
    assert first is not None

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        with pytest.raises(KeyboardInterrupt):
            _run(iso, fit.sleeps_on_two, [2])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert not _alive(first) and iso.pid is None
    assert _run(iso, fit.square, [5])[:2] == ([25], {})


# ---------------------------------------------------------------------------- memory
def test_memory_limit_fails_that_item_only() -> None:
    limit = 200 << 20
    with Isolated(JOB, LABEL, memory=limit) as iso:
        values, errors, _ = _run(iso, fit.limited, [0])
        assert (values, errors) == ([(limit, limit)], {})
        values, errors, _ = _run(iso, fit.allocates_on_two, list(range(5)))
        assert values == [0, 1, None, 3, 4]
        assert list(errors) == [2]
        assert _error_type(errors[2]) in (
            "builtins.MemoryError",
            "evocluster.errors.EvaluationCrashed",
        )
        assert _run(iso, fit.square, [6])[:2] == ([36], {})


# ---------------------------------------------------------------------------- forks
def test_a_forked_copy_that_returns_ends_at_once(iso: Isolated) -> None:
    """The copy returns through the child's loop, which must end it (exit 0) rather than reply
    or serve: the original waits for it, so a copy that went on serving would hang it (and
    the item would time out)."""
    values, errors, _ = _run(iso, fit.forks_and_waits, [0, 1, 2], timeout=20)
    assert errors == {}
    assert values == [(0, 0), (1, 0), (2, 0)]
    assert iso.starts == 1


def test_a_fork_leaves_no_process_after_close() -> None:
    iso = Isolated(JOB, LABEL)
    values, errors, _ = _run(iso, fit.forks_and_leaves, [0, 1], timeout=20)
    assert errors == {} and all(isinstance(v, int) and v > 0 for v in values)
    assert _run(iso, fit.square, [3])[:2] == ([9], {}), "the child still serves"
    pid = iso.pid
    iso.close()
    assert pid is not None and not _alive(pid)
    # each copy leaves at once, but on a loaded machine "at once" may be after this line
    assert not [copy for copy in values if not _gone_soon(copy)]


# ---------------------------------------------------------------------------- life cycle
def test_close_leaves_no_process_and_is_idempotent() -> None:
    iso = Isolated(JOB, LABEL)
    _run(iso, fit.square, [1])
    pid = iso.pid
    assert pid is not None and _alive(pid)
    iso.close()
    assert not _alive(pid) and iso.pid is None
    iso.close()


def test_close_before_the_child_is_ready() -> None:
    iso = Isolated(JOB, LABEL)  # started, not yet waited for
    pid = iso.pid
    iso.close()
    assert pid is not None and not _alive(pid)


def test_the_child_dies_with_its_worker() -> None:
    """PR_SET_PDEATHSIG: a worker killed by SIGKILL while its child is in an evaluation takes the
    child with it (an idle child would end anyway, at the end of file on its socket).  The child
    shares the worker's stdout, so ``run`` returns only when both are gone."""
    script = textwrap.dedent(
        f"""
        import os, signal, sys, time
        sys.path.insert(0, {str(helpers.ROOT)!r})
        from evocluster import _jobfile as jobfile, _serialization as serialization
        from evocluster._isolation import Isolated
        iso = Isolated(jobfile.JobSpec(None, None, (), os.getcwd(), ()), "w")
        iso.run(b"p", serialization.dumps(os.getpid), [()], True, None, None)
        print(iso.pid, flush=True)
        signal.signal(signal.SIGALRM, lambda *_: os.kill(os.getpid(), signal.SIGKILL))
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        iso.run(b"s", serialization.dumps(time.sleep), [60], False, None, None)
        """
    )
    r = helpers.run([sys.executable, "-c", script], timeout=40, no_leftovers=True)
    assert r.returncode == -signal.SIGKILL, helpers.output(r)
    assert not _alive(int(r.stdout.split()[0]))


# ---------------------------------------------------------------------------- the job
def _job_file(tmp_path: Path, body: str) -> jobfile.JobSpec:
    path = tmp_path / "job.py"
    path.write_text(textwrap.dedent(body))
    return jobfile.JobSpec(str(path), None, (), str(tmp_path), ())


#: ``__main__.fitness`` by reference, as a master pickles a job's module-level function
MAIN_FITNESS = [b"c__main__\nfitness\n."]


def test_the_job_is_imported_as_a_worker_imports_it(tmp_path: Path) -> None:
    job = _job_file(
        tmp_path,
        """
        import sys
        FACTOR = 3
        def fitness(x):
            return (x * FACTOR, __name__, sys.modules["__main__"].__name__)
        if __name__ == "__main__":
            raise SystemExit("the main block must not run on a worker")
        """,
    )
    with Isolated(job, LABEL) as iso:
        values, errors, _ = iso.run(b"f", MAIN_FITNESS, [1, 2], False, None, None)
    assert errors == {}
    assert values == [(3, "__mp_main__", "__mp_main__"), (6, "__mp_main__", "__mp_main__")]


def test_a_job_that_cannot_be_imported_fails_every_item_once_per_run(tmp_path: Path) -> None:
    job = _job_file(
        tmp_path,
        """
        def fitness(x):
            return x
        raise RuntimeError("no licence for the simulator on this node")
        """,
    )
    with Isolated(job, LABEL) as iso:
        assert iso.pid is not None and _gone_soon(iso.pid), "the child gave up before any run"
        for run in (1, 2):
            values, errors, _ = iso.run(b"f", MAIN_FITNESS, [1, 2, 3], False, None, None)
            assert values == [None, None, None]
            assert sorted(errors) == [0, 1, 2]
            assert _error_type(errors[0]) == "evocluster.errors.WorkerError"
            assert "could not import the job" in errors[0]["message"]
            assert "no licence for the simulator on this node" in errors[0]["message"]
            assert iso.starts == run, "one start per run, no restart loop"
            assert iso.pid is None
