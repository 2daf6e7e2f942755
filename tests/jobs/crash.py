"""A fitness that kills its own worker process (a segfault, the OOM killer, os._exit).

The master says the run has started (its executor and workers are up) and the dying worker says
who it is (rank under MPI, pid), so a test tells this death from any start-up crash."""

import os
import signal
import sys

import evocluster


def fitness(x: int) -> int:
    if x == 5:
        # the MPI rank as the launchers set it (MPICH's hydra, Open MPI); "-" elsewhere
        rank = os.environ.get("PMI_RANK") or os.environ.get("OMPI_COMM_WORLD_RANK") or "-"
        print(f"DYING rank {rank} pid {os.getpid()}", file=sys.stderr, flush=True)
        if sys.argv[1] == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        os._exit(3)
    return x


if __name__ == "__main__":
    print("STARTED", evocluster.get_executor().n_workers, "workers", flush=True)
    print("results:", evocluster.map(fitness, range(20)))
