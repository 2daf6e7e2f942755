"""The master's CPU cost per message and per item, and a map's rate, with a zero-work fitness.

    mpiexec -n 17 python -m evocluster benchmarks/master_cost.py --items 20000 --chunksize 1
    python -m evocluster --workers 2 benchmarks/master_cost.py --items 200000

Under the launcher (any backend): a warm-up map, then one map of ``--items`` calls of a fitness
that returns its argument (``--work sum``: W1's ``sum`` of 10 floats, about a microsecond), with
``--chunksize`` items per message (default: adaptive).  Prints one line: items/s of that map and
``Executor.stats()``' ``master_*`` figures over it (the scheduler thread's CPU time: sending,
and the rest, per message and per item), with the load average before and after.  ``--chunksize
1`` is the many-workers case (10,000 workers x 100 ms: a message per item).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from typing import Any

import evocluster


def zero(x: Any) -> Any:
    return x


def fitness_sum(individual: list[float]) -> float:
    return sum(individual)


def _load() -> str:
    with open("/proc/loadavg") as fh:
        return " ".join(fh.read().split()[:3])


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=20_000)
    p.add_argument("--chunksize", type=int, default=None)
    p.add_argument("--work", choices=("zero", "sum"), default="zero")
    p.add_argument("--json", action="store_true", help="the line as JSON")
    a = p.parse_args(argv)
    ex = evocluster.get_executor()
    fn = zero if a.work == "zero" else fitness_sum
    rnd = random.Random(1)
    items: list[Any] = (
        list(range(a.items))
        if a.work == "zero"
        else [[rnd.random() for _ in range(10)] for _ in range(a.items)]
    )
    list(ex.map(fn, items[: 4 * ex.max_workers]))  # warm-up: every worker has the callable
    load_before = _load()
    before = ex.stats()
    t0 = time.perf_counter()
    out = list(ex.map(fn, items, chunksize=a.chunksize))
    dt = time.perf_counter() - t0
    after = ex.stats()
    assert out == [fn(x) for x in items]

    def d(key: str) -> float:  # (an evocluster without the master_* figures: 0)
        return after.get(key, 0.0) - before.get(key, 0.0)

    send_s, recv_s = d("master_send_cpu_s"), d("master_recv_cpu_s")
    rec = {
        "workers": ex.max_workers,
        "items": a.items,
        "chunksize": a.chunksize,
        "work": a.work,
        "seconds": round(dt, 3),
        "items_per_s": round(a.items / dt),
        "messages_sent": d("messages_sent"),
        "messages_received": d("messages_received"),
        "master_cpu_s": round(send_s + recv_s, 4),
        "master_send_us_per_message": round(send_s * 1e6 / max(1, d("messages_sent")), 2),
        "master_recv_us_per_message": round(recv_s * 1e6 / max(1, d("messages_received")), 2),
        "master_us_per_item": round((send_s + recv_s) * 1e6 / max(1, d("items")), 3),
        "load_before": load_before,
        "load_after": _load(),
    }
    print(json.dumps(rec) if a.json else "  ".join(f"{k} {v}" for k, v in rec.items()))


if __name__ == "__main__":
    main(sys.argv[1:])
