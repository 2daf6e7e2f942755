"""A fitness that changes the working directory; the job prints its own afterwards."""

import os
import tempfile

import evocluster


def wander(x: int) -> int:
    os.chdir(tempfile.gettempdir())
    return x + 1


if __name__ == "__main__":
    before = os.getcwd()
    print("RESULTS", evocluster.map(wander, [1, 2]), flush=True)
    print("SAME DIRECTORY", os.getcwd() == before, flush=True)
