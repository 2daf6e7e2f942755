"""The executor conformance suite, written once and run on every backend.

Each ``check_*`` function takes the executor under test and raises ``AssertionError`` when the
behaviour it names is broken.  This file is also a job: ``python -m evocluster [--backend B]
tests/conformance_job.py --json OUT`` (or under ``mpiexec -n N``) runs every check against the
launcher's executor and writes ``{check name: "ok" | traceback}`` to OUT; ``test_conformance.py``
launches it for each backend and turns each entry into a test.  The helpers below are defined in
the job file on purpose: on the master they live in ``__main__``, so every check also proves that
functions of the job file resolve on the workers.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import threading
import time
import traceback
import weakref
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, CancelledError, as_completed, wait
from pathlib import Path

import numpy as np

import evocluster
from evocluster import Executor, RemoteTraceback

# ---------------------------------------------------------------- functions the workers evaluate


def square(x: int) -> int:
    return x * x


def add(a: float, b: float, c: float = 0.0) -> float:
    return a + b + c


def fails_on_3(x: int) -> int:
    if x == 3:
        raise ValueError(f"individual {x} is infeasible")
    return x


def sleeper(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def array_stats(a: np.ndarray) -> tuple[float, tuple[int, ...], str]:
    return float(a.sum()), a.shape, str(a.dtype)


def double_array(a: np.ndarray) -> np.ndarray:
    return a * 2


def two_objectives(x: float) -> np.ndarray:
    return np.array([x, -x])


def where() -> tuple[int, str]:
    return os.getpid(), __name__


class _Unpicklable(Exception):
    def __init__(self, a: int, b: int) -> None:  # custom signature: does not unpickle
        super().__init__(f"bad pair {a},{b}")


def raises_awkward(x: int) -> int:
    raise _Unpicklable(x, x + 1)


def inc(x: int) -> int:
    return x + 1


def gated(path: str, value: int = 0) -> int:
    """Run until the file ``path`` exists (at most 60 s: a broken check must not hang the job)."""
    deadline = time.monotonic() + 60
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.005)
    return value


class Gate:
    """A file that holds :func:`gated` tasks until it is opened."""

    def __init__(self) -> None:
        self.path = os.path.join(tempfile.mkdtemp(prefix="evocluster-gate-"), "open")

    def open(self) -> None:
        Path(self.path).touch()


def running_soon(future: object, seconds: float = 60) -> bool:
    deadline = time.monotonic() + seconds
    while not future.running() and not future.done():  # type: ignore[attr-defined]
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


class StateRaises:
    """Pickling it raises a RuntimeError (not a pickling error) when ``fail`` is set."""

    def __init__(self, fail: bool) -> None:
        self.fail = fail

    def __getstate__(self) -> dict[str, bool]:
        if self.fail:
            raise RuntimeError("no state for you")
        return self.__dict__


class RestoreFails:
    """Pickles on the master; its ``__setstate__`` raises wherever it is loaded (a worker)."""

    def __getstate__(self) -> dict[str, int]:
        return {"x": 1}

    def __setstate__(self, state: dict[str, int]) -> None:
        raise ValueError("cannot restore this here")


def filled(i: int) -> np.ndarray:
    return np.full(50_000, float(i))


_initialised: list[object] = []  # what the executor's initializer saw, in this process


def remember(marker: object) -> None:
    _initialised.append(marker)


def initialised(_: int) -> tuple[int, list[object]]:
    return os.getpid(), list(_initialised)


def initializer_fails() -> None:
    raise ValueError("the initializer cannot start")


# ---------------------------------------------------------------- the checks


def check_map_order(ex: Executor) -> None:
    assert list(ex.map(square, range(300))) == [x * x for x in range(300)]
    assert evocluster.map(square, range(50)) == [x * x for x in range(50)]


def check_several_iterables(ex: Executor) -> None:
    assert list(ex.map(add, [1, 2, 3], [10, 20, 30])) == [11, 22, 33]
    assert list(ex.map(add, [1, 2, 3], [10, 20], [100, 200, 300])) == [111, 222]  # zip: shortest
    assert evocluster.map(pow, [2, 3, 4], [5, 2, 1]) == [32, 9, 4]


def check_empty_input(ex: Executor) -> None:
    assert list(ex.map(square, [])) == []
    assert evocluster.map(square, []) == []
    assert list(ex.map(add, [], [])) == []
    try:
        evocluster.map(square)  # as the builtin: an iterable is required
    except TypeError:
        pass
    else:
        raise AssertionError("map() without an iterable was accepted")


def settled(ex: Executor) -> dict[str, int]:
    """``ex.stats()`` once nothing an earlier check started is still being dispatched.  A map
    abandoned at an exception stops dispatching, but the scheduler may have taken its next chunk
    just before, and counts it as it sends it; the scheduler serves jobs in order, so once a later
    round trip has come back, that chunk is counted."""
    assert ex.submit(square, 0).result(timeout=60) == 0
    return ex.stats()


def check_explicit_chunksize(ex: Executor) -> None:
    before = settled(ex)["chunks"]
    assert list(ex.map(square, range(100), chunksize=7)) == [x * x for x in range(100)]
    assert ex.stats()["chunks"] - before == 15  # ceil(100 / 7): the chunksize is honoured
    try:
        ex.map(square, range(3), chunksize=0)
    except ValueError as e:
        assert "chunksize" in str(e)
    else:
        raise AssertionError("chunksize=0 was accepted")


def check_automatic_chunksize(ex: Executor) -> None:
    # cheap calls are batched: far fewer messages than items
    before = settled(ex)
    n = 20_000
    assert evocluster.map(square, range(n)) == [x * x for x in range(n)]
    after = ex.stats()
    cheap_chunks = after["chunks"] - before["chunks"]
    assert after["items"] - before["items"] == n
    assert cheap_chunks <= n // 20, f"{cheap_chunks} chunks for {n} cheap items"
    # calls of 20 ms are batched too (a chunk targets 0.1 s), once their cost is known...
    w = ex.n_workers
    assert list(ex.map(sleeper, [0.02])) == [0.02]
    before = settled(ex)["chunks"]
    assert list(ex.map(sleeper, [0.02] * 8 * w)) == [0.02] * 8 * w
    assert ex.stats()["chunks"] - before < 8 * w
    # ...but calls longer than the chunk target go one by one
    k = 4 * w + 1  # enough for chunks of 2, were they batched
    assert list(ex.map(sleeper, [0.11])) == [0.11]
    before = settled(ex)["chunks"]
    assert list(ex.map(sleeper, [0.11] * k)) == [0.11] * k
    assert ex.stats()["chunks"] - before == k


def check_exception_with_remote_traceback(ex: Executor) -> None:
    try:
        list(ex.map(fails_on_3, range(10)))
    except ValueError as e:
        assert "individual 3 is infeasible" in str(e)
        cause = e.__cause__
        assert isinstance(cause, RemoteTraceback), repr(cause)
        assert "fails_on_3" in str(cause) and "Traceback" in str(cause)
        assert "worker" in str(cause)
        if ex.backend == "mpi":
            assert "rank" in str(cause) and "host" in str(cause)
    else:
        raise AssertionError("map did not raise")
    future = ex.submit(fails_on_3, 3)
    exc = future.exception()
    assert isinstance(exc, ValueError) and isinstance(exc.__cause__, RemoteTraceback)
    # results before the failing item were computed: the iterator yields them first
    it = ex.map(fails_on_3, range(6))
    assert [next(it), next(it), next(it)] == [0, 1, 2]
    try:
        next(it)
    except ValueError:
        pass
    else:
        raise AssertionError("the fourth result did not raise")


def check_awkward_exception(ex: Executor) -> None:
    # an exception class that pickles but cannot be unpickled still comes home, as a stand-in
    try:
        ex.submit(raises_awkward, 1).result(timeout=60)
    except evocluster.RemoteError as e:
        assert "_Unpicklable" in e.type_name and "bad pair 1,2" in e.message
        assert isinstance(e.__cause__, RemoteTraceback)
    else:
        raise AssertionError("no exception")


def check_reusable_after_exception(ex: Executor) -> None:
    for _ in range(2):
        try:
            evocluster.map(fails_on_3, range(8))
            raise AssertionError("no exception")
        except ValueError:
            pass
        assert evocluster.map(square, range(40)) == [x * x for x in range(40)]
        assert ex.submit(square, 12).result(timeout=60) == 144


def check_submit_wait_as_completed(ex: Executor) -> None:
    futures = [ex.submit(square, i) for i in range(40)]
    done, not_done = wait(futures, timeout=120)
    assert not not_done and len(done) == 40
    assert sorted(f.result() for f in as_completed(futures)) == [i * i for i in range(40)]
    f = ex.submit(add, 1, 2, c=3)  # keyword arguments travel too
    assert f.result(timeout=60) == 6
    gate = Gate()
    fast = ex.submit(square, 5)  # first: a single worker (serial, -n 2) runs it before the gate
    slow = ex.submit(gated, gate.path, 2)
    try:
        done, not_done = wait([slow, fast], timeout=60, return_when=FIRST_COMPLETED)
        assert done == {fast} and not_done == {slow}, (done, not_done)
    finally:
        gate.open()
    assert slow.result(timeout=60) == 2


def check_map_timeout(ex: Executor) -> None:
    it = ex.map(sleeper, [1.0], timeout=0.05)
    t0 = time.monotonic()
    try:
        next(it)
    except TimeoutError:
        pass
    else:
        raise AssertionError("no TimeoutError")
    assert time.monotonic() - t0 < 0.9  # it gave up before the result could exist
    assert list(ex.map(square, range(5), timeout=120)) == [0, 1, 4, 9, 16]


def check_shutdown_twice_and_submit_after(ex: Executor) -> None:
    other = Executor()  # under the launcher: a second handle on the same workers
    assert other.submit(square, 3).result(timeout=60) == 9
    other.shutdown()
    other.shutdown()  # safe twice
    other.shutdown(wait=False, cancel_futures=True)
    try:
        other.submit(square, 2)
    except RuntimeError as e:
        assert "shutdown" in str(e)
    else:
        raise AssertionError("submit after shutdown was accepted")
    try:
        other.map(square, [1])
    except RuntimeError:
        pass
    else:
        raise AssertionError("map after shutdown was accepted")
    # shutting down a handle does not stop the launcher's workers
    assert ex.submit(square, 4).result(timeout=60) == 16


def check_context_manager(ex: Executor) -> None:
    with Executor() as other:
        assert list(other.map(square, [1, 2])) == [1, 4]
    try:
        other.submit(square, 1)
    except RuntimeError:
        pass
    else:
        raise AssertionError("the with block did not shut the executor down")


def check_cancel_by_owner_before_start(ex: Executor) -> None:
    # a future its owner cancels before it starts: shutdown(wait=True) must not wait for it
    gate = Gate()
    mine = Executor()
    blockers = [mine.submit(gated, gate.path, 1) for _ in range(3 * ex.n_workers)]
    queued = mine.submit(square, 7)
    try:
        assert running_soon(blockers[0])
        assert queued.cancel(), "a queued future behind busy workers could not be cancelled"
        assert queued.cancelled()
    finally:
        gate.open()
    mine.shutdown(wait=True)  # returns: the cancelled job counts as done
    assert all(b.result() == 1 for b in blockers)


def check_large_numpy_payloads(ex: Executor) -> None:
    rng = np.random.default_rng(7)
    arrays = [
        rng.random((1024, 1024)),  # 8 MiB float64
        rng.integers(0, 255, size=3_000_000, dtype=np.uint8),
        rng.random((64, 64, 8)).astype(np.float32),
        np.arange(10, dtype=np.int64)[::2],  # not contiguous
        np.zeros(0),
    ]
    for a, (total, shape, dtype) in zip(arrays, ex.map(array_stats, arrays)):
        assert shape == a.shape and dtype == str(a.dtype)
        assert np.isclose(total, a.sum(dtype=np.float64) if a.size else 0.0)
    big = arrays[0]
    back = ex.submit(double_array, big).result(timeout=120)
    assert back.shape == big.shape and np.array_equal(back, big * 2)
    rows = list(rng.random((64, 1 << 15)))  # 64 rows of 256 KiB: batched and prefetched
    assert np.allclose(evocluster.map(np.sum, rows), [r.sum() for r in rows])


def check_numpy_results(ex: Executor) -> None:
    # a multi-objective fitness returning an array (compared by identity, never with ==)
    expect = [np.array([x, -x]) for x in (1.0, 2.0, 3.0)]
    for got in (
        evocluster.map(two_objectives, [1.0, 2.0, 3.0]),
        list(ex.map(two_objectives, [1.0, 2.0, 3.0])),
    ):
        assert len(got) == 3 and all(np.array_equal(a, b) for a, b in zip(got, expect))


def check_job_file_function(ex: Executor) -> None:
    # square, sleeper, ... live in the job file; `where` reports where it ran
    results = list(ex.map(lambda_free_where, range(4 * ex.n_workers)))
    names = {name for _, name in results}
    if ex.backend == "serial":
        assert names == {"__main__"}
    else:
        assert names == {"__mp_main__"}, names
        assert os.getpid() not in {pid for pid, _ in results}


def lambda_free_where(_: int) -> tuple[int, str]:
    return where()


def check_workers_used(ex: Executor) -> None:
    if ex.backend == "serial":
        assert ex.n_workers == 1
        return
    pids = {pid for pid, _ in ex.map(slow_where, range(4 * ex.n_workers))}
    assert len(pids) >= min(2, ex.n_workers), f"only {len(pids)} worker(s) did any work"


def slow_where(_: int) -> tuple[int, str]:
    time.sleep(0.02)
    return where()


def check_constructor_like_the_stdlib(ex: Executor) -> None:
    for bad in (0, -1):
        try:
            Executor(bad)
        except ValueError as e:
            assert str(e) == "max_workers must be greater than 0", str(e)
        else:
            raise AssertionError(f"max_workers={bad} was accepted")
    try:
        Executor(initializer=5)  # type: ignore[arg-type]
    except TypeError:
        pass
    else:
        raise AssertionError("a non-callable initializer was accepted")
    with Executor(1, None, ()) as positional:  # (max_workers, initializer, initargs)
        assert positional.submit(square, 3).result(timeout=60) == 9


def check_initializer_runs_once_per_worker_before_its_tasks(ex: Executor) -> None:
    marker = f"init-{os.getpid()}-{time.monotonic()}"
    with Executor(initializer=remember, initargs=(marker,)) as mine:
        seen = list(mine.map(initialised, range(6 * mine.n_workers), chunksize=1))
        seen += [f.result(timeout=60) for f in [mine.submit(initialised, 0) for _ in range(4)]]
    for pid, markers in seen:
        assert markers.count(marker) == 1, (pid, markers)  # before the task, and only once
    # the launcher's own executor has no initializer: its tasks never ran this one
    assert ex.submit(square, 2).result(timeout=60) == 4


def check_failing_initializer_breaks_its_executor(ex: Executor) -> None:
    mine = Executor(initializer=initializer_fails)
    future = mine.submit(square, 3)
    exc = future.exception(timeout=60)
    assert isinstance(exc, evocluster.BrokenPool), repr(exc)
    assert "initializer_fails" in str(exc) and "the initializer cannot start" in str(exc), exc
    for call in (lambda: mine.submit(square, 1), lambda: list(mine.map(square, [1, 2]))):
        try:
            call()
        except evocluster.BrokenPool:
            pass
        else:
            raise AssertionError("a broken executor accepted work")
    mine.shutdown()
    assert ex.submit(square, 5).result(timeout=60) == 25  # the others go on


def check_starmap(ex: Executor) -> None:
    pairs = [(2, 3), (3, 2), (10, 0)]
    assert list(ex.starmap(pow, pairs)) == [8, 9, 1]
    assert list(ex.starmap(add, iter([(1, 2), (3, 4, 5)]), chunksize=1)) == [3, 12]
    assert evocluster.starmap(pow, pairs) == [8, 9, 1]
    assert evocluster.starmap(pow, []) == []


def check_unpicklable_later_item_fails_that_map_only(ex: Executor) -> None:
    items = [StateRaises(False), StateRaises(False), StateRaises(True), StateRaises(False)]
    for run in (
        lambda: list(ex.map(id, items, chunksize=1)),
        lambda: list(ex.map(id, items)),
        lambda: evocluster.map(id, items),
    ):
        try:
            run()
        except evocluster.SerializationError as e:
            assert "individual 2" in str(e) and "no state for you" in str(e), str(e)
            assert isinstance(e.__cause__, RuntimeError), repr(e.__cause__)
        else:
            raise AssertionError("the map did not raise")
        # the pool is still usable
        assert evocluster.map(square, range(20)) == [x * x for x in range(20)]
        assert ex.submit(square, 6).result(timeout=60) == 36
    for first in (lambda: ex.map(id, items[2:]), lambda: ex.submit(id, items[2])):
        try:
            first()  # the first item (or a submit's arguments) is checked at the call
        except evocluster.SerializationError as e:
            assert isinstance(e.__cause__, RuntimeError), repr(e.__cause__)
        else:
            raise AssertionError("no SerializationError at the call")


def check_unloadable_arguments_get_the_hint_for_their_cause(ex: Executor) -> None:
    exc = ex.submit(id, RestoreFails()).exception(timeout=60)
    assert isinstance(exc, evocluster.SerializationError), repr(exc)
    text = str(exc)
    assert "cannot restore this here" in text and "__setstate__" in text, text
    assert "creator classes" not in text, text  # not the hint for a missing definition
    try:
        list(ex.map(id, [1, RestoreFails()]))
    except evocluster.SerializationError as e:
        assert "__setstate__" in str(e), str(e)
    else:
        raise AssertionError("no SerializationError from the map")
    assert ex.submit(square, 3).result(timeout=60) == 9


class Tracked:
    """Something whose release is observed (a weak reference dies with it)."""

    def method(self) -> int:
        return 1


def fails_at(i: int) -> int:
    """Items 1 and 4 fail; item 1 only after item 4 has failed (a later item fails first)."""
    if i == 1:
        time.sleep(0.3)
        raise KeyError("item 1")
    if i == 4:
        raise LookupError("item 4")
    return i


def check_exceptions_raised_in_item_order(ex: Executor) -> None:
    for run in (
        lambda: list(ex.map(fails_at, range(6))),
        lambda: evocluster.map(fails_at, range(6)),
    ):
        try:
            run()
        except KeyError as e:
            assert "item 1" in str(e)
        else:
            raise AssertionError("no exception, or not the first item's")


def check_map_timeout_counts_from_the_call(ex: Executor) -> None:
    gate = Gate()
    it = ex.map(gated, [gate.path], timeout=1.0)
    time.sleep(1.5)  # the deadline passes before the first next()
    opener = threading.Timer(0.5, gate.open)  # a timeout counted from next() would see it
    opener.start()
    try:
        next(it)
    except TimeoutError:
        pass
    else:
        raise AssertionError("the timeout was counted from next(), not from map()")
    finally:
        opener.join()


def check_done_callback_may_submit(ex: Executor) -> None:
    gate = Gate()
    follow: list[object] = []
    first = ex.submit(gated, gate.path, 3)
    # runs where the future is settled (the scheduler thread): submitting there must not deadlock
    first.add_done_callback(lambda f: follow.append(ex.submit(square, f.result())))
    gate.open()
    assert first.result(timeout=60) == 3
    deadline = time.monotonic() + 60
    while not follow and time.monotonic() < deadline:
        time.sleep(0.01)
    assert follow and follow[0].result(timeout=60) == 9  # type: ignore[attr-defined]


def check_done_callback_that_exits_spares_the_pool(ex: Executor) -> None:
    """A done-callback raising SystemExit or KeyboardInterrupt broke the pool for good ("the
    local scheduler failed (an evocluster bug: please report)"); the stdlib logs what a callback
    raises and calls the next one.  Where the caller's own thread runs the callbacks (SCOOP's
    drive), the first such exception is the caller's, once every callback has run."""
    gate = Gate()
    seen: list[object] = []

    def exits(_: object) -> None:
        raise SystemExit(3)

    def interrupts(_: object) -> None:
        raise KeyboardInterrupt

    future = ex.submit(gated, gate.path, 7)
    for callback in (exits, interrupts, lambda f: seen.append(f.result())):
        future.add_done_callback(callback)
    gate.open()
    try:
        value = future.result(timeout=60)
    except SystemExit as e:  # only where the caller's thread ran the callbacks
        assert ex.backend == "scoop" and e.code == 3, (ex.backend, repr(e))
        value = future.result(timeout=0)
    assert value == 7
    deadline = time.monotonic() + 60
    while not seen and time.monotonic() < deadline:  # the callbacks after them ran too
        time.sleep(0.01)
    assert seen == [7], seen
    assert ex.submit(square, 3).result(timeout=60) == 9  # the pool goes on
    assert evocluster.map(square, [1, 2]) == [1, 4]


