"""benchmarks/simulate.py runs evocluster's real scheduler (``Pool`` without its thread, driven
on a virtual clock): its figures follow the pool's options as the policy says, and match what
can be worked out by hand for cases simple enough."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import launcher, output, run

from evocluster._pool import Pool

_BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
_PATH = _BENCHMARKS / "simulate.py"


def _load() -> Any:
    # benchmarks/ is not a package pytest collects (benchmarks/conftest.py): import it by path
    spec = importlib.util.spec_from_file_location("evocluster_simulate", _PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # the functions it maps pickle by reference to it
    spec.loader.exec_module(module)
    return module


simulate = _load()

#: no master cost, no latency, results noticed at once
FREE = {"send_us": 0.0, "recv_us": 0.0, "latency_us": 0.0, "poll": "instant"}


def test_long_constant_tasks_at_no_cost_keep_every_worker_busy() -> None:
    r = simulate.simulate(8, tasks_per_worker=20, duration="const:1", **FREE)
    assert r["ideal_s"] == pytest.approx(20.0)
    assert r["efficiency"] == pytest.approx(1.0, abs=1e-6)
    assert r["master_utilisation"] == 0.0
    # one item per chunk: 1 s items are above chunk_target (0.1 s); a task and a result each
    assert r["chunks"] == 160 and r["messages"] == 320


def test_prefetch_hides_the_round_trip_as_the_policy_says() -> None:
    """Items of 0.1 s, 10 ms each way, 8 per worker, no warm-up.  Without prefetch each item
    waits for its round trip: 8 x (0.1 + 2 x 0.01) = 0.96 s; with 2 chunks per worker in flight
    only the first one does: 0.01 + 8 x 0.1 + 0.01 = 0.82 s."""
    kw = {**FREE, "latency_us": 10_000.0, "tasks_per_worker": 8, "warmup": "none"}
    one = simulate.simulate(4, duration="const:0.1", prefetch=1, **kw)
    two = simulate.simulate(4, duration="const:0.1", prefetch=2, **kw)
    assert one["makespan_s"] == pytest.approx(0.96)
    assert one["efficiency"] == pytest.approx(0.8 / 0.96)
    assert two["makespan_s"] == pytest.approx(0.82)
    assert one["messages"] == two["messages"] == 64


def test_chunk_sizes_follow_the_measured_cost() -> None:
    """80 items of 1 ms on 4 workers.  The first 8 chunks (2 per worker, prefetch) are one item:
    the cost is not measured yet.  Then ``PoolBase._chunksize``: chunk_target's worth (100
    items), capped at a quarter of an even share (80 / 16 = 5) and at least chunk_min's worth
    (10) or the share of what is left: 5 items, 14 times, and the last 2 -- 23 chunks.  With
    chunk_target 2 ms and chunk_min 1 ms: 2 items until 16 are left (ceil(left / 16) falls to
    1), then one by one -- 8 + 28 + 16 = 52 chunks.  A larger chunk_target changes nothing."""
    kw = {**FREE, "tasks_per_worker": 20, "duration": "const:0.001"}
    default = simulate.simulate(4, **kw)
    small = simulate.simulate(4, chunk_target=0.002, chunk_min=0.001, **kw)
    large = simulate.simulate(4, chunk_target=1.0, **kw)
    assert default["chunks"] == large["chunks"] == 23
    assert small["chunks"] == 52
    assert small["messages"] == 2 * 52


def test_a_master_cost_above_the_work_serialises_the_run() -> None:
    """4 workers, 0.1 s items one per chunk, and the master spends 0.1 s per message: it can
    start an item only every 0.2 s, so 20 items take the master's 40 x 0.1 = 4 s (plus, at
    most, one item's evaluation at the end), and the master is busy throughout."""
    r = simulate.simulate(
        4,
        tasks_per_worker=5,
        duration="const:0.1",
        send_us=1e5,
        recv_us=1e5,
        latency_us=0.0,
        poll="instant",
        warmup="none",
        chunk_target=0.01,
    )
    assert r["messages"] == 40
    assert 4.0 - 1e-9 <= r["makespan_s"] <= 4.1 + 1e-9
    assert r["efficiency"] == pytest.approx(0.5 / r["makespan_s"])
    assert r["master_utilisation"] >= 4.0 / 4.1 - 1e-9


def test_the_pool_is_the_real_one_and_its_hook_refuses_a_running_thread() -> None:
    transport = simulate.SimTransport(2, 0.0, 0.0, 0.0, simulate.config.resolve())
    pool = Pool(transport, simulate.config.resolve(), "sim", thread=False)
    assert not pool._thread.is_alive()
    transport.caller = lambda: pool.close(wait=False)
    pool.drive()  # nothing to do: the caller closes the pool, the loop ends
    assert pool.broken is None


def test_durations_are_drawn_with_the_mean_asked() -> None:
    import random

    for spec in ("lognormal:0.1:1", "pareto:0.1:2.5"):
        draw = simulate.durations(spec, random.Random(3))
        values = [draw() for _ in range(100_000)]
        assert sum(values) / len(values) == pytest.approx(0.1, rel=0.05)
    with pytest.raises(ValueError, match="bad duration"):
        simulate.durations("pareto:0.1:1", random.Random(3))


@pytest.mark.mpi
def test_scale_real_runs_under_mpiexec() -> None:
    """The real runs the simulator is checked against: scale_real.py on 2 workers (3 ranks),
    its efficiency and the master's messages counted as in docs/scale.md."""
    job = str(_BENCHMARKS / "scale_real.py")
    r = run(launcher(job, "--tasks-per-worker", "3", "--sleep", "0.05", mpi=3), timeout=120)
    assert r.returncode == 0, output(r)
    rec = json.loads(r.stdout.strip().splitlines()[-1])
    assert rec["workers"] == 2 and rec["tasks_per_worker"] == 3
    (one,) = rec["maps"]
    assert one["ideal_s"] == pytest.approx(0.15) and 0 < one["efficiency"] <= 1.0
    assert rec["messages"] == 2 * rec["chunks"] > 0
    assert rec["master_cpu_s"] > 0
