"""Report the executor's counters after some work: under MPI, how many workers have a doorbell
and how many rings were sent.  Prints one JSON line; used by ``tests/test_doorbell.py``."""

import json
import time

import evocluster


def slow_square(x: int) -> int:
    time.sleep(0.002)
    return x * x


if __name__ == "__main__":
    ex = evocluster.get_executor()
    evocluster.map(slow_square, range(8))  # every worker has started (and connected, under MPI)
    time.sleep(0.2)
    before = ex.stats()
    values = []
    for start in range(0, 60, 20):  # three "generations", idle gaps in between
        values += evocluster.map(slow_square, range(start, start + 20))
        time.sleep(0.05)
    assert values == [x * x for x in range(60)], values
    after = ex.stats()
    delta = {k: after[k] - before[k] for k in ("messages_sent", "rings") if k in after}
    print(json.dumps({"backend": ex.backend, "n_workers": ex.n_workers, **after, "delta": delta}))
