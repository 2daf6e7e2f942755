"""A job whose import fails on the workers only (a module missing on the compute nodes)."""

import evocluster

if __name__ == "__mp_main__":  # a worker's name for the job (multiprocessing's)
    raise RuntimeError("the licence server is not reachable from this node")


def fitness(x: int) -> int:
    return x


if __name__ == "__main__":
    print(evocluster.map(fitness, range(10)))
