"""jobs/onemax.py evolves the same population under every backend and any number of workers.

Each configuration runs once per module (a small GA: 10 generations of 60 individuals of 40 bits);
the tests compare what the runs printed and the JSON summaries they wrote.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
from helpers import declare, launcher, mpi_launcher, openmpi_launcher, output, run

JOB = str(Path(__file__).resolve().parents[2] / "jobs" / "onemax.py")
NGEN, POP, LENGTH = 10, 60, 40
ARGS = ["--ngen", str(NGEN), "--pop", str(POP), "--length", str(LENGTH)]

#: name -> (command without the job's args, expected backend, expected number of workers)
CONFIGS = {
    "serial": (launcher("--backend", "serial", JOB), "serial", 1),
    "local-2": (launcher("--backend", "local", "--workers", "2", JOB), "local", 2),
    "mpi-2": ([], "mpi", 1),  # the MPI commands are made when they run: mpiexec may be missing
    "mpi-5": ([], "mpi", 4),
    "openmpi-5": ([], "mpi", 4),  # the system's Open MPI: its command is made when it runs
    "no-launcher": ([sys.executable, JOB], "local", os.cpu_count()),
    "serial-seed-7": (launcher("--backend", "serial", JOB, "--seed", "7"), "serial", 1),
}
REFERENCE = "serial"

#: the runs are shared by the module's tests (once per pytest process): one xdist worker runs them
#: all (``mpi`` marks: conftest.py's rule, from the configuration's name)
pytestmark = pytest.mark.xdist_group("onemax")

GEN_LINE = re.compile(
    r"^gen\s+(\d+)\s+evals\s+(\d+)\s+min\s+([\d.]+)\s+avg\s+([\d.]+)\s+max\s+([\d.]+)$", re.M
)


@pytest.fixture(scope="module")
def onemax(tmp_path_factory):
    """``onemax(name) -> (completed process, JSON summary or None)``, each run at most once."""
    where = tmp_path_factory.mktemp("onemax")
    done = {}

    def get(name):
        if name not in done:
            cmd, _, _ = CONFIGS[name]
            if name.startswith("mpi-"):
                cmd = mpi_launcher(int(name.split("-")[1]), JOB)
            elif name.startswith("openmpi"):
                cmd = openmpi_launcher(5, JOB)
            summary = where / f"{name}.json"
            r = run([*cmd, *ARGS, "--json", str(summary)], cwd=where)
            done[name] = (r, json.loads(summary.read_text()) if summary.exists() else None)
        return done[name]

    return get


def generations(stdout):
    """The per-generation lines as tuples ``(gen, evals, min, avg, max)``."""
    return [
        (int(g), int(e), float(lo), float(avg), float(hi))
        for g, e, lo, avg, hi in GEN_LINE.findall(stdout)
    ]


#: the configurations that launch mpiexec (marked mpi)
MPI_CONFIGS = ["mpi-2", "mpi-5", "openmpi-5"]


@pytest.mark.parametrize("name", declare(CONFIGS, mpi=MPI_CONFIGS))
def test_run_succeeds_and_reports(onemax, name):
    r, summary = onemax(name)
    assert r.returncode == 0, output(r)

    gens = generations(r.stdout)
    assert [g[0] for g in gens] == list(range(NGEN + 1)), output(r)
    assert gens[0][1] == POP  # the whole initial population is evaluated
    for _, evals, lo, avg, hi in gens:
        assert 0 <= evals <= POP
        assert 0 <= lo <= avg <= hi <= LENGTH

    _, expected_backend, expected_workers = CONFIGS[name]
    assert summary is not None, output(r)
    assert summary["backend"] == expected_backend
    assert summary["n_workers"] == expected_workers
    assert summary["generations"] == NGEN
    assert summary["best_fitness"] == gens[-1][4]  # the best of the last generation
    assert re.fullmatch(r"[0-9a-f]{64}", summary["population_sha256"])

    # the closing lines say the same as the summary
    assert f"best fitness {summary['best_fitness']:g}\n" in r.stdout
    assert f"population sha256 {summary['population_sha256']}\n" in r.stdout
    assert f"evaluated by backend {expected_backend} with {expected_workers} worker(s)" in r.stdout


@pytest.mark.parametrize(
    "name", declare([n for n in CONFIGS if n not in (REFERENCE, "serial-seed-7")], mpi=MPI_CONFIGS)
)
def test_result_is_identical_to_serial(onemax, name):
    ref, ref_summary = onemax(REFERENCE)
    r, summary = onemax(name)
    assert ref.returncode == 0 and r.returncode == 0, output(r)
    assert summary["best_fitness"] == ref_summary["best_fitness"]
    assert summary["population_sha256"] == ref_summary["population_sha256"]
    assert generations(r.stdout) == generations(ref.stdout)


def test_other_seed_gives_other_result(onemax):
    ref, ref_summary = onemax(REFERENCE)
    r, summary = onemax("serial-seed-7")
    assert ref.returncode == 0 and r.returncode == 0, output(r)
    assert summary["population_sha256"] != ref_summary["population_sha256"]
    assert generations(r.stdout) != generations(ref.stdout)


def test_population_evolves(onemax):
    r, _ = onemax(REFERENCE)
    gens = generations(r.stdout)
    assert gens, output(r)
    assert gens[-1][3] > gens[0][3]  # the average fitness rose
    assert gens[-1][4] >= gens[0][4]
