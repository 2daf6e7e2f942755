"""W7's baseline: what a bare mpi4py rank holds in memory.  Launched as the ``mpi4py-bare``
system (``systems.py``)::

    mpiexec -n W+1 python benchmarks/bare_rank.py --workload W7-64x100ms --workers 64 --out RUN.json

Every rank imports mpi4py (which initialises MPI) and nothing else; ranks 1..W then wait, with
sleeps between tests of a non-blocking barrier (a blocking wait would spin its core: MPICH
busy-polls), until rank 0 has read their resident memory by ``/proc`` (``procstat``, the same
count as W7's worker ranks) and written the record ``run.py`` reads.
"""

import sys
import time

from mpi4py import MPI


def wait(request: MPI.Request) -> None:
    while not request.Test():
        time.sleep(0.01)


comm = MPI.COMM_WORLD
if comm.Get_rank() != 0:
    wait(comm.Ibarrier())  # every rank has started
    wait(comm.Ibarrier())  # rank 0 has measured
    sys.exit(0)

import argparse  # noqa: E402 - rank 0 only: the workers import nothing more than mpi4py
import json  # noqa: E402
import os  # noqa: E402

import procstat  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--workers", type=int, required=True)
p.add_argument("--out", required=True)
args, _ = p.parse_known_args()
t_launch = float(os.environ.get("BENCH_T_LAUNCH", time.time()))
wait(comm.Ibarrier())
rec = {"ok": True, "correct": True, "startup_s": time.time() - t_launch}
time.sleep(1.0)  # the workers settle in their wait
rec.update(procstat.worker_memory(os.environ.get("BENCH_TAG", "-"), os.getpid()))
if comm.Get_size() - 1 != args.workers or rec["n_rss"] != args.workers:
    rec.update(ok=False, error=f"{rec['n_rss']} worker processes of {args.workers}")
with open(args.out, "a") as fh:
    fh.write(json.dumps(rec) + "\n")
wait(comm.Ibarrier())
