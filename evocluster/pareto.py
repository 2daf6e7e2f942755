"""Multi-objective selection for NSGA-II (Deb et al. 2002), as pure numpy functions.

Convention: the objective values of ``n`` individuals come as a float array ``scores`` of shape
``(n, m)`` in which **larger is better in every column**.  The engine multiplies each fitness
value by its weight before calling (a minimised objective has weight -1), so these functions
never see weights.  The one exception is :func:`hypervolume`, which takes *minimisation* points,
as the hypervolume is usually reported (for example ZDT1 against a reference such as (1.1, 1.1)).

The pieces, in the order NSGA-II uses them::

    scores --non_dominated_fronts--> fronts (front 0 = non-dominated) --ranks--> rank per index
    one front --crowding_distance--> spread of each point in its front
    scores, k --nsga2_select--> k survivors: whole fronts while they fit, then the most spread out
    scores, k, rng --crowded_tournament--> k parents: lower rank wins, then larger distance

Nothing here draws random numbers except :func:`crowded_tournament`, and only from the
``numpy.random.Generator`` it is given.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "crowded_tournament",
    "crowding_distance",
    "dominates",
    "hypervolume",
    "non_dominated_fronts",
    "nsga2_select",
    "ranks",
    "zdt1",
    "zdt1_front",
]


def _as_matrix(values: ArrayLike, name: str, *, infinite: bool = True) -> NDArray[np.float64]:
    """``values`` as a float64 array of shape (n, m) with m >= 1 and no NaN (and, unless
    ``infinite``, no infinity), else ValueError."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of shape (n, m), got {arr.ndim} dimension(s)")
    if arr.shape[1] < 1:
        raise ValueError(f"{name} must have at least one objective column")
    if not infinite and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must contain only finite values (no NaN or infinity)")
    if np.isnan(arr).any():
        raise ValueError(f"{name} must not contain NaN (+inf and -inf are values, NaN is not)")
    return arr


