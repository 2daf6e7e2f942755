"""Statistics rows: one per generation (or report), appended to the state's history and logged on
one line."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _observe as observe
from .state import State

if TYPE_CHECKING:
    from .evaluation import Evaluator


def add_row(
    evaluator: Evaluator,
    state: State,
    evals: int,
    wall: float,
    extra: dict[str, Any] | None = None,
    members: np.ndarray | None = None,
) -> None:
    """Append a statistics row for ``state`` to its history; log it on one line.

    The statistics (min, mean, max, std) are of the members that hold a fitness of their own --
    ``members`` (a mask, default all) less the penalized ones: a penalty (``-inf`` by default)
    would make them meaningless.  NaN when no member has one.  The row counts the evaluations
    ``failed`` (penalized) and ``retried`` since the last row, each only when not zero."""
    keep = ~state.penalized if members is None else members & ~state.penalized
    f = state.fitness[keep]
    nan = [float("nan")] * state.fitness.shape[1]
    empty = not len(f)
    with np.errstate(invalid="ignore"):  # an infeasible member's documented +/-inf: NaN, quietly
        mean = nan if empty else f.mean(axis=0).tolist()
        std = nan if empty else f.std(axis=0).tolist()
    row: dict[str, Any] = {
        "generation": state.generation,
        "evals": evals,
        "evaluations": state.evaluations,
        "min": nan if empty else f.min(axis=0).tolist(),
        "mean": mean,
        "max": nan if empty else f.max(axis=0).tolist(),
        "std": std,
        "seconds": wall,
        "evals_per_s": evals / wall if wall > 0 else 0.0,
        "utilisation": min(1.0, evaluator.busy / (evaluator.workers * wall)) if wall > 0 else 0.0,
    }
    if extra:
        row |= extra
    failed, retried = evaluator.unreported(state)
    if failed:
        row["failed"] = failed
    if retried:
        row["retried"] = retried
    evaluator.busy = 0.0
    state.history.append(row)
    if observe.observing():
        observe.emit("generation", **({"best": best_of(row, evaluator.weights)} | row))
    if evaluator.log is not None:
        evaluator.log(format_row(row))


def format_row(row: dict[str, Any]) -> str:
    objectives = "  ".join(
        f"min {lo:.6g} mean {mu:.6g} max {hi:.6g} std {sd:.3g}"
        for lo, mu, hi, sd in zip(row["min"], row["mean"], row["max"], row["std"], strict=True)
    )
    extra = "".join(
        f"  {k} {v:.6g}" if isinstance(v, float) else f"  {k} {v}"
        for k, v in row.items()
        if k
        not in {
            "generation",
            "evals",
            "evaluations",
            "min",
            "mean",
            "max",
            "std",
            "seconds",
            "evals_per_s",
            "utilisation",
        }
    )
    return (
        f"gen {row['generation']:>4}  evals {row['evals']:>5} ({row['evaluations']})  {objectives}"
        f"  {row['evals_per_s']:.0f} evals/s  util {row['utilisation']:.2f}{extra}"
    )


def best_of(row: dict[str, Any], weights: np.ndarray) -> float | None:
    """The best fitness in a row of a single-objective loop (its max if maximised, else its
    min); ``None`` for several objectives (no one best) or when no member has one."""
    if len(weights) != 1:
        return None
    best = row["max"][0] if weights[0] > 0 else row["min"][0]
    return float(best) if np.isfinite(best) else None  # NaN: no member has a fitness
