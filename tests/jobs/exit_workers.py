"""Prints how many workers the job's executors have: the default one and ``Executor(N)``."""

import sys

import evocluster

if __name__ == "__main__":
    print("DEFAULT", evocluster.get_executor().n_workers, flush=True)
    if sys.argv[1:]:
        with evocluster.Executor(max_workers=int(sys.argv[1])) as ex:
            print("OWN", ex.n_workers, flush=True)
