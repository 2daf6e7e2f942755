"""``evocluster.map`` under ``on_error=raise`` stops at the first failed item, as
``list(Executor.map(...))`` does: the items not yet sent are never evaluated, those in flight
finish, and the exception raised is the lowest failed item's (a serial ``map``'s), on every
backend.  Found by running the fault matrix across hosts: 32 hung evaluations were waited for
(22 s) before the map raised what its first item had already said."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from helpers import clean_env, declare, launch_on, output, run

N = 40
JOB = """
import os, sys, time
import evocluster

DIR = sys.argv[1]
N_ITEMS = int(sys.argv[2])


def fitness(x):
    open(os.path.join(DIR, f"started-{x}"), "w").close()
    time.sleep(0.2)
    if x in (3, 5):
        raise ValueError(f"item {x} fails")
    return x


if __name__ == "__main__":
    try:
        evocluster.map(fitness, range(N_ITEMS))
    except ValueError as e:
        print("RAISED", e, flush=True)
    # the pool goes on: a later map is whole
    print("NEXT", evocluster.map(abs, [-1, -2]), flush=True)
"""


@pytest.mark.parametrize(
    "where", declare(["local", "mpich-wheel", "scoop"], mpi=["mpich-wheel"], scoop=["scoop"])
)
def test_a_failed_item_ends_the_map_without_evaluating_the_rest(tmp_path: Path, where: str) -> None:
    job = tmp_path / "job.py"
    job.write_text(JOB)
    marks = tmp_path / "marks"
    marks.mkdir()
    if where == "scoop":
        cmd = [sys.executable, "-m", "scoop", "-n", "3", str(job), str(marks), str(N)]
    else:
        cmd = launch_on(where, 2, str(job), str(marks), str(N))
    r = run(cmd, timeout=90, cwd=tmp_path, env=clean_env(), no_leftovers=True)
    assert r.returncode == 0, output(r)
    assert "RAISED item 3 fails" in r.stdout, output(r)  # the lowest failed item, not 5
    assert "NEXT [1, 2]" in r.stdout, output(r)
    started = sorted(int(p.name.split("-")[1]) for p in marks.iterdir())
    # items 0..3 ran (3 failed); the ones not yet sent when it failed never started
    assert set(range(4)) <= set(started) and len(started) < N, started
