"""``python -m evocluster info [--json]``: what a bug report needs to know of this installation.

One ``name: value`` line each, always the same names in the same order (``--json``: one object
of the same names and values): evocluster, Python, the platform, numpy, cloudpickle, mpi4py, the
MPI library behind mpi4py, the ``mpiexec`` first on PATH and whether the two match, SCOOP, the
SLURM allocation, the backend the launcher would choose here, and where the signing key lives
(never the key).  A package that is missing says ``not installed``; whatever goes wrong finding
one value is said on its line, and the command exits 0.

Nothing here starts MPI: the library is asked before ``MPI_Init``
(:mod:`evocluster._backends.mpi_library`), ``mpiexec`` only ``--version``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.metadata
import json
import os
import platform
import re
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from . import _config as config
from . import _signing as signing
from ._version import __version__
from .errors import ConfigurationError

__all__ = ["MPIEXEC_TIMEOUT", "Flavour", "gather", "launcher_flavour", "library_flavour", "main"]

#: Longest ``mpiexec --version`` may take (seconds): a launcher that hangs must not hang ``info``.
MPIEXEC_TIMEOUT = 10.0

#: What a fix of a mismatched mpi4py looks like (docs/launching.md, "On the cluster's own MPI").
_REBUILD = "env MPICC=mpicc pip install --no-binary mpi4py mpi4py"


class Flavour(NamedTuple):
    """An MPI implementation and its version, as a library or a launcher names them."""

    vendor: str  # "MPICH", "Open MPI", "Intel MPI", "Cray MPICH", "MVAPICH"
    version: str

    def __str__(self) -> str:
        return f"{self.vendor} {self.version}"


#: ``MPI_Get_library_version``'s text -> the implementation: the derived MPICHs before MPICH.
_LIBRARIES = (
    ("Open MPI", re.compile(r"\bOpen MPI v(\d[\w.]*)")),
    ("Intel MPI", re.compile(r"Intel\(R\) MPI Library (\d[\w.]*)")),
    ("Cray MPICH", re.compile(r"CRAY MPICH version (\d[\w.]*)", re.IGNORECASE)),
    ("MVAPICH", re.compile(r"MVAPICH\d*\s+Version\s*:\s*(\d[\w.]*)")),
    ("MPICH", re.compile(r"^MPICH Version:\s*(\d[\w.]*)", re.MULTILINE)),
)
#: ``mpiexec --version``'s text -> the implementation: Open MPI's ``mpiexec (Open MPI) 5.0.3`` or
#: ``mpiexec (OpenRTE) 4.1.4``; Intel's hydra names Intel; MPICH's hydra ``Version: 5.0.2``.
_LAUNCHERS = (
    ("Open MPI", re.compile(r"\((?:Open MPI|OpenRTE)\)\s+v?(\d[\w.]*)")),
    ("Intel MPI", re.compile(r"Intel\(R\) MPI Library.*?Version (\d[\w.]*)")),
    ("MPICH", re.compile(r"HYDRA build details:.*?^\s*Version:\s*(\d[\w.]*)", re.S | re.M)),
)


def _flavour(text: str, table: tuple[tuple[str, re.Pattern[str]], ...]) -> Flavour | None:
    for vendor, pattern in table:
        m = pattern.search(text)
        if m:
            return Flavour(vendor, m.group(1).rstrip("."))
    return None


def library_flavour(text: str) -> Flavour | None:
    """The implementation ``MPI_Get_library_version`` names in ``text``; None if unknown."""
    return _flavour(text, _LIBRARIES)


def launcher_flavour(text: str) -> Flavour | None:
    """The implementation ``mpiexec --version`` names in ``text``; None if unknown."""
    return _flavour(text, _LAUNCHERS)


def _first_line(text: str, width: int = 100) -> str:
    line = next((s.strip() for s in text.splitlines() if s.strip()), "(nothing)")
    return line if len(line) <= width else line[: width - 3] + "..."


# ------------------------------------------------------------------------------ the values
def _installed(name: str) -> str:
    """A distribution's version, read from its metadata (importing SCOOP or numpy is not needed
    to know it, and mpi4py's import belongs to the MPI modules)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _here() -> str:
    return f"{__version__} ({Path(__file__).resolve().parent})"


def _python() -> str:
    return f"{platform.python_version()} ({platform.python_implementation()}, {sys.executable})"


