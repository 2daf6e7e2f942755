"""The job raises while a worker is stuck in a very long evaluation: the run must end now.

The job raises only once the worker has started the evaluation (the fitness creates a file the
master waits for), never on a guess that it was dispatched by then."""

import os
import tempfile
import time

import evocluster


def slow(seconds: float, started: str) -> float:
    with open(started, "w"):  # evidence for the master: this evaluation is under way
        pass
    time.sleep(seconds)
    return seconds


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as where:
        started = os.path.join(where, "started")
        evocluster.get_executor().submit(slow, 600.0, started)  # ten minutes, never waited for
        deadline = time.monotonic() + 60
        while not os.path.exists(started):
            if time.monotonic() > deadline:
                raise SystemExit("stuck_worker: no worker started the evaluation within 60 s")
            time.sleep(0.01)
        raise RuntimeError("the job gives up")