def check_no_stale_references(ex: Executor) -> None:
    # once its future is done, nothing of the executor keeps a call's callable or arguments
    obj, arg = Tracked(), Tracked()
    gone = [weakref.ref(obj), weakref.ref(arg)]
    assert ex.submit(obj.method).result(timeout=60) == 1
    assert ex.submit(id, arg).exception(timeout=60) is None
    assert list(ex.map(id, [arg, arg])) and evocluster.map(id, [arg])
    del obj, arg
    gc.collect()
    assert all(r() is None for r in gone), "the executor still holds a finished call's objects"


class Abort(BaseException):
    """A job's own BaseException (not an Exception)."""


def raises_base(kind: str) -> int:
    if kind == "keyboard":
        raise KeyboardInterrupt("from the fitness")
    if kind == "generator":
        raise GeneratorExit("from the fitness")
    if kind == "exit":
        sys.exit(3)
    raise Abort("abort from the fitness")


class ExitWhenLoaded:
    """A result whose unpickling (on the master) calls sys.exit."""

    def __reduce__(self) -> tuple[object, ...]:
        return (sys.exit, (1,))


def returns_exit_when_loaded(_: int) -> ExitWhenLoaded:
    return ExitWhenLoaded()


def nested_map(n: int) -> int:
    return sum(evocluster.map(abs, range(n)))


