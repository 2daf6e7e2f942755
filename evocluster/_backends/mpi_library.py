"""The MPI library mpi4py loads, asked without starting MPI (``python -m evocluster info``).

``MPI_Get_library_version`` is one of the few calls the MPI standard allows before ``MPI_Init``,
and mpi4py starts MPI as ``mpi4py.MPI`` is imported unless ``mpi4py.rc.initialize`` is false.
Starting MPI only to ask would be wrong: a login node may forbid it, and a singleton
``MPI_Init`` (a process no MPI launcher started) hangs under some MPIs.  So ``mpi4py.MPI`` is
imported here with ``rc.initialize`` and ``rc.finalize`` off.

A process that imported ``mpi4py.MPI`` this way has the library loaded but MPI not started, and
:mod:`evocluster._backends.mpi` relies on that import to start it: only ``info``, which runs no
job, uses this module.
"""

from __future__ import annotations

import contextlib
import re
import sys
from typing import NamedTuple

import mpi4py

__all__ = ["Library", "library"]

#: A shared object of an MPI library in ``/proc/self/maps``: MPICH's and Open MPI's ``libmpi.so.N``,
#: Intel's ``libmpi.so.12``, Cray's ``libmpi_cray.so``, old MPICHs' ``libmpich.so``.
_LIBMPI = re.compile(r"/lib(?:mpi|mpich)[\w+-]*\.so[.\d]*$")


class Library(NamedTuple):
    """What mpi4py's MPI library says of itself."""

    #: ``MPI_Get_library_version``'s text (NULs and trailing white space removed).
    text: str
    #: The library file this process maps, if ``/proc`` tells (Linux).
    path: str | None
    #: Whether MPI is started in this process (it should not be: the point of this module).
    initialized: bool


def library() -> Library:
    """The MPI library mpi4py uses, loaded without ``MPI_Init``.

    Raises:
        ImportError, RuntimeError: mpi4py cannot load its MPI library (as mpi4py reports it).
    """
    if "mpi4py.MPI" not in sys.modules:  # not imported yet: importing it must not start MPI
        mpi4py.rc.initialize = False
        mpi4py.rc.finalize = False
    from mpi4py import MPI

    text = MPI.Get_library_version().replace("\x00", "").rstrip()
    return Library(text, _mapped_library(), bool(MPI.Is_initialized()))


def _mapped_library() -> str | None:
    """The MPI library's file among this process's mappings (None if not found, or no /proc)."""
    with contextlib.suppress(OSError), open("/proc/self/maps") as fh:
        for line in fh:
            path = line.rstrip("\n").split(None, 5)[5:]
            if path and _LIBMPI.search(path[0]):
                return path[0]
    return None