class _MPI(NamedTuple):
    """What is known of mpi4py's library and of the ``mpiexec`` first on PATH."""

    library: str  # the "mpi library" line
    flavour: Flavour | None
    inside: bool  # the library is inside this environment (sys.prefix): a wheel's, say MPICH's
    mpiexec: str  # the "mpiexec" line
    path: str | None  # the mpiexec first on PATH
    launcher: Flavour | None


def _library() -> tuple[str, Flavour | None, bool]:
    if _installed("mpi4py") == "not installed":
        return "unknown (mpi4py not installed)", None, False
    try:
        from ._backends import mpi_library

        lib = mpi_library.library()
    except Exception as e:  # a library that does not load: this line says why
        return f"not loadable: {type(e).__name__}: {_first_line(str(e))}", None, False
    flavour = library_flavour(lib.text)
    inside = lib.path is not None and Path(lib.path).resolve().is_relative_to(
        Path(sys.prefix).resolve()
    )
    where = [lib.path or "file not known"]
    if inside:
        where.append("inside this environment")
    if lib.initialized:  # not by this module: something imported mpi4py.MPI before
        where.append("MPI already started in this process")
    named = str(flavour) if flavour else _first_line(lib.text)
    return f"{named} ({', '.join(where)})", flavour, inside


def _version_output(path: str) -> str:
    """What ``path --version`` prints (stdout and stderr), within ``MPIEXEC_TIMEOUT`` seconds.

    Raises:
        subprocess.TimeoutExpired: it did not end in time (its process group is killed).
        OSError: it cannot be run.
    """
    proc = subprocess.Popen(
        [path, "--version"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,  # its own group: a hung launcher is killed with what it started
    )
    try:
        out, _ = proc.communicate(timeout=MPIEXEC_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):  # a pipe another process holds
            proc.communicate(timeout=2)
        raise
    return out


def _mpi() -> _MPI:
    library, flavour, inside = _library()
    path = shutil.which("mpiexec")
    if path is None:
        return _MPI(library, flavour, inside, "not on PATH", None, None)
    real = os.path.realpath(path)
    shown = path if real == path else f"{path} -> {real}"
    try:
        text = _version_output(path)
    except subprocess.TimeoutExpired:
        late = f"{shown} (--version did not answer within {MPIEXEC_TIMEOUT:g} s)"
        return _MPI(library, flavour, inside, late, path, None)
    except OSError as e:
        return _MPI(library, flavour, inside, f"{shown} (cannot run it: {e})", path, None)
    launcher = launcher_flavour(text)
    said = str(launcher) if launcher else f"--version says: {_first_line(text)}"
    return _MPI(library, flavour, inside, f"{shown} ({said})", path, launcher)


def _match(mpi: _MPI) -> str:
    """``yes``; ``NO: ...`` with what to do; or ``unknown: ...`` when one side is not known."""
    if mpi.flavour is None:
        return "unknown: mpi4py's MPI library is not known (see mpi library)"
    if mpi.path is None:
        return "unknown: no mpiexec on PATH"
    if mpi.launcher is None:
        return "unknown: `mpiexec --version` names no MPI evocluster knows"
    if mpi.launcher == mpi.flavour:
        return "yes"
    told = f"NO: mpi4py uses {mpi.flavour} but mpiexec ({mpi.path}) is {mpi.launcher}"
    own = Path(sysconfig.get_path("scripts")) / "mpiexec"
    if mpi.inside and own.exists() and not own.samefile(mpi.path):
        return (
            f"{told}: put this environment's {own} first on PATH, or "
            f"rebuild mpi4py against the system MPI ({_REBUILD})"
        )
    return (
        f"{told}: put {mpi.flavour.vendor}'s mpiexec first on PATH, or rebuild mpi4py against "
        f"the MPI of this mpiexec ({_REBUILD})"
    )


def _slurm() -> str:
    """The SLURM allocation this process runs in, from SLURM's environment variables."""
    env = os.environ
    job = env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID")
    if not job:
        return "not in an allocation"
    parts = [f"job {job}"]
    array, task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        parts.append(f"array task {array}_{task}")
    nodes = env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES")
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if nodes:
        parts.append(f"{nodes} node(s)" + (f" ({nodelist})" if nodelist else ""))
    elif nodelist:
        parts.append(f"nodes {nodelist}")
    tasks = env.get("SLURM_NTASKS")
    parts.append(f"{tasks} task(s)" if tasks else "no task count (SLURM_NTASKS not set)")
    per_node = env.get("SLURM_TASKS_PER_NODE")  # SLURM's own form: "2(x3),1"
    if per_node:
        parts.append(f"tasks per node {per_node}")
    return ", ".join(parts)


def _backend(choose: Callable[[config.Options], str]) -> str:
    """What the launcher would run a job on here: its own rule (``choose``), its options from the
    environment, the size of its local pool."""
    try:
        options = config.resolve()
        name = choose(options)
    except ConfigurationError as e:
        return f"refused: {e}"
    how = "auto" if options.backend == "auto" else f"forced: {options.backend}"
    if name == "local":
        from . import _backends as backends

        return f"local, {backends.local_workers(options)} worker processes ({how})"
    size = config.mpi_world_size_from_env()
    if name == "mpi" and size == 1:  # the launcher then evaluates on rank 0 (_choose_backend)
        return f"serial: an MPI world of 1 rank evaluates on rank 0 ({how})"
    if name == "mpi" and size is not None:
        return f"mpi, {size} ranks: rank 0 runs the job, {size - 1} evaluate ({how})"
    return f"{name} ({how})"


def _signing_key() -> str:
    """Where the key that signs checkpoints and SCOOP's messages comes from (never the key)."""
    path = signing.key_path()
    if signing.KEY_ENV in os.environ:
        chars = len(os.environ[signing.KEY_ENV].strip())
        short = chars < signing.MIN_KEY_CHARS
        return f"{signing.KEY_ENV} in the environment (wins over {path})" + (
            f"; too short: at least {signing.MIN_KEY_CHARS} characters are needed" if short else ""
        )
    try:
        info = path.stat()
    except FileNotFoundError:
        return f"{path} (not created yet: the first checkpoint or SCOOP run creates it)"
    except OSError as e:
        return f"{path} (cannot be read: {e})"
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid != os.getuid() or mode & (stat.S_IRWXG | stat.S_IRWXO):
        return f"{path} (mode {mode:o}, not yours only: it is refused; run `chmod 600 {path}`)"
    return f"{path} (exists, mode {mode:o})"


def gather(choose: Callable[[config.Options], str]) -> dict[str, str]:
    """Every line of ``info``: name -> value, in order.

    Args:
        choose: the launcher's rule, options -> backend name, without starting MPI
            (``_cli.backend_rule``; handed over, as ``_cli`` imports this module).
    """
    mpi = functools.cache(_mpi)  # three lines, one look (a failure: each says so)
    values: dict[str, Callable[[], str]] = {
        "evocluster": _here,
        "python": _python,
        "platform": platform.platform,
        "numpy": lambda: _installed("numpy"),
        "cloudpickle": lambda: _installed("cloudpickle"),
        "mpi4py": lambda: _installed("mpi4py"),
        "mpi library": lambda: mpi().library,
        "mpiexec": lambda: mpi().mpiexec,
        "mpiexec/mpi4py match": lambda: _match(mpi()),
        "scoop": lambda: _installed("scoop"),
        "slurm": _slurm,
        "backend": lambda: _backend(choose),
        "signing key": _signing_key,
    }
    found = {}
    for name, value in values.items():
        try:
            found[name] = value()
        except Exception as e:  # a bug report gets every other line all the same
            found[name] = f"unknown ({type(e).__name__}: {_first_line(str(e))})"
    return found


def main(argv: list[str], choose: Callable[[config.Options], str]) -> int:
    """``python -m evocluster info [--json]``; returns the exit code (0; 2 for a bad option).

    Args:
        argv: the arguments after ``info``.
        choose: the launcher's backend rule (see :func:`gather`).
    """
    parser = argparse.ArgumentParser(
        prog="python -m evocluster info",
        description="Print evocluster's version and its environment: Python, numpy, "
        "cloudpickle, mpi4py and its MPI library, the mpiexec first on PATH (and whether they "
        "match), SCOOP, the SLURM allocation, the backend the launcher would choose, where the "
        "signing key lives. Starts no MPI. Paste it into a bug report.",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object instead of lines")
    ns = parser.parse_args(argv)
    found = gather(choose)
    sys.stderr.flush()  # a warning (local_workers') before the lines, not inside them
    if ns.json:
        print(json.dumps(found, indent=2))
    else:
        for name, value in found.items():
            print(f"{name}: {value}")
    return 0