def _check_k(k: int, low: int, high: int | None) -> int:
    """``k`` as an int in [low, high] (``high=None``: no upper bound), else TypeError/ValueError."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an integer, got {type(k).__name__}")
    k = int(k)
    if k < low:
        raise ValueError(f"k must be >= {low}, got {k}")
    if high is not None and k > high:
        raise ValueError(f"k must be <= the number of individuals ({high}), got {k}")
    return k


def dominates(a: ArrayLike, b: ArrayLike) -> bool:
    """Whether score vector ``a`` Pareto-dominates ``b`` (larger is better).

    ``a`` dominates ``b`` when it is at least as good in every objective and strictly better in
    at least one.  A vector never dominates itself or an equal vector.

    Args:
        a: 1-D score vector of length m.
        b: 1-D score vector of the same length.

    Returns:
        True if ``a >= b`` everywhere and ``a > b`` somewhere.

    Raises:
        ValueError: ``a`` or ``b`` is not 1-D, is empty, or their lengths differ.
    """
    va = np.asarray(a, dtype=np.float64)
    vb = np.asarray(b, dtype=np.float64)
    if va.ndim != 1 or vb.ndim != 1:
        raise ValueError("a and b must be 1-D score vectors")
    if va.shape != vb.shape:
        raise ValueError(f"a and b must have the same length, got {va.size} and {vb.size}")
    if va.size == 0:
        raise ValueError("a and b must have at least one objective")
    return bool(np.all(va >= vb) and np.any(va > vb))


def _domination_matrix(scores: NDArray[np.float64]) -> NDArray[np.bool_]:
    """``d[i, j]`` is True when individual i dominates individual j.

    Built one objective at a time, so memory stays at a few n-by-n boolean arrays (n = 3000:
    ~9 MB each) instead of an (n, n, m) intermediate.
    """
    n, m = scores.shape
    all_ge = np.ones((n, n), dtype=np.bool_)
    any_gt = np.zeros((n, n), dtype=np.bool_)
    for j in range(m):
        col = scores[:, j]
        all_ge &= col[:, None] >= col[None, :]
        any_gt |= col[:, None] > col[None, :]
    return all_ge & any_gt


def non_dominated_fronts(scores: ArrayLike) -> list[NDArray[np.int64]]:
    """The fronts of the fast non-dominated sort (Deb et al. 2002).

    Front 0 holds the individuals no other individual dominates; front r + 1 those dominated
    only by individuals of fronts 0..r.  Equal score vectors do not dominate each other, so
    duplicates of a point always share its front.

    Args:
        scores: array of shape (n, m), larger is better in every column.

    Returns:
        The fronts in order, each an int64 array of row indices sorted ascending; together
        they partition ``range(n)``.  An empty list when n == 0.

    Raises:
        ValueError: ``scores`` is not 2-D, has no column, or holds NaN.
    """
    s = _as_matrix(scores, "scores")
    n = s.shape[0]
    if n == 0:
        return []
    dom = _domination_matrix(s)
    # dominated_by[j]: how many not-yet-assigned individuals dominate j
    dominated_by = dom.sum(axis=0, dtype=np.int64)
    assigned = np.zeros(n, dtype=np.bool_)
    fronts: list[NDArray[np.int64]] = []
    current = np.flatnonzero(dominated_by == 0).astype(np.int64)
    while current.size:
        fronts.append(current)
        assigned[current] = True
        dominated_by -= dom[current].sum(axis=0, dtype=np.int64)
        current = np.flatnonzero((dominated_by == 0) & ~assigned).astype(np.int64)
    return fronts


def ranks(scores: ArrayLike) -> NDArray[np.int64]:
    """The front number of each individual (0 = non-dominated).

    Args:
        scores: array of shape (n, m), larger is better in every column.

    Returns:
        int64 array of length n: ``ranks(scores)[i]`` is the index of the front holding i.

    Raises:
        ValueError: ``scores`` is not 2-D, has no column, or holds NaN.
    """
    s = _as_matrix(scores, "scores")
    return _ranks_from_fronts(non_dominated_fronts(s), s.shape[0])


def _ranks_from_fronts(fronts: list[NDArray[np.int64]], n: int) -> NDArray[np.int64]:
    out = np.empty(n, dtype=np.int64)
    for r, front in enumerate(fronts):
        out[front] = r
    return out


def _crowding(front_scores: NDArray[np.float64]) -> NDArray[np.float64]:
    """Crowding distance of validated points (see :func:`crowding_distance`)."""
    n, m = front_scores.shape
    dist = np.zeros(n, dtype=np.float64)
    if n == 0:
        return dist
    for j in range(m):
        col = front_scores[:, j]
        # stable: equal values keep index order, so the result never depends on the sort's mood
        order = np.argsort(col, kind="stable")
        if not col[order[0]] < col[order[-1]]:
            # every point equal in this objective: it says nothing about spread, not even
            # which points are its boundaries (they would be picked by index alone)
            continue
        dist[order[0]] = np.inf
        dist[order[-1]] = np.inf
        finite = np.isfinite(col)
        if not finite.all():
            # an infinite value is an extreme, and is not a distance: the gaps are measured on
            # the finite range, an infinite point counting as its end (no infinity: unchanged)
            if finite.sum() < 2:
                continue
            col = np.clip(col, col[finite].min(), col[finite].max())
        span = col[order[-1]] - col[order[0]]
        if n > 2 and span > 0.0:
            inner = order[1:-1]
            dist[inner] += (col[order[2:]] - col[order[:-2]]) / span
    return dist


def crowding_distance(scores: ArrayLike) -> NDArray[np.float64]:
    """Crowding distance of the points of ONE front (Deb et al. 2002).

    For each objective, the points are sorted by value (stable sort: ties stay in index
    order).  The first and last point of that order get an infinite distance; every other
    point adds the gap between its two neighbours divided by the objective's range in the
    front.  An objective whose range is zero (all points equal in it) contributes nothing,
    and assigns no infinities either.  Larger means more isolated, hence more worth keeping.
    An infinite value (``-inf``: an infeasible point, say) is an extreme of its objective; the
    gaps there are measured on the objective's finite range, an infinite point counting as
    the end of it it lies beyond.

    Args:
        scores: array of shape (n, m) holding the points of one front (larger is better; the
            direction does not matter for the distance).

    Returns:
        float64 array of length n, each value >= 0 or ``inf``.

    Raises:
        ValueError: ``scores`` is not 2-D, has no column, or holds NaN.
    """
    return _crowding(_as_matrix(scores, "scores"))


def _crowding_by_front(
    s: NDArray[np.float64], fronts: list[NDArray[np.int64]]
) -> NDArray[np.float64]:
    """Each individual's crowding distance within its own front."""
    dist = np.zeros(s.shape[0], dtype=np.float64)
    for front in fronts:
        dist[front] = _crowding(s[front])
    return dist