def check_fitness_base_exceptions_fail_only_their_evaluation(ex: Executor) -> None:
    expected = {
        "keyboard": KeyboardInterrupt,
        "generator": GeneratorExit,
        "exit": SystemExit,
        "abort": Abort,
    }
    # each reaches the caller as EvaluationAborted, the original as its cause: as itself it
    # would be taken for the master's own exit or Ctrl-C (issue 20, item 7)
    for kind, cls in expected.items():
        exc = ex.submit(raises_base, kind).exception(timeout=60)
        assert isinstance(exc, evocluster.EvaluationAborted), (kind, repr(exc))
        assert isinstance(exc.__cause__, cls), (kind, repr(exc.__cause__))
        assert isinstance(exc.__cause__.__cause__, RemoteTraceback), kind  # the worker's
        assert exc.item == 0 and "worker" in exc.worker, (kind, exc.item, exc.worker)
        assert ex.submit(square, 4).result(timeout=60) == 16  # the worker goes on
    try:
        list(ex.map(raises_base, ["abort"] * (2 * ex.n_workers)))
    except evocluster.EvaluationAborted as e:
        assert isinstance(e.__cause__, Abort) and e.item == 0, (repr(e.__cause__), e.item)
    else:
        raise AssertionError("the map did not raise the fitness's BaseException")
    assert evocluster.map(square, range(4 * ex.n_workers)) == [
        x * x for x in range(4 * ex.n_workers)
    ]


