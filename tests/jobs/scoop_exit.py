"""How a SCOOP run ends: ``python -m scoop -n 3 scoop_exit.py MODE``.

Modes: ``ok`` (maps and ends normally), ``raise`` (raises after a map), ``raise-early`` (raises
before evocluster did anything but be imported), ``fitness-raises`` (a fitness exception is not
caught), ``exit0`` / ``exit3`` (``sys.exit``), ``kill-idle`` (an idle worker is killed; the job
catches the BrokenPool and ends normally), ``idle-cpu`` (the origin waits 2 s for one evaluation
and prints how much CPU it used meanwhile), ``n1`` (for ``-n 1``: the origin evaluates).
"""

import os
import signal
import sys
import time

import evocluster


def square(x):
    return x * x


def pid_of(_):
    time.sleep(0.05)
    return os.getpid()


class Point:
    """A class of the job: its instances travel both ways by reference."""

    def __init__(self, x):
        self.x = x


def shift(point):
    return Point(point.x + 1)


def fails(x):
    if x == 2:
        raise ValueError(f"individual {x} is infeasible")
    return x


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "raise-early":
        raise RuntimeError("the job failed before its first map")
    ex = evocluster.get_executor()
    print("BACKEND", ex.backend, ex.n_workers, flush=True)
    print("RESULT", evocluster.map(square, range(10)), flush=True)
    if mode == "ok":
        moved = evocluster.map(shift, [Point(1), Point(2)])
        print("POINTS", type(moved[0]).__name__, [p.x for p in moved], flush=True)
    if mode == "raise":
        raise RuntimeError("the job failed on purpose")
    if mode == "fitness-raises":
        evocluster.map(fails, range(5))
    if mode in ("exit0", "exit3"):
        sys.exit(int(mode[-1]))
    if mode == "kill-idle":
        pids = set(evocluster.map(pid_of, range(4 * ex.n_workers)))
        victim = max(pids)
        os.kill(victim, signal.SIGKILL)
        print("KILLED", victim, flush=True)
        try:
            evocluster.map(pid_of, range(40))
        except evocluster.BrokenPool as e:
            print("BROKEN", e, flush=True)
        try:
            ex.submit(square, 3)
        except evocluster.BrokenPool:
            print("STILL BROKEN", flush=True)
    if mode == "idle-cpu":
        future = ex.submit(time.sleep, 2.0)
        cpu = time.process_time()
        future.result()
        print("IDLE CPU", time.process_time() - cpu, flush=True)
    if mode == "n1":
        print("PIDS", set(evocluster.map(pid_of, range(3))) == {os.getpid()}, flush=True)
    print("END", flush=True)