def nsga2_select(scores: ArrayLike, k: int) -> NDArray[np.int64]:
    """NSGA-II environmental selection: the indices of the k survivors.

    Whole fronts are taken, best first, while they fit in k; the front that does not fit is
    cut by descending crowding distance (within that front), ties broken by the lower index.
    Deterministic: no random numbers are used.

    Args:
        scores: array of shape (n, m), larger is better in every column.
        k: how many individuals to keep, 0 <= k <= n.

    Returns:
        int64 array of k distinct indices in selection order: the whole fronts (each in
        ascending index order), then the chosen part of the cut front, most isolated first.

    Raises:
        ValueError: ``scores`` is not 2-D, has no column, or holds NaN; ``k`` is
            negative or exceeds n.
        TypeError: ``k`` is not an integer.
    """
    s = _as_matrix(scores, "scores")
    k = _check_k(k, 0, s.shape[0])
    if k == 0:
        return np.empty(0, dtype=np.int64)
    chosen: list[NDArray[np.int64]] = []
    room = k
    for front in non_dominated_fronts(s):
        if front.size <= room:
            chosen.append(front)
            room -= front.size
        else:
            dist = _crowding(s[front])
            # front is sorted ascending, so a stable sort on -dist breaks ties by lower index
            order = np.argsort(-dist, kind="stable")
            chosen.append(front[order[:room]])
            room = 0
        if room == 0:
            break
    return np.concatenate(chosen).astype(np.int64)


def crowded_tournament(scores: ArrayLike, k: int, rng: np.random.Generator) -> NDArray[np.int64]:
    """k binary tournaments under NSGA-II's crowded-comparison operator.

    Each tournament draws two contestants uniformly, with replacement, from ``rng`` (and from
    nothing else).  The lower rank wins; on equal rank the larger crowding distance (computed
    within the front) wins; if still tied, the first drawn wins.

    Args:
        scores: array of shape (n, m), larger is better in every column; n >= 1 when k > 0.
        k: number of tournaments (winners to return), k >= 0; may exceed n.
        rng: the generator the contestants are drawn from.

    Returns:
        int64 array of the k winners' indices, in tournament order (repeats possible).

    Raises:
        ValueError: ``scores`` is not 2-D, has no column, or holds NaN; ``k`` is
            negative; k > 0 with no individual to draw from.
        TypeError: ``k`` is not an integer, or ``rng`` is not a ``numpy.random.Generator``.
    """
    s = _as_matrix(scores, "scores")
    k = _check_k(k, 0, None)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator (numpy.random.default_rng(seed)), "
            f"got {type(rng).__name__}"
        )
    n = s.shape[0]
    if k == 0:
        return np.empty(0, dtype=np.int64)
    if n == 0:
        raise ValueError("cannot hold tournaments in an empty population (scores has no rows)")
    fronts = non_dominated_fronts(s)
    rank = _ranks_from_fronts(fronts, n)
    dist = _crowding_by_front(s, fronts)
    draws = rng.integers(0, n, size=(k, 2), dtype=np.int64)
    first, second = draws[:, 0], draws[:, 1]
    first_wins = (rank[first] < rank[second]) | (
        (rank[first] == rank[second]) & (dist[first] >= dist[second])
    )
    return np.where(first_wins, first, second).astype(np.int64)


def _hv2_sorted(xy: NDArray[np.float64], ref_x: float, ref_y: float) -> float:
    """Area dominated by 2-D minimisation points already sorted by (x, y), all inside ref."""
    if xy.shape[0] == 0:
        return 0.0
    y = xy[:, 1]
    # best y among the points to the left (smaller x): a point only adds the strip below it
    best_before = np.concatenate(([ref_y], np.minimum.accumulate(y)[:-1]))
    gain = np.maximum(best_before - y, 0.0)
    return float(np.sum((ref_x - xy[:, 0]) * gain))


