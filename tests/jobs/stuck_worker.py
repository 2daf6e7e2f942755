"""The job raises while a worker is stuck in a very long evaluation: the run must end now."""

import time

import evocluster


def slow(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


if __name__ == "__main__":
    evocluster.get_executor().submit(slow, 600.0)  # ten minutes, never waited for
    time.sleep(0.5)
    raise RuntimeError("the job gives up")
