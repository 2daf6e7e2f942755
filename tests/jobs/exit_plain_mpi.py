"""Calls evocluster.map, for ``mpiexec -n N python exit_plain_mpi.py`` (no launcher)."""

import evocluster

if __name__ == "__main__":
    print("RESULTS", evocluster.map(abs, [-1, -2]), flush=True)