def hypervolume(points: ArrayLike, reference: ArrayLike) -> float:
    """Exact hypervolume of MINIMISATION points with respect to a reference point.

    Unlike the other functions of this module, ``points`` are objective values where SMALLER
    is better (the usual way hypervolume is reported, e.g. ZDT1 against a reference given by
    the caller).  To measure ``scores`` (larger is better), pass ``-scores`` and ``-reference``.

    The hypervolume is the measure of the union of the boxes ``[p, reference]``.  Only points
    that strictly dominate the reference (``p < reference`` in every objective) count; the
    others are ignored.  Point order and duplicate points do not change the result.

    Two objectives: one sort and a sweep, O(n log n).  Three objectives: slices along the
    third objective, each a 2-D sweep, O(n^2).

    Args:
        points: array of shape (n, m) with m in {2, 3}; n may be 0.
        reference: 1-D array of length m.

    Returns:
        The hypervolume, >= 0 (0.0 when no point dominates the reference).

    Raises:
        ValueError: ``points`` is not 2-D, holds NaN or infinity, or has a number of columns
            m other than 2 or 3; ``reference`` is not 1-D, its length is not m, or it holds
            NaN or infinity.
    """
    p = _as_matrix(points, "points", infinite=False)
    m = p.shape[1]
    if m not in (2, 3):
        raise ValueError(f"hypervolume supports only 2 and 3 objectives, got {m}")
    ref = np.asarray(reference, dtype=np.float64)
    if ref.ndim != 1:
        raise ValueError(f"reference must be a 1-D point, got {ref.ndim} dimension(s)")
    if ref.size != m:
        raise ValueError(
            f"reference must have one value per objective: points have {m} column(s), "
            f"reference has {ref.size} value(s)"
        )
    if not np.all(np.isfinite(ref)):
        raise ValueError("reference must contain only finite values (no NaN or infinity)")
    p = p[np.all(p < ref, axis=1)]
    if p.shape[0] == 0:
        return 0.0
    # sort by x, then y: the sweep relies on it, and it is what makes order irrelevant
    p = p[np.lexsort((p[:, 1], p[:, 0]))]
    if m == 2:
        return _hv2_sorted(p, float(ref[0]), float(ref[1]))
    # m == 3: between consecutive distinct z levels the cross-section is constant: the 2-D
    # area of the points with z <= that level (boolean masking keeps the (x, y) order)
    z = p[:, 2]
    levels = np.unique(z)
    tops = np.append(levels[1:], ref[2])
    total = 0.0
    for level, top in zip(levels, tops, strict=True):
        area = _hv2_sorted(p[z <= level, :2], float(ref[0]), float(ref[1]))
        total += area * float(top - level)
    return total


def zdt1(x: ArrayLike) -> NDArray[np.float64]:
    """The ZDT1 test problem (Zitzler, Deb and Thiele 2000), both objectives minimised.

    ``f1 = x[0]``, ``g = 1 + 9 * mean(x[1:])``, ``f2 = g * (1 - sqrt(f1 / g))``.  The Pareto
    front is reached when ``x[1:]`` is all zeros: ``f2 = 1 - sqrt(f1)``.

    Args:
        x: 1-D array of d >= 2 decision variables, each in [0, 1].

    Returns:
        float64 array ``[f1, f2]`` (minimisation values: negate them to get scores).

    Raises:
        ValueError: ``x`` is not 1-D, has fewer than 2 variables, or a value outside [0, 1]
            (NaN included).
    """
    v = np.asarray(x, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"x must be a 1-D array, got {v.ndim} dimension(s)")
    if v.size < 2:
        raise ValueError(f"x must have at least 2 variables, got {v.size}")
    if not np.all((v >= 0.0) & (v <= 1.0)):
        raise ValueError("every variable of x must lie in [0, 1]")
    f1 = float(v[0])
    g = 1.0 + 9.0 * float(np.mean(v[1:]))
    f2 = g * (1.0 - np.sqrt(f1 / g))
    return np.array([f1, f2], dtype=np.float64)


def zdt1_front(n: int) -> NDArray[np.float64]:
    """n points of the true ZDT1 Pareto front, evenly spaced in f1.

    Args:
        n: number of points, n >= 1 (n == 1 gives the single point (0, 1)).

    Returns:
        float64 array of shape (n, 2): ``f1 = linspace(0, 1, n)``, ``f2 = 1 - sqrt(f1)``.

    Raises:
        ValueError: ``n`` is < 1.
        TypeError: ``n`` is not an integer.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"n must be an integer, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    f1 = np.linspace(0.0, 1.0, int(n))
    return np.column_stack((f1, 1.0 - np.sqrt(f1)))
