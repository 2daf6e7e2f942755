"""What becomes of a failed evaluation: one model, :class:`FailurePolicy`, for the executor's
scheduler (``_scheduling``) and the engine's loops (``engine.policy``), and one name for the
callable that failed (:func:`function_name`), as both write it in :class:`~evocluster.Failure`
records.

Below both: it imports only :mod:`evocluster._config`, whose :func:`~evocluster._config.retries_of`
is the one reading of ``"retry:N"``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from ._config import retries_of

__all__ = ["RAISE", "FailurePolicy", "function_name"]


def function_name(fn: Any) -> str:
    """``module.qualname`` of a callable, seen through ``functools.partial`` (a callable object
    without a ``__qualname__`` of its own is named by its class); a partial of
    ``evocluster.rng.call`` (the engine's seeded evaluation) by the fitness it calls."""
    while isinstance(fn, functools.partial):
        seeded = getattr(fn.func, "__module__", None) == "evocluster.rng"
        fn = fn.args[0] if seeded and fn.func.__name__ == "call" and fn.args else fn.func
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    module = getattr(fn, "__module__", None) or type(fn).__module__
    return f"{module}.{name}"


@dataclass(frozen=True)
class FailurePolicy:
    """What becomes of a failed evaluation (the fitness raised, timed out, its process died, or
    -- in the engine -- it returned something that is not one number per objective).

    Attributes:
        on_error: ``"raise"``, ``"penalize"`` or ``"retry:N"``, as given.
        retries: evaluate a failed item again, up to this many more times (N of ``retry:N``)...
        fallback: ...then ``"raise"`` (the caller gets the exception) or ``"penalize"``.
        penalty: a penalized item's result (on the master: never sent to a worker).
        follow: the engine was given no ``on_error``: the executor's own policy applies
            unchanged (and its failures are not counted by the engine).
    """

    on_error: str = "raise"
    retries: int = 0
    fallback: str = "raise"
    penalty: Any = None
    follow: bool = False

    @property
    def tolerant(self) -> bool:
        """Whether a failure may end other than raised (penalized, or retried first)."""
        return self.on_error != "raise" and not self.follow

    @classmethod
    def of(cls, on_error: str, penalty: Any = None) -> FailurePolicy:
        """The policy of an ``on_error`` already checked by :mod:`~evocluster._config` and its
        ``penalty``: penalized after the retries under ``"penalize"``, or under ``"retry:N"``
        when a penalty is given (``"retry:0"`` with one: no retry, then the penalty)."""
        retries = retries_of(on_error) or 0
        penalize = on_error == "penalize" or (on_error != "raise" and penalty is not None)
        return cls(on_error, retries, "penalize" if penalize else "raise", penalty)


#: A failure is raised, never retried (a job given no policy).
RAISE = FailurePolicy()
