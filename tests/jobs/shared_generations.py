"""A DEAP-style loop over shared data: ``functools.partial(evaluate, gen=g)`` each generation.

``python -m evocluster shared_generations.py OUT.json [MB]``.  Shares MB megabytes (default 32),
maps a new partial for 5 generations, then ``abs``, then shares a new version of the same name and
maps twice more.  Writes to OUT.json, after each step: the master's ``bytes_sent``, each worker's
resident memory (``/proc/PID/smaps_rollup``, by the pids the evaluations report; the workers run on
this host), and whether every result was right; plus what ``share`` said of an object that cannot
be pickled and of a call inside a fitness, and what a map read after that.
"""

import functools
import json
import os
import sys
import threading

import numpy as np

import evocluster


def evaluate(i, gen):
    data = evocluster.shared("data")
    return float(data[i]) + gen, os.getpid()


def share_inside(x):
    evocluster.share("small", [x])  # refused: it would change this worker's data only
    return x


def read_small(i):
    return evocluster.shared("small")[i]


def rss_mb(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Rss:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


if __name__ == "__main__":
    path = sys.argv[1]
    mb = float(sys.argv[2]) if len(sys.argv) > 2 else 32.0
    ex = evocluster.get_executor()
    out = {"n_workers": ex.n_workers, "backend": ex.backend, "steps": []}
    data = np.arange(int(mb * 2**20) // 8, dtype=np.float64)
    out["share_bytes"] = data.nbytes
    pids = set()

    def step(name, fn, offset):
        values = evocluster.map(fn, range(40))
        pids.update(pid for _, pid in values)
        out["steps"].append(
            {
                "name": name,
                "ok": [v for v, _ in values] == [float(i) + offset for i in range(40)],
                "bytes_sent": ex.stats()["bytes_sent"],
                "rss_mb": {str(p): rss_mb(p) for p in sorted(pids)},
            }
        )

    evocluster.share("data", data)
    for g in range(5):
        step(f"gen {g}", functools.partial(evaluate, gen=g), g)
    assert evocluster.map(abs, [-1, -2] * 10) == [1, 2] * 10
    step("after abs", functools.partial(evaluate, gen=0), 0)
    evocluster.share("data", data + 1000.0)  # a new version of the same name
    for g in range(5, 7):
        step(f"gen {g}", functools.partial(evaluate, gen=g), 1000 + g)
    # share() of what cannot reach the workers: refused at the call, naming the share
    try:
        evocluster.share("lock", threading.Lock())
        out["unpicklable"] = "accepted"
    except evocluster.SerializationError as e:
        out["unpicklable"] = str(e)
    evocluster.sharing.unshare("lock")  # f035c23 accepted it: forget it again
    try:
        out["abs after"] = evocluster.map(abs, [-3, -4])
    except Exception as e:  # f035c23: every map failed after such a share, abs included
        out["abs after"] = f"{type(e).__name__}: {e}"
    # share() inside a fitness: refused there (it would change one worker's data only)
    evocluster.share("small", [0, 1, 2, 3])
    try:
        evocluster.map(share_inside, [5, 6, 7, 8])
        out["inside"] = "accepted"
    except RuntimeError as e:
        out["inside"] = str(e)
    try:
        out["read after"] = evocluster.map(read_small, [3, 2, 3, 2, 1, 0, 1, 0])
    except Exception as e:
        out["read after"] = f"{type(e).__name__}: {e}"
    with open(path, "w") as fh:
        json.dump(out, fh, indent=1)
