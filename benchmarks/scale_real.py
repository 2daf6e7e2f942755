"""A real run to validate the simulator against (``simulate.py --validate`` prints the simulated
side): a warm-up map of ``2 x workers`` no-ops (as ``bench_job.py``), then ``--maps`` maps of
``--tasks-per-worker x workers`` sleeps of ``--sleep`` seconds, each timed::

    mpiexec -n 17 python -m evocluster benchmarks/scale_real.py --tasks-per-worker 20 --sleep 0.1

Prints one JSON line: per map its wall time, ideal time and efficiency (ideal / wall), and the
master's CPU time (``time.process_time`` of rank 0, every thread) and messages over the timed maps
(sent + received): the master's cost per message, ``simulate.py``'s ``--send-us``/``--recv-us``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import evocluster


def noop(x: object) -> object:
    return x


def sleep_task(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks-per-worker", type=int, default=20)
    p.add_argument("--sleep", type=float, default=0.1, help="seconds per task (0: no-op tasks)")
    p.add_argument("--maps", type=int, default=1)
    p.add_argument("--chunksize", type=int, default=None, help="default: adaptive")
    a = p.parse_args(argv)
    ex = evocluster.get_executor()
    workers = ex.max_workers
    warm = list(range(2 * workers))
    assert list(ex.map(noop, warm)) == warm
    fn = sleep_task if a.sleep > 0 else noop
    items = [a.sleep] * (a.tasks_per_worker * workers)
    before = ex.stats()
    cpu0 = time.process_time()
    maps = []
    for _ in range(a.maps):
        t0 = time.perf_counter()
        out = list(ex.map(fn, items, chunksize=a.chunksize))
        wall = time.perf_counter() - t0
        assert out == items
        ideal = len(items) * a.sleep / workers
        maps.append({"wall_s": wall, "ideal_s": ideal, "efficiency": ideal / wall})
    cpu = time.process_time() - cpu0
    after = ex.stats()
    messages = sum(after[k] - before[k] for k in ("messages_sent", "messages_received"))
    print(
        json.dumps(
            {
                "workers": workers,
                "tasks_per_worker": a.tasks_per_worker,
                "sleep_s": a.sleep,
                "maps": maps,
                "master_cpu_s": cpu,
                "messages": messages,
                "chunks": after["chunks"] - before["chunks"],
                "master_us_per_message": 1e6 * cpu / max(messages, 1),
                "loadavg": os.getloadavg(),
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
