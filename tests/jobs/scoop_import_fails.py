"""A job whose import fails on SCOOP's workers only (a module missing on the compute nodes)."""

import evocluster

if __name__ != "__main__":
    raise RuntimeError("the licence server is not reachable from this node")


def fitness(x):
    return x


if __name__ == "__main__":
    print("RESULT", evocluster.map(fitness, range(10)))
