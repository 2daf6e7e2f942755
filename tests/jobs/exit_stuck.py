"""A worker stuck in an evaluation that never returns, for the exit-path tests.

``exit_stuck.py DIR MODE``: the fitness writes its worker's pid to ``DIR/worker-PID`` and sleeps
for ever.  The master writes ``DIR/master`` once the evaluation is under way, then:

* ``map-timeout``: ``executor.map(stuck, ..., timeout=5)``, catches the ``TimeoutError`` and
  returns normally (the run must still end, its exit code 0);
* ``wait``: waits for the evaluation's result (for ever: the test sends a signal).
"""

import os
import sys
import time

import evocluster


def stuck(where: str) -> None:
    with open(os.path.join(where, f"worker-{os.getpid()}"), "w"):
        pass
    while True:
        time.sleep(600)


def started(where: str) -> bool:
    return any(name.startswith("worker-") for name in os.listdir(where))


def wait_started(where: str) -> None:
    deadline = time.monotonic() + 60
    while not started(where):
        if time.monotonic() > deadline:
            raise SystemExit("exit_stuck: no worker started the evaluation within 60 s")
        time.sleep(0.01)
    with open(os.path.join(where, "master"), "w") as fh:
        fh.write(str(os.getpid()))


if __name__ == "__main__":
    where, mode = sys.argv[1], sys.argv[2]
    ex = evocluster.get_executor()
    print("workers", ex.n_workers, flush=True)
    if mode == "map-timeout":
        try:
            list(ex.map(stuck, [where], timeout=5))
        except TimeoutError:
            print("CAUGHT TimeoutError", flush=True)
        wait_started(where)  # the evaluation is under way as the job returns
        print("RETURNING", flush=True)
    else:
        future = ex.submit(stuck, where)
        wait_started(where)
        print("WAITING", flush=True)
        future.result()
