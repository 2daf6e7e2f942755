"""Count the doorbells the master has after start-up, and the rings of some work.  Prints one JSON
line; used by ``tests/test_doorbell.py`` (with ``doorbell_strangers.py``).

``doorbell_count.py WORKERS``: after a first map (every worker has started, and so has tried to
connect its doorbell), wait until that many workers have a doorbell, 10 s at most (``waited``: how
long, from the executor's start), then run three generations with idle gaps between them.
"""

import json
import sys
import time

import evocluster


def slow_square(x: int) -> int:
    time.sleep(0.002)
    return x * x


if __name__ == "__main__":
    expected = int(sys.argv[1])
    start = time.monotonic()
    ex = evocluster.get_executor()
    evocluster.map(slow_square, range(8))
    while ex.stats().get("doorbells", 0) < expected and time.monotonic() < start + 10:
        time.sleep(0.01)
    waited = time.monotonic() - start
    before = ex.stats()
    values = []
    for first in range(0, 60, 20):  # three "generations", idle gaps in between
        values += evocluster.map(slow_square, range(first, first + 20))
        time.sleep(0.05)
    assert values == [x * x for x in range(60)], values
    after = ex.stats()
    print(
        json.dumps(
            {
                "n_workers": ex.n_workers,
                "waited": round(waited, 3),
                "connected_before": before.get("doorbells", 0),
                "doorbells": after.get("doorbells", 0),
                "rings": after.get("rings", 0) - before.get("rings", 0),
                "messages_sent": after["messages_sent"] - before["messages_sent"],
            }
        )
    )
