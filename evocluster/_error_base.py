"""``EvoclusterError``, the base of the errors evocluster raises, apart so that both
:mod:`evocluster.errors` and :mod:`evocluster._broken_pool` import it without importing each other.
Import it as ``evocluster.errors.EvoclusterError`` or ``evocluster.EvoclusterError``."""

from __future__ import annotations

__all__ = ["EvoclusterError"]


class EvoclusterError(Exception):
    """Base class of the errors evocluster raises itself."""

    __module__ = "evocluster.errors"  # where users name it (and pickle finds it)
