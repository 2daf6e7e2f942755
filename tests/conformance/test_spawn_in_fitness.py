"""A fitness may use a process pool of the ``spawn`` or ``forkserver`` start method (issue 20,
item 11): ``multiprocessing``'s ``Pool`` and ``ProcessPoolExecutor(mp_context=...)``.

Workers imported the job as ``__worker__``, so its functions were pickled as ``__worker__.f``,
which a spawned process -- it re-runs the job's file as ``__mp_main__`` -- could not import: each
died unpickling its first task ("No module named '__worker__'") and the pool waited for ever.
Workers now import the job as ``__mp_main__``, multiprocessing's own name for it, and the job's
classes come back from those processes as the same classes.  Under MPI the pool's processes also
inherited the rank's ignored SIGTERM, so ``Pool.terminate()`` could not end them and the pool hung
at its ``with`` block's end, one run in three.  Under SCOOP the job is SCOOP's module
``SCOOP_WORKER``, which a spawned process looked for by that name ("No module named
SCOOP_WORKER"), and the pool waited for ever, too.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from helpers import declare, launcher, output, run

JOB = """\
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor

import evocluster


class Score:
    def __init__(self, value):
        self.value = value


def square(x):
    return x * x


def score(x):
    return Score(x)


def fitness(method):
    context = multiprocessing.get_context(method)
    with context.Pool(1) as pool:
        pooled = pool.map(square, [1, 2, 3])
    with ProcessPoolExecutor(1, mp_context=context) as ex:
        executed = list(ex.map(square, [4, 5]))
        returned = ex.submit(score, 6).result()
    # the job's class, not a copy: the spawned process's __mp_main__ is this job
    assert type(returned) is Score, (type(returned), Score)
    return pooled + executed + [returned.value]


if __name__ == "__main__":
    print(evocluster.map(fitness, sys.argv[1:]), flush=True)
"""

WHERE = {
    "serial": ["--backend", "serial"],
    "local": ["--backend", "local", "--workers", "2"],
    "local-isolate": ["--backend", "local", "--workers", "2", "--isolate"],
    "mpich-wheel": [],
    "scoop": [sys.executable, "-m", "scoop", "-n", "2"],
}


@pytest.mark.parametrize("where", declare(WHERE, mpi=["mpich-wheel"], scoop=["scoop"]))
@pytest.mark.timeout(150)
def test_a_spawn_or_forkserver_pool_inside_a_fitness_works(tmp_path: Path, where: str) -> None:
    job = tmp_path / "job.py"
    job.write_text(JOB)
    if where == "scoop":  # SCOOP imported the job as SCOOP_WORKER, which spawn looked for
        cmd = WHERE[where]
    else:
        cmd = launcher(*WHERE[where], mpi=3 if where.startswith("mpich") else None)
    r = run([*cmd, str(job), "spawn", "forkserver"], timeout=90, cwd=tmp_path, no_leftovers=True)
    assert r.returncode == 0, output(r)
    assert r.stdout.strip() == str([[1, 4, 9, 16, 25, 6]] * 2), output(r)
    # multiprocessing's resource tracker and forkserver end with the worker: not leftovers
    assert "a fitness had left running" not in r.stderr, output(r)
