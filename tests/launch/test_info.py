"""``python -m evocluster info``, run as users run it: a real subprocess, its lines checked against
the real values of this environment (the versions ``import`` finds, the MPICH wheel's library and
``mpiexec``, Debian's Open MPI presented as ``mpiexec``), and never an MPI start.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import sysconfig
from pathlib import Path

import cloudpickle
import mpi4py
import numpy
import pytest
from helpers import OPENMPI_PYTHON, ROOT, clean_env, launcher, output, require_openmpi, run

from evocluster import __version__
from evocluster._info import Flavour, launcher_flavour, library_flavour

#: The lines, in their order.
NAMES = [
    "evocluster",
    "python",
    "platform",
    "numpy",
    "cloudpickle",
    "mpi4py",
    "mpi library",
    "mpiexec",
    "mpiexec/mpi4py match",
    "scoop",
    "slurm",
    "backend",
    "signing key",
]

#: Where the MPICH wheel (the ``mpi`` extra) puts its ``mpiexec``: this environment's scripts.
WHEEL_BIN = Path(sysconfig.get_path("scripts"))
WHEEL_MPIEXEC = WHEEL_BIN / "mpiexec"


def _info(tmp_path: Path, *args: str, python: str | None = None, **env: str) -> dict[str, str]:
    """Run ``info``, check it exits 0 with nothing on stderr, return its lines (name -> value).
    ``PATH`` is an empty directory unless given: no ``mpiexec`` is found, none is started."""
    (tmp_path / "xdg").mkdir(exist_ok=True)  # the signing key: not the real home's
    env.setdefault("PATH", str(tmp_path / "empty"))
    env.setdefault("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    cmd = launcher("info", *args)
    if python is not None:
        cmd[0] = python
    r = run(cmd, timeout=60, cwd=tmp_path, env=clean_env(**env), no_leftovers=True)
    assert r.returncode == 0, output(r)
    assert r.stderr == "", output(r)
    if "--json" in args:
        found = json.loads(r.stdout)
        assert isinstance(found, dict), output(r)
        return found
    lines = r.stdout.splitlines()
    assert [line.partition(": ")[0] for line in lines] == NAMES, output(r)
    return {name: value for name, _, value in (line.partition(": ") for line in lines)}


def test_each_line_says_what_this_environment_has(tmp_path: Path) -> None:
    found = _info(tmp_path)
    package = Path(__file__).resolve().parents[2] / "evocluster"
    assert found["evocluster"] == f"{__version__} ({package})"
    assert found["python"] == f"{platform.python_version()} (CPython, {sys.executable})"
    assert found["platform"] == platform.platform()
    assert found["numpy"] == numpy.__version__
    assert found["cloudpickle"] == cloudpickle.__version__
    assert found["mpi4py"] == mpi4py.__version__
    # the MPICH wheel's library, found in this environment, asked without starting MPI
    assert found["mpi library"].startswith("MPICH 5."), found
    assert "libmpi" in found["mpi library"], found
    assert "inside this environment" in found["mpi library"], found
    assert "started" not in found["mpi library"], found
    assert found["mpiexec"] == "not on PATH"
    assert found["mpiexec/mpi4py match"] == "unknown: no mpiexec on PATH"
    assert found["scoop"] == _version_of("scoop")
    assert found["slurm"] == "not in an allocation"
    assert found["backend"] == f"local, {os.cpu_count()} worker processes (auto)"
    key = tmp_path / "xdg" / "evocluster" / "key"
    assert found["signing key"] == (
        f"{key} (not created yet: the first checkpoint or SCOOP run creates it)"
    )
    assert not key.exists(), "info created the key"


def _version_of(module: str) -> str:
    import importlib.metadata

    return importlib.metadata.version(module)


def test_json_has_the_same_names_and_values(tmp_path: Path) -> None:
    lines = _info(tmp_path)
    found = _info(tmp_path, "--json")
    assert list(found) == NAMES
    assert found == lines


def test_mpi_is_not_started(tmp_path: Path) -> None:
    """MPICH's MPI_Init would try the process manager at PMI_PORT (nothing listens there) and
    fail; info asks the library before MPI_Init, so it answers at once all the same."""
    found = _info(tmp_path, PMI_PORT="127.0.0.1:1", PMI_ID="0")
    assert found["mpi library"].startswith("MPICH 5."), found
    assert found["backend"].startswith("local, "), found


def test_slurm_allocation_from_its_variables(tmp_path: Path) -> None:
    found = _info(
        tmp_path,
        SLURM_JOB_ID="1234",
        SLURM_ARRAY_JOB_ID="1200",
        SLURM_ARRAY_TASK_ID="34",
        SLURM_JOB_NUM_NODES="2",
        SLURM_JOB_NODELIST="node[01-02]",
        SLURM_NTASKS="64",
        SLURM_TASKS_PER_NODE="32(x2)",
    )
    assert found["slurm"] == (
        "job 1234, array task 1200_34, 2 node(s) (node[01-02]), 64 task(s), tasks per node 32(x2)"
    )
    found = _info(tmp_path, SLURM_JOB_ID="99")
    assert found["slurm"] == "job 99, no task count (SLURM_NTASKS not set)"


def test_backend_follows_the_launchers_rule_and_its_refusals(tmp_path: Path) -> None:
    assert _info(tmp_path, EVOCLUSTER_BACKEND="serial")["backend"] == "serial (forced: serial)"
    assert _info(tmp_path, EVOCLUSTER_WORKERS="3")["backend"] == "local, 3 worker processes (auto)"
    # an MPI launcher's environment (nothing started: the rule reads the variables)
    found = _info(tmp_path, PMI_SIZE="4", PMI_RANK="0")
    assert found["backend"] == "mpi, 4 ranks: rank 0 runs the job, 3 evaluate (auto)"
    found = _info(tmp_path, PMI_SIZE="1", PMI_RANK="0")
    assert found["backend"] == "serial: an MPI world of 1 rank evaluates on rank 0 (auto)"
    found = _info(tmp_path, PMI_SIZE="2", PMI_RANK="0", EVOCLUSTER_BACKEND="local")
    assert found["backend"].startswith("refused: --backend local under an MPI launcher"), found
    refused = _info(tmp_path, EVOCLUSTER_BACKEND="scoop")["backend"]
    assert refused.startswith("refused: the SCOOP backend serves jobs started by SCOOP"), refused
    bad = _info(tmp_path, EVOCLUSTER_WORKERS="three")["backend"]
    assert bad == "refused: EVOCLUSTER_WORKERS='three' is not a valid int", bad


def test_signing_key_is_located_never_shown(tmp_path: Path) -> None:
    secret = "s3cr3t-" * 8
    found = _info(tmp_path, EVOCLUSTER_KEY=secret)
    key = tmp_path / "xdg" / "evocluster" / "key"
    assert found["signing key"] == f"EVOCLUSTER_KEY in the environment (wins over {key})"
    found = _info(tmp_path, EVOCLUSTER_KEY="short")
    assert found["signing key"].endswith("too short: at least 32 characters are needed")
    key.parent.mkdir(parents=True)
    key.write_text(secret)
    key.chmod(0o600)
    found = _info(tmp_path)
    assert found["signing key"] == f"{key} (exists, mode 600)"
    key.chmod(0o644)
    found = _info(tmp_path)
    assert found["signing key"].startswith(f"{key} (mode 644, not yours only"), found
    for run_json in (False, True):
        text = json.dumps(_info(tmp_path, *(["--json"] if run_json else [])))
        assert secret not in text and "s3cr3t" not in text


@pytest.mark.mpi
def test_the_wheels_mpiexec_matches_its_library(tmp_path: Path) -> None:
    """``mpiexec`` is started with ``--version`` only: no MPI job."""
    if not WHEEL_MPIEXEC.exists():
        pytest.fail(f"no {WHEEL_MPIEXEC}: pip install -e '.[mpi,test]' (the MPICH wheel)")
    found = _info(tmp_path, PATH=f"{WHEEL_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    library = found["mpi library"].split(" (")[0]
    assert library.startswith("MPICH 5."), found
    shown = str(WHEEL_MPIEXEC)
    if WHEEL_MPIEXEC.is_symlink():
        shown += f" -> {os.path.realpath(WHEEL_MPIEXEC)}"
    assert found["mpiexec"] == f"{shown} ({library})", found
    assert found["mpiexec/mpi4py match"] == "yes", found


@pytest.mark.mpi
def test_open_mpis_mpiexec_first_on_path_does_not_match_the_wheel(tmp_path: Path) -> None:
    """Debian's Open MPI presented as ``mpiexec`` before the wheel's: ``NO`` and what to do.
    The Open MPI environment's Python (mpi4py built against Open MPI) matches it: ``yes``."""
    openmpi = require_openmpi()
    first = tmp_path / "bin"
    first.mkdir()
    (first / "mpiexec").symlink_to(openmpi)
    path = os.pathsep.join([str(first), str(WHEEL_BIN), os.environ.get("PATH", "")])
    found = _info(tmp_path, PATH=path)
    assert found["mpiexec"].startswith(f"{first / 'mpiexec'} -> "), found
    assert "(Open MPI " in found["mpiexec"], found
    match = found["mpiexec/mpi4py match"]
    library = found["mpi library"].split(" (")[0]
    assert match.startswith(f"NO: mpi4py uses {library} but mpiexec ({first / 'mpiexec'}) is "
                            "Open MPI "), match  # fmt: skip
    assert f"put this environment's {WHEEL_MPIEXEC} first on PATH" in match, match
    assert "rebuild mpi4py against the system MPI" in match, match
    # the same PATH, seen from mpi4py compiled against Open MPI (this tree's evocluster)
    theirs = _info(tmp_path, python=str(OPENMPI_PYTHON), PATH=path, PYTHONPATH=str(ROOT))
    assert theirs["evocluster"].endswith(f"({ROOT / 'evocluster'})"), theirs
    assert theirs["mpi library"].startswith("Open MPI "), theirs
    # what the library says and what its mpiexec says agree (Debian's: 4.1.4 both)
    assert found["mpiexec"].endswith(f"({theirs['mpi library'].split(' (')[0]})"), found
    assert theirs["mpiexec/mpi4py match"] == "yes", theirs


