"""``BrokenPool``, apart from the other errors: its base, ``concurrent.futures.BrokenExecutor``, is
expensive to import where it is never raised, and ``evocluster.errors`` loads this module on first
use of the name.  Import it as ``evocluster.errors.BrokenPool`` or ``evocluster.BrokenPool``."""

from __future__ import annotations

from concurrent.futures import BrokenExecutor

from ._error_base import EvoclusterError

__all__ = ["BrokenPool"]


class BrokenPool(BrokenExecutor, EvoclusterError):
    """The executor can no longer evaluate: a worker died or the transport failed."""

    __module__ = "evocluster.errors"  # where users name it (and pickle finds it)
