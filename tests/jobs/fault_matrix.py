"""The fault matrix, run on whatever workers this job is launched with: each injected fault under
each ``on_error`` policy, on one map of N items.  Prints one JSON line per case (``CASE {...}``);
tests/test_fault_matrix.py checks them against what was injected.

    python -m evocluster --backend serial tests/jobs/fault_matrix.py
    mpiexec -n 5 python -m evocluster tests/jobs/fault_matrix.py
    python -m scoop -n 3 tests/jobs/fault_matrix.py
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import time

import evocluster

N = 100
TIMEOUT = 2.0  # eval_timeout of every case: only "sleeps" needs it
PENALTY = -1.0
MEMORY = "512M"  # eval_memory of "allocates"

#: fault -> (the items it hits, whether it needs isolation)
FAULTS: dict[str, tuple[frozenset[int], bool]] = {
    "raises": (frozenset(range(3, N, 20)), False),  # 5 %
    "sleeps": (frozenset({42}), False),  # 1 %: interrupted (or its isolated process killed)
    "exits": (frozenset({57}), True),  # 1 %: os._exit(3)
    "segfaults": (frozenset({61}), True),  # 1 %: a read of address 0 through ctypes
    "allocates": (frozenset({77}), True),  # 1 %: until the memory limit stops it
    # a BaseException is that evaluation's failure, never the master's exit or Ctrl-C
    "exits_0": (frozenset({23}), False),  # 1 %: sys.exit(0)
    "interrupts": (frozenset({88}), True),  # 1 %: KeyboardInterrupt
}
POLICIES = ("raise", "penalize", "retry:2")


def fitness(fault: str, i: int) -> int:
    if i in FAULTS[fault][0]:
        if fault == "raises":
            raise ValueError(f"injected at {i}")
        if fault == "sleeps":
            time.sleep(3600)
        elif fault == "exits":
            os._exit(3)
        elif fault == "segfaults":
            ctypes.string_at(0)
        elif fault == "allocates":
            blocks = []
            while True:
                blocks.append(bytearray(64 << 20))
        elif fault == "exits_0":
            sys.exit(0)
        elif fault == "interrupts":
            raise KeyboardInterrupt(f"injected at {i}")
    return i * i


def case(fault: str, policy: str) -> dict[str, object]:
    hits, isolate = FAULTS[fault]
    ex = evocluster.Executor(
        on_error=policy,
        penalty=PENALTY if policy != "raise" else None,
        eval_timeout=TIMEOUT,
        isolate=isolate,
        eval_memory=MEMORY if fault == "allocates" else None,
    )
    got: list[object] = []
    raised = message = None
    t0 = time.monotonic()
    try:
        for value in ex.map(fitness, [fault] * N, range(N)):
            got.append(value)
    except Exception as e:  # the policy "raise": the first failed item's exception
        raised, message = type(e).__name__, str(e)
    expected = [PENALTY if i in hits else i * i for i in range(N)][: len(got)]
    return {
        "fault": fault,
        "policy": policy,
        "raised": raised,
        "message": message,
        "n": len(got),
        "values_ok": got == expected,
        "failed": sorted({f.item for f in ex.failures}),
        "records": [[f.item, f.attempt, f.action, f.error.rsplit(".", 1)[-1]] for f in ex.failures],
        "seconds": round(time.monotonic() - t0, 2),
    }


if __name__ == "__main__":
    ex = evocluster.get_executor()
    print(f"BACKEND {ex.backend} {ex.n_workers}", flush=True)
    for fault in sys.argv[1:] or FAULTS:
        for policy in POLICIES:
            print("CASE", json.dumps(case(fault, policy)), flush=True)
    print("MATRIX DONE", flush=True)
