"""A worker rank whose own serve loop fails, outside any fitness, and whose process lives on.

The fault injected is the kind f035c23's ``--eval-timeout inf`` caused (every worker raised
OverflowError in ``setitimer``): an exception in the worker's code, not the fitness's.  The
worker's process then waits in ``MPI_Finalize`` for the other ranks, so the MPI launcher, which
ends a job when a rank dies, does not end this one: the master must.

Item 5's fitness breaks ``evocluster.worker.dumps`` in its worker, so packing that chunk's result
raises in the serve loop.  The master says the run has started, the breaking worker who it is."""

import os
import sys

import evocluster
import evocluster.worker


def _broken(obj: object) -> bytes:
    raise RuntimeError("injected: the worker's own loop fails")


def fitness(x: int) -> int:
    if x == 5:
        rank = os.environ.get("PMI_RANK") or os.environ.get("OMPI_COMM_WORLD_RANK") or "-"
        print(f"BREAKING rank {rank} pid {os.getpid()}", file=sys.stderr, flush=True)
        evocluster.worker.dumps = _broken  # type: ignore[assignment]
    return x


if __name__ == "__main__":
    print("STARTED", evocluster.get_executor().n_workers, "workers", flush=True)
    print("results:", evocluster.map(fitness, range(20)))
