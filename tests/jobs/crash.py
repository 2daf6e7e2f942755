"""A fitness that kills its own worker process (a segfault, the OOM killer, os._exit)."""

import os
import signal
import sys

import evocluster


def fitness(x: int) -> int:
    if x == 5:
        if sys.argv[1] == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        os._exit(3)
    return x


if __name__ == "__main__":
    print("results:", evocluster.map(fitness, range(20)))