def check_result_that_exits_when_unpickled_fails_its_future(ex: Executor) -> None:
    exc = ex.submit(returns_exit_when_loaded, 0).exception(timeout=60)
    assert isinstance(exc, evocluster.EvaluationAborted), repr(exc)
    assert isinstance(exc.__cause__, SystemExit), repr(exc.__cause__)
    assert ex.submit(square, 5).result(timeout=60) == 25  # the scheduler goes on


def check_nested_map_is_refused_as_that_evaluations_error(ex: Executor) -> None:
    exc = ex.submit(nested_map, 3).exception(timeout=60)
    assert isinstance(exc, RuntimeError), repr(exc)
    assert "inside a fitness evaluation" in str(exc), str(exc)
    assert evocluster.map(square, [1, 2]) == [1, 4]  # nothing was left waiting


def check_result_delivered_while_next_task_runs(ex: Executor) -> None:
    gate = Gate()
    first = ex.submit(abs, -1)
    second = ex.submit(gated, gate.path, 2)
    try:
        assert first.result(timeout=30) == 1  # not held until the next task has run too
        assert not second.done()
    finally:
        gate.open()
    assert second.result(timeout=60) == 2


def check_cancel_futures_tells_waiters_and_spares_running_ones(ex: Executor) -> None:
    gate = Gate()
    mine = Executor()
    futures = [mine.submit(gated, gate.path, i) for i in range(3 * mine.n_workers + 4)]
    try:
        assert running_soon(futures[0]), "no task started"
        mine.shutdown(wait=False, cancel_futures=True)
        running = [f for f in futures if f.running()]
        cancelled = [f for f in futures if f.cancelled()]
        assert len(running) + len(cancelled) == len(futures), [f._state for f in futures]
        assert running and cancelled, (len(running), len(cancelled))
        # waiters are told of the cancellation now, not when the gate opens
        done, not_done = wait(cancelled, timeout=30)
        assert not not_done, f"{len(not_done)} cancelled futures never reported to wait()"
        assert list(as_completed(cancelled, timeout=30)) and all(f.cancelled() for f in done)
    finally:
        gate.open()
    done, not_done = wait(futures, timeout=60)
    assert not not_done
    assert sorted(f.result() for f in running) == sorted(futures.index(f) for f in running)
    for f in cancelled:
        try:
            f.result()
        except CancelledError:
            pass
        else:
            raise AssertionError("a cancelled future returned a result")
    mine.shutdown()


