"""The worker's side of a backend, :class:`Channel`: what :func:`evocluster._worker.serve` is
handed.  Below the worker, which imports it, and re-exported by :mod:`evocluster._backends.base`,
where each backend implements it (the worker never imports a backend).
"""

from __future__ import annotations

import abc

from ._serialization import Frames

__all__ = ["Channel"]


class Channel(abc.ABC):
    """Worker side of a backend."""

    rank: int
    size: int
    host: str

    @abc.abstractmethod
    def recv(self) -> Frames:
        """Wait, without spinning a core, for the next message from the master."""

    @abc.abstractmethod
    def send(self, frames: Frames) -> None:
        """Send a message to the master; returns when its buffers may be reused."""

    def fileno(self) -> int:
        """A descriptor that turns readable when a message from the master arrives, for a worker
        that waits for something else meanwhile (its isolated child); -1: none, and the worker
        looks with :meth:`ready` only between evaluations."""
        return -1

    def ready(self) -> bool:
        """Whether a message from the master is waiting now (never blocks; False if the
        backend cannot tell): :meth:`recv` would return it at once."""
        return False

    def label(self) -> str:
        return f"worker rank {self.rank} of {self.size} on host {self.host}"
