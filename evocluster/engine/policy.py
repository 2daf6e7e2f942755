"""What a failed evaluation does (a :class:`~evocluster._failures.FailurePolicy`, from a loop's
``on_error`` and ``penalty``), and the strict check of what a fitness returns."""

from __future__ import annotations

import dataclasses
import numbers
from typing import TYPE_CHECKING, Any

import numpy as np

from .._config import retries_of
from .._failures import FailurePolicy

if TYPE_CHECKING:
    from .evaluation import FailureOptions


_REPR_MAX = 120  # characters of a bad value's repr quoted in a message


def policy_of(
    on_error: str | None, penalty: Any, weights: np.ndarray, own: FailureOptions | None
) -> FailurePolicy:
    """The loop's :class:`~evocluster._failures.FailurePolicy` from its keywords;
    ``on_error=None``: the executor's ``own`` options where it has them (evocluster's: the
    launcher's ``--on-error``/``--penalty``), else ``"raise"``.

    Raises:
        ValueError: an unknown ``on_error``, or a penalty that is not one number per objective
            (or given under ``"raise"``).
    """
    if on_error is None:
        on_error = own.on_error if own is not None else None  # (the stdlib's have none)
        if not isinstance(on_error, str) or on_error == "raise":
            return FailurePolicy(follow=True)
        if penalty is None:
            penalty = own.penalty if own is not None else None
    if retries_of(on_error) is None:
        raise ValueError(
            f"on_error must be 'raise', 'penalize' or 'retry:N' (N a whole number), not "
            f"{on_error!r}"
        )
    if on_error == "raise":
        if penalty is not None:
            raise ValueError(
                "penalty= is what a failed evaluation gets under on_error='penalize' or "
                "'retry:N': it has no use with on_error='raise'"
            )
        return FailurePolicy()
    policy = FailurePolicy.of(on_error, penalty)  # (the one rule of when a failure is penalized)
    if policy.fallback == "penalize":  # one value per objective; by default the worst
        return dataclasses.replace(policy, penalty=penalty_of(penalty, weights))
    return policy


def penalty_of(penalty: Any, weights: np.ndarray) -> np.ndarray:
    """The penalty as one value per objective: by default the worst, ``-inf`` where larger is
    better and ``+inf`` where smaller is."""
    if penalty is None:
        return np.where(weights > 0, -np.inf, np.inf)
    m = len(weights)
    numbers_, _ = numbers_of(penalty)
    if numbers_ is not None and len(numbers_) != m:  # numbers, but not one per objective
        k = len(numbers_)
        example = ""
        if isinstance(penalty, numbers.Real):  # the one value for each objective
            example = ", e.g. (" + ", ".join([short_repr(penalty)] * m) + ")"
        raise ValueError(
            f"penalty {short_repr(penalty)} gives {k} value{'s' if k != 1 else ''} where "
            f"there {'are' if m != 1 else 'is'} {m} objective{'s' if m != 1 else ''}: give one "
            f"per objective{example}"
        )
    value, why = objectives(penalty, m)
    if value is None:
        raise ValueError(f"penalty must be {EXPECTED.format(m=m)}, got {penalty!r}: {why}")
    return value


EXPECTED = "a number, or one number per objective ({m})"
TOO_LARGE = "too large for a float"  # (the start of the reason: a ValueError, as NaN's)


def numbers_of(raw: Any) -> tuple[np.ndarray | None, str]:
    """``raw`` as a 1-D float array of the numbers it holds, or ``(None, why not)`` (see
    :func:`objectives`)."""
    try:
        if isinstance(raw, bool | np.bool_):
            return None, "a bool is not a fitness (return float(flag) if 0/1 is meant)"
        if isinstance(raw, numbers.Real):
            return np.array([float(raw)]), ""
        if isinstance(raw, np.ndarray):
            if raw.dtype.kind not in "iuf" or raw.ndim > 1:
                what = "bool" if raw.dtype.kind == "b" else str(raw.dtype)
                return None, f"an array of {what}, shape {raw.shape}"
            return raw.astype(np.float64).reshape(-1), ""
        if isinstance(raw, list | tuple):
            odd = [
                x for x in raw if isinstance(x, bool | np.bool_) or not isinstance(x, numbers.Real)
            ]
            if odd:
                return None, f"a {type(raw).__name__} holding a {type(odd[0]).__name__}"
            return np.array([float(x) for x in raw], dtype=np.float64), ""
    except OverflowError:  # float(10**400): a bad value like any other, not a crash
        return None, f"{TOO_LARGE} (floats end near 1.8e308; scale the objective down)"
    return None, f"a {type(raw).__module__}.{type(raw).__qualname__}, not a number"


def objectives(raw: Any, m: int) -> tuple[np.ndarray | None, str]:
    """``raw`` as an ``(m,)`` float array, or ``(None, why not)``.

    Strict on purpose: a number (``int``, ``float``, numpy's integers and floats, any
    ``numbers.Real``), or a list, tuple or 0/1-D numeric array of ``m`` of them; no NaN, and
    none beyond what a float holds (an ``int`` such as ``10**400``).  Strings, bytes, ``None``,
    dicts, complex numbers and arrays of another shape are refused, and so are bools (Python's
    and numpy's), although numpy would take them as 1.0 and 0.0: a fitness that returns
    ``True``/``False`` nearly always returns a comparison or a feasibility flag where it meant a
    value, and the run would then optimise that flag without a word.  (Return ``float(flag)``
    when 0/1 is meant.)
    """
    v, why = numbers_of(raw)
    if v is None:
        return None, why
    if len(v) != m:
        return None, f"{len(v)} numbers where there are {m} objective(s)"
    if np.isnan(v).any():
        return None, "NaN is not a number to compare (use +/-inf for an infeasible individual)"
    return v, ""


def short_repr(x: Any) -> str:
    try:
        text = repr(x)
    except Exception as e:  # a user's object whose __repr__ fails: still name it
        text = f"<{type(x).__qualname__} whose repr raised {type(e).__name__}>"
    return text if len(text) <= _REPR_MAX else text[: _REPR_MAX - 3] + "..."


def qualified(exc: BaseException) -> str:
    return f"{type(exc).__module__}.{type(exc).__qualname__}"
