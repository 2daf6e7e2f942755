"""W7's map, again and again, for a profiler on rank 0 (``py-spy record --pid PID``)::

    mpiexec -n 129 python -m evocluster --quiet benchmarks/w7_profile.py --sleep 0.01 --maps 40

After the warm-up it writes its pid to ``--pid-file`` (for the profiler), then maps 20 x W
sleeps ``--maps`` times and prints each map's efficiency, wall time and the master's CPU
(``time.process_time()``, all its threads).  benchmarks/RESULTS.md, issue 24, has the profiles.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import workloads

import evocluster


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sleep", type=float, default=0.01, help="seconds per task")
    p.add_argument("--maps", type=int, default=10)
    p.add_argument("--per-worker", type=int, default=20, help="tasks per worker per map")
    p.add_argument("--pid-file", default=os.path.join(tempfile.gettempdir(), "w7_profile.pid"))
    a = p.parse_args()
    ex = evocluster.get_executor()
    n = ex.n_workers
    evocluster.map(workloads.noop, list(range(2 * n)))
    with open(a.pid_file, "w") as fh:
        fh.write(str(os.getpid()))
    for rep in range(a.maps):
        items = [a.sleep] * (a.per_worker * n)
        cpu, t0 = time.process_time(), time.perf_counter()
        assert evocluster.map(workloads.sleep_task, items) == items
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu
        eff = a.per_worker * a.sleep / wall
        chunks = ex.stats()["chunks"]
        print(
            f"map {rep}: efficiency {eff:.3f} wall {wall:.3f} s master CPU {cpu:.3f} s "
            f"chunks so far {chunks}",
            flush=True,
        )


if __name__ == "__main__":
    main()
