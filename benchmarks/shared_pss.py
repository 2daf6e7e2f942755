"""How much memory the workers hold for one large shared numpy array: the sum of their PSS.

Run as a job (the workers stay alive while the master reads their ``/proc/PID/smaps_rollup``)::

    python -m evocluster --workers 8 benchmarks/shared_pss.py --mb 400
    mpiexec -n 9 python -m evocluster benchmarks/shared_pss.py --mb 400

Each worker evaluates one item per worker-sized round (a barrier-free spread: enough items that
every worker gets some), reading the whole array; the master then sums the workers' PSS (each
page shared by k processes counts 1/k to each) and prints one JSON line: the array's size, the
sum, their ratio, and the bytes the master sent.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

import evocluster


def touch(i: int) -> tuple[int, float, bool]:
    """Read the whole shared array (its pages mapped, or loaded, here); this worker's pid."""
    data = evocluster.shared("big")
    time.sleep(0.05)  # spread the items over every worker
    return os.getpid(), float(data.sum()), bool(data.flags.writeable)


def pss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def baseline_kib(executor: evocluster.Executor) -> int:
    """The workers' PSS before anything is shared."""
    pids = set(executor.map(_pid, range(8 * executor.n_workers)))
    return sum(pss_kib(pid) for pid in pids)


def _pid(i: int) -> int:
    time.sleep(0.02)
    return os.getpid()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=400.0, help="array size in MB (400)")
    args = parser.parse_args()
    executor = evocluster.get_executor()
    before = baseline_kib(executor)
    array = np.arange(int(args.mb * 1e6) // 8, dtype=np.float64)
    evocluster.share("big", array)
    out = list(executor.map(touch, range(8 * executor.n_workers)))
    pids = {pid for pid, _, _ in out}
    total = sum(pss_kib(pid) for pid in pids) - before
    print(
        json.dumps(
            {
                "backend": executor.backend,
                "workers": executor.n_workers,
                "workers_seen": len(pids),
                "array_mb": array.nbytes / 1e6,
                "pss_sum_mb": total * 1024 / 1e6,
                "ratio": total * 1024 / array.nbytes,
                "bytes_sent_mb": executor.stats()["bytes_sent"] / 1e6,
                "writeable": any(w for _, _, w in out),
                "sums_ok": all(s == out[0][1] for _, s, _ in out),
            }
        )
    )
