"""SCOOP runs that lose a process evocluster does not own, or exit 75 (tests/test_scoop_faults.py).

``python -m scoop -n 3 scoop_fault_lost.py MODE``; the origin prints ``PIDS`` (every process of
the run on this host, the launcher first) and ``KILLED <time.time()>`` just before the fault, so
that the test can check each process by pid and time the end.

* ``kill-launcher-busy``: SIGKILL SCOOP's launcher while the origin runs the job's own code.
* ``kill-launcher-waiting``: the same while the origin waits for evaluations in flight.
* ``kill-launcher-checkpointing``: the same while the job's loop watches SIGTERM (as
  ``evocluster.Checkpoint`` does): it prints ``STOPPED`` and exits 75 when asked to stop.
* ``kill-origin``: the origin SIGKILLs itself while its workers evaluate.
* ``worker-kills-origin``: a worker's evaluation SIGKILLs the origin (the workers idle).
* ``exit75``: the job exits 75 (EX_TEMPFAIL), as an engine loop that checkpointed on SIGUSR1.
"""

import os
import signal
import sys
import time

import evocluster


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rpartition(")")[2].split()[1])


def children_of(pid: int) -> set[int]:
    found: set[int] = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as fh:
            found.update(int(p) for p in fh.read().split())
    return found


def kill(pid: int) -> int:
    os.kill(pid, signal.SIGKILL)
    return pid


def square(x: int) -> int:
    return x * x


def report(launch: int, launcher: int) -> None:
    """Every process of the run on this host: the launcher, its children (SCOOP's launch process)
    and theirs (the origin, the workers, and whatever evocluster started)."""
    pids = {launcher} | children_of(launcher)
    for child in list(pids - {launcher}):
        pids |= children_of(child)
    pids |= children_of(os.getpid())
    print("PIDS", launcher, *sorted(pids - {launcher}), flush=True)


if __name__ == "__main__":
    mode = sys.argv[1]
    ex = evocluster.get_executor()
    print("SQUARES", evocluster.map(square, range(8)), flush=True)  # every worker is up
    launch = os.getppid()
    launcher = parent_of(launch)
    report(launch, launcher)
    if mode == "exit75":
        sys.exit(75)
    # every worker busy for longer than any test waits; none when a worker kills the origin (a
    # busy worker may hold the next task in reserve, which would then never run)
    busy = 0 if mode == "worker-kills-origin" else ex.n_workers
    pending = [ex.submit(time.sleep, 600) for _ in range(busy)]
    time.sleep(0.5)
    print("KILLED", time.time(), flush=True)
    if mode == "kill-launcher-busy":
        os.kill(launcher, signal.SIGKILL)
        time.sleep(600)  # the job's own code: the origin is not waiting on SCOOP
    elif mode == "kill-launcher-checkpointing":
        asked = []
        signal.signal(signal.SIGTERM, lambda signum, frame: asked.append(signum))
        os.kill(launcher, signal.SIGKILL)
        while not asked:
            time.sleep(0.05)  # one generation
        print("STOPPED", signal.Signals(asked[0]).name, flush=True)
        sys.exit(75)
    elif mode == "kill-launcher-waiting":
        os.kill(launcher, signal.SIGKILL)
        for f in pending:
            f.result()
    elif mode == "kill-origin":
        os.kill(os.getpid(), signal.SIGKILL)
    elif mode == "worker-kills-origin":
        evocluster.map(kill, [os.getpid()])
    print("END", flush=True)