@pytest.mark.parametrize(
    ("text", "flavour"),
    [
        ("MPICH Version:      5.0.2\nMPICH Release date: ...\n", Flavour("MPICH", "5.0.2")),
        ("Open MPI v4.1.4, package: Debian OpenMPI, ident: 4.1.4", Flavour("Open MPI", "4.1.4")),
        ("Intel(R) MPI Library 2021.10 for Linux* OS\n", Flavour("Intel MPI", "2021.10")),
        (
            "MPI VERSION    : CRAY MPICH version 8.1.25.17 (ANL base 3.4a2)",
            Flavour("Cray MPICH", "8.1.25.17"),
        ),
        ("MVAPICH2 Version      :\t2.3.7\n", Flavour("MVAPICH", "2.3.7")),
        ("Some MPI 1.0", None),
    ],
)
def test_library_flavours(text: str, flavour: Flavour | None) -> None:
    assert library_flavour(text) == flavour


@pytest.mark.parametrize(
    ("text", "flavour"),
    [
        ("HYDRA build details:\n    Version:          5.0.2\n", Flavour("MPICH", "5.0.2")),
        ("mpiexec (OpenRTE) 4.1.4\n\nReport bugs to ...", Flavour("Open MPI", "4.1.4")),
        ("mpiexec (Open MPI) 5.0.3\n", Flavour("Open MPI", "5.0.3")),
        (
            "Intel(R) MPI Library for Linux* OS, Version 2021.10 Build 20230619 (id: c2e19c2f3e)",
            Flavour("Intel MPI", "2021.10"),
        ),
        ("srun: unrecognized option", None),
    ],
)
def test_launcher_flavours(text: str, flavour: Flavour | None) -> None:
    assert launcher_flavour(text) == flavour


def test_a_bad_option_is_a_usage_error(tmp_path: Path) -> None:
    r = run(launcher("info", "--jsn"), env=clean_env(PATH=str(tmp_path)))
    assert r.returncode == 2, output(r)
    assert "--jsn" in r.stderr, output(r)
