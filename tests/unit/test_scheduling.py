"""Scheduling decisions of the pool, observed on a real local worker: which chunks may wait on a
busy worker (prefetch), and which are held back until one is idle."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import pytest

import evocluster
from evocluster import _observe


def gated(seconds: float, gate: str | None = None, started: str | None = None) -> float:
    """Sleep ``seconds``; then, given a ``gate`` path, mark ``started`` and wait until the gate
    exists (the test opens it when it has looked)."""
    time.sleep(seconds)
    if started is not None:
        Path(started).touch()
    while gate is not None and not os.path.exists(gate):
        time.sleep(0.005)
    return seconds


def _sent(ex: Any) -> int:
    return int(ex.stats()["messages_sent"])


def _wait_for(what: Any, deadline_s: float = 30.0) -> None:
    end = time.monotonic() + deadline_s
    while not what():
        assert time.monotonic() < end, "the pool did not get there"
        time.sleep(0.005)


def _teach_uneven_long(ex: Any) -> None:
    """Calls of ``gated`` take >= 1 ms and spread far above ``prefetch_spread``."""
    assert list(ex.map(gated, [0.002, 0.03] * 4)) == [0.002, 0.03] * 4


def test_uneven_long_map_items_wait_for_an_idle_worker(tmp_path: Path) -> None:
    gate, started = str(tmp_path / "open"), str(tmp_path / "started")
    with evocluster.Executor(backend="local", workers=1) as ex:
        _teach_uneven_long(ex)
        before = _sent(ex)
        results = ex.map(gated, [0.0, 0.0], [gate, None], [started, None])
        try:  # the scheduler looked at both items in the pass that sent the first one
            _wait_for(lambda: os.path.exists(started))
            held_back = _sent(ex) - before
        finally:
            Path(gate).touch()  # never leave the worker blocked
        assert list(results) == [0.0, 0.0]
        assert held_back == 1  # the second item was not queued behind the blocked one
        assert _sent(ex) - before == 2


def test_uneven_long_submits_are_prefetched(tmp_path: Path) -> None:
    gate = str(tmp_path / "open")
    with evocluster.Executor(backend="local", workers=1) as ex:
        _teach_uneven_long(ex)
        before = _sent(ex)
        first = ex.submit(gated, 0.0, gate)
        second = ex.submit(gated, 0.0)
        try:
            # both reach the one worker while the first is still blocked: the caller of submit
            # keeps a window in flight, and a held-back task would cost its worker a round trip
            _wait_for(lambda: _sent(ex) - before == 2, deadline_s=5.0)
            assert not first.done() and not second.done()
        finally:
            Path(gate).touch()  # never leave the worker blocked
        assert (first.result(timeout=30), second.result(timeout=30)) == (0.0, 0.0)


def test_abandoned_map_never_sends_its_held_back_item(tmp_path: Path) -> None:
    gate, started = str(tmp_path / "open"), str(tmp_path / "started")
    with evocluster.Executor(backend="local", workers=1) as ex:
        _teach_uneven_long(ex)
        before = _sent(ex)
        results = ex.map(gated, [0.0, 0.0], [gate, None], [started, None], timeout=0.5)
        try:
            _wait_for(lambda: os.path.exists(started))  # the second item is held back
            with pytest.raises(TimeoutError):
                next(results)  # the caller gives up on the map while its first item runs
        finally:
            Path(gate).touch()
        # a round trip after the first item's result: anything held back was decided before it
        assert ex.submit(gated, 0.0).result(timeout=30) == 0.0
        assert _sent(ex) - before == 2, "the abandoned map's held-back item was still sent"


def _chunks(cost: float, n: int, workers: int) -> list[int]:
    """The chunk sizes the scheduler cuts a map of ``n`` items into, whose cost per item it has
    measured as ``cost`` seconds (pure logic: no pool, no transport)."""
    from evocluster import _config as config
    from evocluster._jobs import Job
    from evocluster._scheduling import PoolBase

    class Policy(PoolBase):  # the policy alone: nothing to queue, wait on or close
        put = wait_slot = wait_jobs = wait_done_or_failed = close = None  # type: ignore[assignment]

    s = Policy(config.resolve(), "test", workers)
    s._cost[b"f"] = cost
    job = Job(b"f", None, [None] * n, False, None, None, None, "raise")
    sizes = []
    while job.next < n:
        sizes.append(s._chunksize(job))
        job.next += sizes[-1]
    return sizes


def test_chunks_last_a_tenth_of_a_second_and_shrink_towards_the_end() -> None:
    # 10 ms items (W2): chunks of 0.1 s, then ever smaller, the last ones one item each
    sizes = _chunks(0.010, 2000, 16)
    assert sum(sizes) == 2000
    assert sizes[0] == 10 and max(sizes) == 10
    assert sizes == sorted(sizes, reverse=True)
    assert sizes[-16:] == [1] * 16  # the last round: each worker's last item ends with the rest
    # items above the target go one by one; cheap items stop shrinking at chunk_min's worth
    assert set(_chunks(0.2, 100, 4)) == {1}
    cheap = _chunks(1e-6, 20_000, 2)
    assert cheap == [2500] * 8  # 4 chunks per worker, not split below 10 ms of work (10,000)


def test_a_snapshot_copies_each_workers_stats_only_when_asked() -> None:
    with evocluster.Executor(backend="local", workers=2) as ex:
        assert list(ex.map(abs, range(-20, 0))) == list(range(20, 0, -1))
        pool = ex._pool
        full, light = pool.snapshot(), pool.snapshot(per_worker=False)
    assert light["per_worker"] == {} and light["settled"] == full["settled"] == 20
    assert sum(w["items"] for w in full["per_worker"].values()) == 20


def test_failures_are_recorded_whether_or_not_anyone_listens() -> None:
    """A failure's record is always kept (``Executor.failures``); its event goes to listeners
    only, and is made only when one listens (``_observe.observing``)."""
    heard: list[dict[str, Any]] = []

    def sink(kind: str, fields: dict[str, Any]) -> None:
        if kind == "failure":
            heard.append(fields)

    with evocluster.Executor(backend="local", workers=2, on_error="penalize", penalty=-1.0) as ex:
        assert list(ex.map(math.sqrt, [4, -1])) == [2.0, -1.0]  # nobody listens
        _observe.subscribe(sink)
        try:
            assert list(ex.map(math.sqrt, [-4, 9])) == [-1.0, 3.0]
        finally:
            _observe.unsubscribe(sink)
        failures = ex.failures
    assert [(f.item, f.action) for f in failures] == [(1, "penalized"), (0, "penalized")]
    assert [(h["item"], h["error"]) for h in heard] == [(0, "builtins.ValueError")]
