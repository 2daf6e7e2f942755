"""One benchmark run: one workload on one system, started by ``run.py`` the way that system's users
start a job, for example::

    mpiexec -n 3 python -m evocluster benchmarks/bench_job.py \
        --system evocluster-mpi --workload W1 --workers 2 --out run.json

The master opens the system's pool, maps ``2 x workers`` no-ops (the warm-up: start-up ends when
it returns), runs the workload (then, on evocluster's systems, the workload's engine part: W3) and
writes one JSON record to ``--out``.  Failures are recorded, not raised, so the exit code of the
launcher is the system's own.  ``run.py`` sets ``BENCH_T_LAUNCH`` (``time.time()`` just before it
spawned the launcher) and ``BENCH_TAG`` (marks the run's processes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from typing import Any

import systems
import workloads


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--system", required=True, choices=sorted(systems.SYSTEMS))
    p.add_argument("--workload", required=True, choices=sorted(workloads.WORKLOADS))
    p.add_argument("--workers", type=int, required=True)
    p.add_argument("--quick", action="store_true", help="the reduced sizes of run.py --quick")
    p.add_argument("--out", required=True, help="file the JSON record is appended to")
    return p.parse_args(argv)


def run(args: argparse.Namespace, t_script: float) -> dict[str, Any]:
    t_launch = float(os.environ.get("BENCH_T_LAUNCH", t_script))
    wl = workloads.WORKLOADS[args.workload]
    sizes = workloads.QUICK if args.quick else workloads.FULL
    rec: dict[str, Any] = {"ok": False, "error": None, "script_start_s": t_script - t_launch}
    t_close = None
    first_ok = True
    try:
        system = systems.SYSTEMS[args.system]
        with system.pool(args.workers) as pmap:
            if wl.first_result:  # W7: one no-op's result, the first a job can get
                first_ok = pmap(workloads.noop, [0]) == [0]
                rec["first_result_s"] = time.time() - t_launch
            warm = list(range(2 * args.workers))
            warm_ok = pmap(workloads.noop, warm) == warm
            rec["startup_s"] = time.time() - t_launch
            rec.update(wl.run(pmap, args.workers, sizes, system.workaround))
            rec["correct"] = bool(rec.get("correct")) and warm_ok and first_ok
            if wl.engine is not None and system.executor is not None:  # W3's engine rows
                part = wl.engine(system.executor(), args.workers, sizes)
                rec["correct"] = part.pop("correct") and rec["correct"]
                rec.update(part)
            if "n_tasks" in rec:  # W1 also counts start-up: the rate a short job sees
                rec["tasks_per_s_incl"] = rec["n_tasks"] / (rec["startup_s"] + rec["map_s"])
            t_close = time.perf_counter()
        rec["close_s"] = time.perf_counter() - t_close
        rec["ok"] = rec["correct"]
        if not rec["ok"]:
            rec["error"] = "wrong results" + (f" ({rec['wrong']})" if rec.get("wrong") else "")
    except Exception as e:  # a failure is a result too
        rec["error"] = f"{type(e).__name__}: {str(e)[:500]}"
        rec["traceback"] = traceback.format_exc()[-3000:]
    return rec


def main(argv: list[str]) -> int:
    t_script = time.time()
    args = _parse(argv)
    rec = run(args, t_script)
    rec.update(master_pid=os.getpid(), job_end_s=time.time() - t_script)
    with open(args.out, "a") as fh:
        fh.write(json.dumps(rec, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
