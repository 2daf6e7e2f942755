"""Microbenchmark of one worker's side of a TASK: in the worker, with an eval timeout armed, and
through its isolated child (``isolate``), without a master or a transport.

    python benchmarks/isolation.py [--repeat N] [--profile]

This process is the worker: it builds TASK records as the scheduler does (the callable serialised
once, each chunk's ``(items, star, kwargs)`` pickled with the upgrade policy) and hands them to
``evocluster._worker.Worker.run``, which evaluates them here (``limits`` None), here under SIGALRM
(``eval_timeout``) or in its child process (``isolate``, ``evocluster/_isolation.py``).  Per call:
wall time, this process's CPU and the child's (``/proc/<pid>/stat``).  The calls:

- ``noop x1``: a chunk of one ``noop`` item (the fixed cost of a round trip);
- ``sleep 10 ms x1``: a chunk of one 10 ms ``time.sleep`` (W2's chunks: wall over 10 ms);
- ``sum x1000``: a chunk of 1,000 W1 items (``sum`` of 10 floats), per item.

Each cell is the median of N rounds (default 5), the rounds visiting every cell in turn.
``--profile`` adds the top of a ``cProfile`` of the worker's side of the isolated calls.  This
script is imported by the isolated child as the job (``__mp_main__``): nothing runs outside the
main guard.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import workloads  # noqa: E402 - the task functions, by reference, as bench_job.py sends them

MODES = ("in worker", "eval_timeout", "isolate")


def _child_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) of a live process, 0 if there is none."""
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def calls() -> dict[str, tuple[Any, list[Any], int]]:
    """name -> (function, items of one chunk, chunks per round)."""
    rnd = random.Random(1)
    w1 = [[rnd.random() for _ in range(10)] for _ in range(1000)]
    return {
        "noop x1": (workloads.noop, [0], 2000),
        "sleep 10 ms x1": (workloads.sleep_task, [0.010], 100),
        "sum x1000": (workloads.fitness_sum, w1, 20),
    }


def main(argv: list[str]) -> int:
    from evocluster import _protocol as protocol
    from evocluster import _worker as worker
    from evocluster._serialization import dumps_args, serialize_callable

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=5, help="rounds per cell (default 5)")
    p.add_argument("--profile", action="store_true", help="cProfile the isolated calls")
    a = p.parse_args(argv)
    limits = {
        "in worker": None,
        "eval_timeout": protocol.Limits(timeout=3600.0),
        "isolate": protocol.Limits(isolate=True),
    }
    w = worker.Worker("worker 1")
    cells: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    tasks = {}
    for name, (fn, items, _) in calls().items():
        key = fn.__qualname__.encode()
        frames = serialize_callable(fn, "upgrade")
        tasks[name] = (key, frames, items)
    for _ in range(a.repeat):
        for name, (_fn, _items, n) in calls().items():
            key, frames, items = tasks[name]
            for mode in MODES:
                first = protocol.task(0, key, frames, dumps_args((items, False, None), "upgrade"))
                w.run(first._replace(limits=limits[mode]))  # the child started, fn cached
                child = w._isolated.pid if (mode == "isolate" and w._isolated) else None
                task = protocol.task(
                    0, key, None, dumps_args((items, False, None), "upgrade"), limits[mode]
                )
                c0, k0, t0 = time.process_time(), _child_cpu(child), time.perf_counter()
                for _ in range(n):
                    w.run(task)
                dt = time.perf_counter() - t0
                cpu, kid = time.process_time() - c0, _child_cpu(child) - k0
                cells.setdefault((name, mode), []).append((dt / n, cpu / n, kid / n))
    w.close()

    print(f"# One worker's side of a TASK, median of {a.repeat} rounds (python {sys.version[:6]})")
    print()
    print(f"1-min load at the end: {os.getloadavg()[0]:.2f}; nproc {os.cpu_count()}")
    print()
    print("| chunk | mode | wall per chunk | worker CPU per chunk | child CPU per chunk |")
    print("|---|---|---|---|---|")
    for name in calls():
        for mode in MODES:
            runs = cells[(name, mode)]
            wall, cpu, kid = (statistics.median(r[i] for r in runs) * 1e6 for i in range(3))
            base = statistics.median(r[0] for r in cells[(name, "in worker")]) * 1e6
            print(
                f"| {name} | {mode} | {wall:.0f} us (+{wall - base:.0f}) | {cpu:.0f} us | "
                f"{kid:.0f} us |"
            )
    if a.profile:
        w = worker.Worker("worker 1")
        for name, (_fn, _items, n) in calls().items():
            key, frames, items = tasks[name]
            lim = limits["isolate"]
            w.run(protocol.task(0, key, frames, dumps_args((items, False, None), "upgrade"), lim))
            task = protocol.task(0, key, None, dumps_args((items, False, None), "upgrade"), lim)
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(n):
                w.run(task)
            prof.disable()
            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(12)
            print(f"\n## cProfile, worker side, isolate, {name} x {n} chunks\n\n```")
            print("\n".join(ln for ln in out.getvalue().splitlines()[4:] if ln.strip()))
            print("```")
        w.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