def check_map_iterator_drops_yielded_results(ex: Executor) -> None:
    it = ex.map(filled, range(6))
    first = next(it)
    assert first[0] == 0.0
    ref = weakref.ref(first)
    del first
    gc.collect()
    assert ref() is None, "the map iterator still holds a result it yielded"
    assert [a[0] for a in it] == [1.0, 2.0, 3.0, 4.0, 5.0]


def check_million_item_map_completes(ex: Executor) -> None:
    n = 1_000_000
    out = evocluster.map(inc, range(n))
    assert len(out) == n and out[0] == 1 and out[-1] == n and sum(out) == n * (n + 1) // 2


def check_own_pool_shutdown_paths_write_nowhere(ex: Executor) -> None:
    # an executor that owns its pool (local or serial), closed along every path twice: no error,
    # and nothing written into a file that reuses a file descriptor the pool has freed
    def paths(backend: str) -> list[Callable[[], None]]:
        def twice() -> None:
            e = Executor(backend=backend, workers=2)
            e.submit(square, 2).result(timeout=60)
            e.shutdown()
            with tempfile.TemporaryFile() as fh:
                e.shutdown()
                e.shutdown(wait=False, cancel_futures=True)
                fh.seek(0)
                assert fh.read() == b"", "a second shutdown wrote into another file"

        def in_with() -> None:
            with tempfile.TemporaryFile() as fh:
                with Executor(backend=backend, workers=2) as e:
                    e.submit(square, 2).result(timeout=60)
                    e.shutdown()
                    with tempfile.TemporaryFile() as fh2:
                        pass
                fh.seek(0)
                assert fh.read() == b"" and fh2.closed

        def no_wait_then_wait() -> None:
            e = Executor(backend=backend, workers=2)
            e.submit(square, 2).result(timeout=60)
            e.shutdown(wait=False)
            with tempfile.TemporaryFile() as fh:
                e.shutdown()
                e.shutdown()
                fh.seek(0)
                assert fh.read() == b""

        return [twice, in_with, no_wait_then_wait]

    for backend in ("local", "serial"):
        for path in paths(backend):
            path()


