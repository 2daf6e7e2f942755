"""Every way an MPI run ends, for the shared-memory tests: ``shm_exits.py DIR MODE``.

The master prints ``SEGMENTS`` and the names of the MPI library's shared memory segments its
process maps (``/dev/shm``: MPICH's ``mpich_shm_*``, Open MPI's ``vader_segment.*``; a name
already unlinked is listed too), then ends the run as MODE says:

* ``normal``: a map, then the job returns (exit 0, MPI_Finalize);
* ``raise``: a map, then the job raises (exit 1);
* ``abandon``: a map whose evaluation never ends, given up by its timeout; the job returns (exit 0
  through MPI_Abort once the grace has passed);
* ``worker-dies``: a fitness kills its own worker process with SIGKILL (the launcher ends the job);
* ``loop-fails``: a worker's own serve loop fails and its process lives on in MPI_Finalize (the
  master ends the job, the launcher does not);
* ``wait``: the job waits for an evaluation that never ends: the test acts (SIGINT twice to
  mpiexec, SIGKILL to the worker) once ``DIR/master`` exists; ``DIR/worker-PID`` names the worker.

A SLURM job that SLURM has started again (``SLURM_RESTART_COUNT`` > 0) runs ``normal`` instead.
"""

import os
import signal
import sys
import time

import evocluster
import evocluster.worker

PREFIXES = ("mpich_shm_", "mpich_vci_", "vader_segment.", "sm_segment.")


def segments() -> list[str]:
    found = set()
    with open("/proc/self/maps") as fh:
        for line in fh:
            fields = line.split(None, 5)
            path = fields[5].strip() if len(fields) == 6 else ""
            name = path.removeprefix("/dev/shm/").removesuffix(" (deleted)")
            if path.startswith("/dev/shm/") and name.startswith(PREFIXES):
                found.add(name)
    return sorted(found)


def stuck(where: str) -> None:
    with open(os.path.join(where, f"worker-{os.getpid()}"), "w"):
        pass
    while True:
        time.sleep(600)


def dies(x: int) -> int:
    if x == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def _broken(obj: object) -> bytes:
    raise RuntimeError("injected: the worker's own loop fails")


def breaks(x: int) -> int:
    if x == 3:
        evocluster.worker.dumps = _broken  # type: ignore[assignment]
    return x


def wait_started(where: str) -> None:
    deadline = time.monotonic() + 60
    while not any(n.startswith("worker-") for n in os.listdir(where)):
        if time.monotonic() > deadline:
            raise SystemExit("shm_exits: no worker started the evaluation within 60 s")
        time.sleep(0.01)
    with open(os.path.join(where, "master"), "w") as fh:
        fh.write(str(os.getpid()))


if __name__ == "__main__":
    where, mode = sys.argv[1], sys.argv[2]
    if os.environ.get("SLURM_RESTART_COUNT", "0") != "0":  # requeued: its second run ends well
        mode = "normal"
    ex = evocluster.get_executor()
    print("SEGMENTS", *segments(), flush=True)
    if mode in ("normal", "raise"):
        print("RESULTS", list(ex.map(abs, [-1, -2, -3])), flush=True)
        if mode == "raise":
            raise RuntimeError("the job fails on purpose")
    elif mode == "abandon":
        try:
            list(ex.map(stuck, [where], timeout=3))
        except TimeoutError:
            print("CAUGHT TimeoutError", flush=True)
    elif mode in ("worker-dies", "loop-fails"):
        print("RESULTS", list(ex.map(dies if mode == "worker-dies" else breaks, range(8))))
    else:
        future = ex.submit(stuck, where)
        wait_started(where)
        print("WAITING", flush=True)
        future.result()
