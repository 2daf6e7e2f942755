"""Report the executor's counters after some work: under MPI, how many workers have a doorbell
and how many rings were sent.  Prints one JSON line; used by ``tests/test_doorbell.py``.

``doorbells.py WORKERS``: first wait (60 s at most) until that many workers have connected their
doorbell, as ``stats()`` shows, so that every message counted afterwards is one a ring can follow.
"""

import json
import sys
import time

import evocluster


def slow_square(x: int) -> int:
    time.sleep(0.002)
    return x * x


if __name__ == "__main__":
    expected = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    ex = evocluster.get_executor()
    evocluster.map(slow_square, range(8))  # every worker has started
    deadline = time.monotonic() + 60
    while ex.stats().get("doorbells", 0) < expected and time.monotonic() < deadline:
        time.sleep(0.01)
    before = ex.stats()
    values = []
    for start in range(0, 60, 20):  # three "generations", idle gaps in between
        values += evocluster.map(slow_square, range(start, start + 20))
        time.sleep(0.05)
    assert values == [x * x for x in range(60)], values
    after = ex.stats()
    delta = {k: after[k] - before[k] for k in ("messages_sent", "rings") if k in after}
    print(
        json.dumps(
            {
                "backend": ex.backend,
                "n_workers": ex.n_workers,
                **after,
                "connected_before": before.get("doorbells", 0),
                "delta": delta,
            }
        )
    )