def mpi_library(_: int) -> str:
    """The MPI library this process runs on (first line of its version string), or ``""``."""
    mpi = sys.modules.get("mpi4py.MPI")
    return mpi.Get_library_version().splitlines()[0] if mpi is not None else ""  # type: ignore[attr-defined]


CHECKS: dict[str, Callable[[Executor], None]] = {
    name[len("check_") :]: fn for name, fn in sorted(globals().items()) if name.startswith("check_")
}


def run_all(ex: Executor, only: list[str] | None = None) -> dict[str, str]:
    results: dict[str, str] = {}
    for name, check in CHECKS.items():
        if only and name not in only:
            continue
        try:
            check(ex)
            results[name] = "ok"
        except BaseException:
            results[name] = traceback.format_exc()
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", required=True)
    parser.add_argument("--only", nargs="*")
    ns = parser.parse_args()
    executor = evocluster.get_executor()
    outcome = run_all(executor, ns.only)
    outcome["_backend"] = executor.backend
    outcome["_workers"] = str(executor.n_workers)
    # which MPI the master and the workers that answer run on: the system-MPI configurations
    # must not have fallen back to another one
    libraries = {mpi_library(0), *executor.map(mpi_library, range(4 * executor.n_workers))}
    outcome["_mpi_libraries"] = sorted(libraries)
    with open(ns.json, "w") as fh:
        json.dump(outcome, fh, indent=1)
    print(f"conformance: {sum(v == 'ok' for v in outcome.values())} ok", file=sys.stderr)
