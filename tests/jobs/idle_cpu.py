"""Measure the CPU the workers and the master burn while they wait (no busy waiting).

Phase 1: every worker idle, the master asleep.  Phase 2: the master waits for long evaluations.
Prints one JSON line: CPU seconds per phase, summed over the worker processes, and the master's.
"""

import json
import os
import sys
import time

import evocluster

TICK = os.sysconf("SC_CLK_TCK")


def pid_of_worker(_: int) -> int:
    time.sleep(0.05)
    return os.getpid()


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime, all threads


if __name__ == "__main__":
    idle = float(sys.argv[1])
    ex = evocluster.get_executor()
    pids = set(evocluster.map(pid_of_worker, range(8 * ex.n_workers))) - {os.getpid()}
    assert len(pids) == ex.n_workers, (pids, ex.n_workers)
    w0 = sum(cpu_seconds(p) for p in pids)
    m0 = cpu_seconds(os.getpid())
    time.sleep(idle)  # phase 1: nothing to do anywhere
    w1 = sum(cpu_seconds(p) for p in pids)
    m1 = cpu_seconds(os.getpid())
    evocluster.map(time.sleep, [idle] * ex.n_workers)  # phase 2: the master waits for results
    m2 = cpu_seconds(os.getpid())
    print(
        json.dumps(
            {
                "workers_idle": w1 - w0,
                "master_idle": m1 - m0,
                "master_waiting": m2 - m1,
                "n_workers": ex.n_workers,
            }
        )
    )
