"""Selection and variation operators for evolutionary algorithms on numpy genomes.

A population is a 2-D array of shape ``(n, d)``: ``n`` genomes of ``d`` genes each -- bit strings
as ``bool`` or ``uint8`` (or any integer dtype holding 0s and 1s), integer genomes as an integer
dtype, real genomes as ``float64``.  Every operator here is

* **vectorised** over the whole population (or over all pairs of parents at once): no Python loop
  runs per individual or per gene;
* **pure**: it never modifies its inputs and always returns new arrays, of the input's dtype;
* **reproducible**: every random draw comes from the ``rng`` argument, a
  :class:`numpy.random.Generator` (``numpy.random.default_rng(seed)``), never from the global
  numpy or :mod:`random` state, so a run is repeatable from its seed wherever it executes.

Selection operators take *scores*, a 1-D float array where **larger is better** (the engine turns
weighted fitness into scores), and return ``int64`` indices into the population.  Crossovers take
two arrays ``a`` and ``b`` of shape ``(p, d)`` holding ``p`` pairs of parents (``a[i]`` is mated
with ``b[i]``) and return two children arrays of the same shape and dtype.  The real-valued
operators follow DEAP's semantics (``cxTwoPoint``, ``cxBlend``, ``cxSimulatedBinaryBounded``,
``mutPolynomialBounded``), so a DEAP recipe keeps its meaning when moved onto arrays.

Bad arguments raise :class:`ValueError` (or :class:`TypeError` for an ``rng`` that is not a
``Generator``) in plain words, before any random number is drawn.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    # initialisers
    "random_bits",
    "random_integers",
    "random_reals",
    # selection
    "tournament",
    "truncation",
    "random_selection",
    # crossover
    "one_point",
    "two_point",
    "uniform",
    "blend",
    "sbx",
    # mutation
    "bit_flip",
    "random_reset",
    "gaussian",
    "polynomial",
]

#: Parents closer than this on a gene are not crossed by :func:`sbx` (DEAP's and Deb's epsilon):
#: the spread factor divides by their distance.
_SBX_EPSILON = 1e-14


# --------------------------------------------------------------------------- argument checks


def _check_rng(rng: object) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator (numpy.random.default_rng(seed)), "
            f"not {type(rng).__name__}"
        )
    return rng


def _count(value: int, name: str, minimum: int = 0) -> int:
    value = operator.index(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _probability(value: float, name: str) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ValueError(f"{name} is a probability and must be within [0, 1], got {value}")
    return value


def _non_negative(value: float, name: str) -> float:
    value = float(value)
    if not 0.0 <= value < np.inf:  # also rejects NaN
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


def _per_gene(value: ArrayLike, d: int, name: str) -> NDArray[np.float64]:
    """A scalar or a length-``d`` sequence, as float64 that broadcasts against ``(n, d)``."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim > 1 or (arr.ndim == 1 and arr.shape[0] != d):
        raise ValueError(
            f"{name} must be a scalar or a 1-D array of one value per gene (length {d}), "
            f"got shape {arr.shape}"
        )
    return arr


def _bounds(
    low: ArrayLike, high: ArrayLike, d: int, *, finite: bool
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    lo = _per_gene(low, d, "low")
    hi = _per_gene(high, d, "high")
    if np.isnan(lo).any() or np.isnan(hi).any():
        raise ValueError("low and high must not be NaN")
    if finite and not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        raise ValueError("low and high must be finite")
    if (lo > hi).any():
        raise ValueError("low must be <= high (for every gene)")
    return lo, hi


def _scores(scores: ArrayLike) -> NDArray[np.float64]:
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"scores must be a 1-D array (one score per individual), got {arr.ndim}-D")
    if np.isnan(arr).any():
        raise ValueError("scores must not contain NaN")
    return arr


def _population(x: ArrayLike, name: str = "x") -> NDArray[Any]:
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (individuals, genes), got {arr.ndim}-D")
    return arr


def _pairs(a: ArrayLike, b: ArrayLike) -> tuple[NDArray[Any], NDArray[Any]]:
    x = _population(a, "a")
    y = _population(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"a and b must have the same shape, got {x.shape} and {y.shape}")
    if x.dtype != y.dtype:
        raise ValueError(f"a and b must have the same dtype, got {x.dtype} and {y.dtype}")
    return x, y


def _require_real(arr: NDArray[Any], what: str) -> None:
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{what} needs real-valued genomes (a float dtype), got {arr.dtype}")


def _require_within(arr: NDArray[Any], lo: NDArray[Any], hi: NDArray[Any], what: str) -> None:
    if not ((arr >= lo) & (arr <= hi)).all():  # also rejects NaN
        raise ValueError(f"{what} must lie within [low, high] on every gene")


# --------------------------------------------------------------------------- initialisers


def random_bits(n: int, d: int, rng: np.random.Generator) -> NDArray[np.bool_]:
    """A population of random bit strings.

    Args:
        n: number of individuals (>= 0).
        d: number of bits per individual (>= 0).
        rng: the source of randomness.

    Returns:
        A new ``bool`` array of shape ``(n, d)``; each bit is set with probability 0.5.

    Raises:
        ValueError: ``n`` or ``d`` is negative.
    """
    n, d, rng = _count(n, "n"), _count(d, "d"), _check_rng(rng)
    return rng.integers(0, 2, size=(n, d), dtype=np.bool_)


def random_integers(
    n: int, d: int, rng: np.random.Generator, *, low: int, high: int
) -> NDArray[np.int64]:
    """A population of random integer genomes.

    Args:
        n: number of individuals (>= 0).
        d: number of genes per individual (>= 0).
        rng: the source of randomness.
        low: smallest gene value.
        high: largest gene value (inclusive).

    Returns:
        A new ``int64`` array of shape ``(n, d)``, uniform over ``[low, high]``.

    Raises:
        ValueError: ``n`` or ``d`` is negative, or ``low > high``.
    """
    n, d, rng = _count(n, "n"), _count(d, "d"), _check_rng(rng)
    low, high = operator.index(low), operator.index(high)
    if low > high:
        raise ValueError(f"low must be <= high, got low={low}, high={high}")
    return rng.integers(low, high, size=(n, d), dtype=np.int64, endpoint=True)


def random_reals(
    n: int, d: int, rng: np.random.Generator, *, low: ArrayLike, high: ArrayLike
) -> NDArray[np.float64]:
    """A population of random real-valued genomes.

    Args:
        n: number of individuals (>= 0).
        d: number of genes per individual (>= 0).
        rng: the source of randomness.
        low: lower bound, a scalar or one value per gene.
        high: upper bound (exclusive), a scalar or one value per gene.

    Returns:
        A new ``float64`` array of shape ``(n, d)``, uniform over ``[low, high)`` gene by gene
        (a gene whose ``low == high`` is that value).

    Raises:
        ValueError: ``n`` or ``d`` is negative; ``low`` or ``high`` is not finite, has the wrong
            length, or ``low > high`` on some gene.
    """
    n, d, rng = _count(n, "n"), _count(d, "d"), _check_rng(rng)
    lo, hi = _bounds(low, high, d, finite=True)
    x = lo + (hi - lo) * rng.random((n, d))
    # lo + (hi - lo) * u can round up to hi itself: keep the interval half-open as documented.
    top = np.where(hi > lo, np.nextafter(hi, -np.inf), hi)
    return np.minimum(x, top)


# --------------------------------------------------------------------------- selection


def tournament(
    scores: ArrayLike, k: int, rng: np.random.Generator, *, size: int = 3
) -> NDArray[np.int64]:
    """Tournament selection, with replacement.

    Each of ``k`` independent tournaments draws ``size`` contestants uniformly with replacement
    and keeps the one with the highest score; on a tie, the contestant drawn first wins.  With
    distinct scores, the individual ranked ``i``-th (1 = best) of ``n`` wins a tournament with
    probability ``((n - i + 1)**size - (n - i)**size) / n**size``.

    Args:
        scores: one score per individual, larger is better (1-D, no NaN).
        k: number of individuals to select (>= 0).
        rng: the source of randomness.
        size: contestants per tournament (>= 1; 1 is uniform random selection).

    Returns:
        A new ``int64`` array of ``k`` indices into the population.

    Raises:
        ValueError: ``scores`` is not 1-D or holds NaN; ``k < 0``; ``size < 1``; ``scores`` is
            empty while ``k > 0``.
    """
    s = _scores(scores)
    k, size, rng = _count(k, "k"), _count(size, "size", 1), _check_rng(rng)
    if k and not s.size:
        raise ValueError("cannot select from an empty population (scores is empty)")
    contestants = rng.integers(0, max(s.size, 1), size=(k, size), dtype=np.int64)
    # argmax returns the first maximum along the row: ties go to the contestant drawn first.
    winners = np.argmax(s[contestants], axis=1)
    return np.take_along_axis(contestants, winners[:, np.newaxis], axis=1)[:, 0]


def truncation(scores: ArrayLike, k: int) -> NDArray[np.int64]:
    """Truncation selection: the ``k`` best individuals, deterministically.

    Args:
        scores: one score per individual, larger is better (1-D, no NaN).
        k: number of individuals to select (0 <= k <= len(scores)).

    Returns:
        A new ``int64`` array of the indices of the ``k`` highest scores, best first; equal
        scores keep their population order (lower index first).

    Raises:
        ValueError: ``scores`` is not 1-D or holds NaN; ``k < 0`` or ``k > len(scores)``.
    """
    s = _scores(scores)
    k = _count(k, "k")
    if k > s.size:
        raise ValueError(f"k must be <= the population size ({s.size}), got {k}")
    # A stable sort of the negated scores: best first, ties in index order.
    return np.argsort(-s, kind="stable")[:k].astype(np.int64)


def random_selection(n: int, k: int, rng: np.random.Generator) -> NDArray[np.int64]:
    """Uniform random selection, with replacement.

    Args:
        n: population size (>= 1 when ``k > 0``).
        k: number of individuals to select (>= 0).
        rng: the source of randomness.

    Returns:
        A new ``int64`` array of ``k`` indices, each uniform over ``0 .. n-1``.

    Raises:
        ValueError: ``n < 0``; ``k < 0``; ``n == 0`` while ``k > 0``.
    """
    n, k, rng = _count(n, "n"), _count(k, "k"), _check_rng(rng)
    if k and not n:
        raise ValueError("cannot select from an empty population (n == 0)")
    return rng.integers(0, max(n, 1), size=k, dtype=np.int64)


# --------------------------------------------------------------------------- crossover


def _swap(
    a: NDArray[Any], b: NDArray[Any], from_b: NDArray[np.bool_]
) -> tuple[NDArray[Any], NDArray[Any]]:
    """Children that take ``b``'s gene where ``from_b`` is set, and the complementary child."""
    return np.where(from_b, b, a), np.where(from_b, a, b)


def one_point(
    a: ArrayLike, b: ArrayLike, rng: np.random.Generator
) -> tuple[NDArray[Any], NDArray[Any]]:
    """One-point crossover of each pair ``(a[i], b[i])``.

    A cut point ``c``, uniform over ``1 .. d-1``, is drawn per pair; ``child1`` is ``a``'s genes
    before ``c`` followed by ``b``'s from ``c`` on, and ``child2`` the complement.

    Args:
        a: first parents, shape ``(p, d)`` with ``d >= 2``, any dtype.
        b: second parents, same shape and dtype as ``a``.
        rng: the source of randomness.

    Returns:
        ``(child1, child2)``, new arrays of the parents' shape and dtype.

    Raises:
        ValueError: ``a`` or ``b`` is not 2-D; their shapes or dtypes differ; ``d < 2``.
    """
    x, y = _pairs(a, b)
    rng = _check_rng(rng)
    p, d = x.shape
    if d < 2:
        raise ValueError(f"one_point needs genomes of at least 2 genes, got {d}")
    cut = rng.integers(1, d, size=(p, 1))
    return _swap(x, y, np.arange(d) >= cut)


def two_point(
    a: ArrayLike, b: ArrayLike, rng: np.random.Generator
) -> tuple[NDArray[Any], NDArray[Any]]:
    """Two-point crossover of each pair ``(a[i], b[i])`` (DEAP's ``cxTwoPoint``).

    Two distinct cut points ``c1 < c2`` are drawn per pair, the pair uniform among all the
    pairs of distinct values of ``1 .. d``; the segment ``c1 .. c2-1`` is swapped between the
    parents, the rest kept.

    Args:
        a: first parents, shape ``(p, d)`` with ``d >= 2``, any dtype.
        b: second parents, same shape and dtype as ``a``.
        rng: the source of randomness.

    Returns:
        ``(child1, child2)``, new arrays of the parents' shape and dtype.

    Raises:
        ValueError: ``a`` or ``b`` is not 2-D; their shapes or dtypes differ; ``d < 2``.
    """
    x, y = _pairs(a, b)
    rng = _check_rng(rng)
    p, d = x.shape
    if d < 2:
        raise ValueError(f"two_point needs genomes of at least 2 genes, got {d}")
    first = rng.integers(1, d + 1, size=(p, 1))
    second = rng.integers(1, d, size=(p, 1))
    second = second + (second >= first)  # uniform over 1..d without `first`
    lo, hi = np.minimum(first, second), np.maximum(first, second)
    genes = np.arange(d)
    return _swap(x, y, (genes >= lo) & (genes < hi))


def uniform(
    a: ArrayLike, b: ArrayLike, rng: np.random.Generator, *, p: float = 0.5
) -> tuple[NDArray[Any], NDArray[Any]]:
    """Uniform crossover of each pair ``(a[i], b[i])``: genes swapped independently.

    Args:
        a: first parents, shape ``(pairs, d)``, any dtype.
        b: second parents, same shape and dtype as ``a``.
        rng: the source of randomness.
        p: probability that a gene is swapped between the two children.

    Returns:
        ``(child1, child2)``, new arrays of the parents' shape and dtype.

    Raises:
        ValueError: ``a`` or ``b`` is not 2-D; their shapes or dtypes differ; ``p`` is not
            within [0, 1].
    """
    x, y = _pairs(a, b)
    p, rng = _probability(p, "p"), _check_rng(rng)
    return _swap(x, y, rng.random(x.shape) < p)


def blend(
    a: ArrayLike, b: ArrayLike, rng: np.random.Generator, *, alpha: float = 0.5
) -> tuple[NDArray[Any], NDArray[Any]]:
    """Blend crossover, BLX-alpha, of each pair ``(a[i], b[i])`` (DEAP's ``cxBlend``).

    Per gene, ``gamma = (1 + 2*alpha) * u - alpha`` with ``u`` uniform over [0, 1);
    ``child1 = (1 - gamma) * a + gamma * b`` and ``child2 = gamma * a + (1 - gamma) * b``.  Both
    children lie on the line through the parents, and their mean is the parents' mean.  No
    bounds are applied.

    Args:
        a: first parents, shape ``(p, d)``, a float dtype.
        b: second parents, same shape and dtype as ``a``.
        rng: the source of randomness.
        alpha: how far beyond the parents a child may land, as a fraction of their distance
            (>= 0; 0 keeps children between the parents).

    Returns:
        ``(child1, child2)``, new arrays of the parents' shape and dtype.

    Raises:
        ValueError: ``a`` or ``b`` is not 2-D or not of a float dtype; their shapes or dtypes
            differ; ``alpha`` is negative or not finite.
    """
    x, y = _pairs(a, b)
    _require_real(x, "blend")
    alpha, rng = _non_negative(alpha, "alpha"), _check_rng(rng)
    gamma = (1.0 + 2.0 * alpha) * rng.random(x.shape) - alpha
    child1 = (1.0 - gamma) * x + gamma * y
    child2 = gamma * x + (1.0 - gamma) * y
    return child1.astype(x.dtype, copy=False), child2.astype(x.dtype, copy=False)


def _sbx_spread(
    rand: NDArray[np.float64], beta: NDArray[np.float64], eta: float
) -> NDArray[np.float64]:
    """Deb's bounded spread factor ``beta_q`` for a uniform ``rand`` and a bound distance ``beta``
    (``beta >= 1``, so ``alpha`` is within [1, 2) and neither power below can fail)."""
    alpha = 2.0 - beta ** -(eta + 1.0)
    inner = rand * alpha <= 1.0  # rand <= 1 / alpha, without the division
    return np.where(
        inner,
        (rand * alpha) ** (1.0 / (eta + 1.0)),
        (1.0 / (2.0 - rand * alpha)) ** (1.0 / (eta + 1.0)),
    )


def sbx(
    a: ArrayLike,
    b: ArrayLike,
    rng: np.random.Generator,
    *,
    eta: float,
    low: ArrayLike,
    high: ArrayLike,
    p_gene: float = 0.5,
) -> tuple[NDArray[Any], NDArray[Any]]:
    """Simulated binary crossover, bounded (Deb & Agrawal; DEAP's ``cxSimulatedBinaryBounded``).

    Each gene of each pair is crossed with probability ``p_gene`` (DEAP fixes it at 0.5), unless
    the parents differ by less than ``1e-14`` on it.  A crossed gene with parent values
    ``x1 <= x2`` gets the two children ``0.5 * (x1 + x2 -/+ beta_q * (x2 - x1))``, each spread
    factor ``beta_q`` drawn from the polynomial distribution of index ``eta`` truncated so the
    child stays on its side within the bounds (the same uniform number serves both children, as
    in Deb's code), clipped into ``[low, high]``; which child goes to ``child1`` is a fair coin.
    A gene not crossed keeps the parents' values.

    Args:
        a: first parents, shape ``(p, d)``, a float dtype, within ``[low, high]``.
        b: second parents, same shape and dtype as ``a``, within ``[low, high]``.
        rng: the source of randomness.
        eta: distribution index (>= 0): large values make children close to their parents,
            small values spread them out.
        low: lower bound, a finite scalar or one per gene.
        high: upper bound, a finite scalar or one per gene.
        p_gene: probability that a gene is crossed.

    Returns:
        ``(child1, child2)``, new arrays of the parents' shape and dtype, within ``[low, high]``.

    Raises:
        ValueError: ``a`` or ``b`` is not 2-D or not of a float dtype; their shapes or dtypes
            differ; ``eta`` is negative or not finite; ``p_gene`` is not within [0, 1]; ``low``
            or ``high`` is not finite, has the wrong length, or ``low > high``; a parent lies
            outside ``[low, high]``.
    """
    x, y = _pairs(a, b)
    _require_real(x, "sbx")
    eta, p_gene = _non_negative(eta, "eta"), _probability(p_gene, "p_gene")
    rng = _check_rng(rng)
    lo, hi = _bounds(low, high, x.shape[1], finite=True)
    _require_within(x, lo, hi, "sbx parents (a)")
    _require_within(y, lo, hi, "sbx parents (b)")

    x1, x2 = np.minimum(x, y), np.maximum(x, y)
    spread = x2 - x1
    crossed = (rng.random(x.shape) < p_gene) & (spread > _SBX_EPSILON)
    rand = rng.random(x.shape)
    coin = rng.random(x.shape) < 0.5
    # Genes not crossed get a dummy spread of 1 so no division by (nearly) zero happens; their
    # result is discarded below.
    safe = np.where(crossed, spread, 1.0)
    # Bounds far away relative to a tiny spread overflow beta to inf: the right limit (alpha = 2).
    with np.errstate(over="ignore"):
        beta_low = 1.0 + 2.0 * (x1 - lo) / safe
        beta_high = 1.0 + 2.0 * (hi - x2) / safe
    centre = 0.5 * (x1 + x2)
    c1 = np.clip(centre - 0.5 * _sbx_spread(rand, beta_low, eta) * safe, lo, hi)
    c2 = np.clip(centre + 0.5 * _sbx_spread(rand, beta_high, eta) * safe, lo, hi)
    # DEAP: with probability 1/2 child1 takes the upper child c2, otherwise the lower c1.
    child1 = np.where(crossed, np.where(coin, c2, c1), x)
    child2 = np.where(crossed, np.where(coin, c1, c2), y)
    return child1.astype(x.dtype, copy=False), child2.astype(x.dtype, copy=False)


# --------------------------------------------------------------------------- mutation


def bit_flip(x: ArrayLike, rng: np.random.Generator, *, p: float) -> NDArray[Any]:
    """Bit-flip mutation: each bit flipped independently.

    Args:
        x: bit strings, shape ``(n, d)``: a ``bool`` array or an integer array of 0s and 1s.
        rng: the source of randomness.
        p: probability that a bit is flipped.

    Returns:
        A new array of ``x``'s shape and dtype.

    Raises:
        ValueError: ``x`` is not 2-D, not of a bool or integer dtype, or holds values other than
            0 and 1; ``p`` is not within [0, 1].
    """
    arr = _population(x)
    p, rng = _probability(p, "p"), _check_rng(rng)
    if arr.dtype != np.bool_:
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"bit_flip needs a bool or integer array of 0/1, got {arr.dtype}")
        if ((arr != 0) & (arr != 1)).any():
            raise ValueError("bit_flip needs bits: an integer array holding only 0s and 1s")
    flips = rng.random(arr.shape) < p
    out: NDArray[Any] = np.bitwise_xor(arr, flips.astype(arr.dtype))
    return out


def random_reset(
    x: ArrayLike, rng: np.random.Generator, *, p: float, low: int, high: int
) -> NDArray[Any]:
    """Random-reset mutation of integer genomes: genes redrawn independently.

    Args:
        x: integer genomes, shape ``(n, d)``, an integer dtype.
        rng: the source of randomness.
        p: probability that a gene is replaced.
        low: smallest new value.
        high: largest new value (inclusive).

    Returns:
        A new array of ``x``'s shape and dtype, where each gene, with probability ``p``, is
        replaced by an integer uniform over ``[low, high]`` (possibly its old value).

    Raises:
        ValueError: ``x`` is not 2-D or not of an integer dtype; ``p`` is not within [0, 1];
            ``low > high``; ``low`` or ``high`` does not fit in ``x``'s dtype.
    """
    arr = _population(x)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"random_reset needs an integer dtype, got {arr.dtype}")
    p, rng = _probability(p, "p"), _check_rng(rng)
    low, high = operator.index(low), operator.index(high)
    if low > high:
        raise ValueError(f"low must be <= high, got low={low}, high={high}")
    info = np.iinfo(arr.dtype)
    if low < info.min or high > info.max:
        raise ValueError(f"low and high must fit in {arr.dtype} ([{info.min}, {info.max}])")
    reset = rng.random(arr.shape) < p
    fresh = rng.integers(low, high, size=arr.shape, dtype=arr.dtype, endpoint=True)
    return np.where(reset, fresh, arr)


def gaussian(
    x: ArrayLike,
    rng: np.random.Generator,
    *,
    sigma: ArrayLike,
    p: float = 1.0,
    low: ArrayLike | None = None,
    high: ArrayLike | None = None,
) -> NDArray[Any]:
    """Gaussian mutation of real genomes: ``N(0, sigma)`` noise added to genes.

    Args:
        x: real genomes, shape ``(n, d)``, a float dtype.
        rng: the source of randomness.
        sigma: standard deviation of the noise, a scalar or one per gene (finite, >= 0).
        p: probability that a gene is mutated.
        low: if given, the result is clipped from below (a scalar or one per gene).
        high: if given, the result is clipped from above (a scalar or one per gene).

    Returns:
        A new array of ``x``'s shape and dtype; when bounds are given, every gene of it
        (mutated or not) lies within them.

    Raises:
        ValueError: ``x`` is not 2-D or not of a float dtype; ``sigma`` is negative, not finite
            or has the wrong length; ``p`` is not within [0, 1]; a bound has the wrong length,
            is NaN, or ``low > high``.
    """
    arr = _population(x)
    _require_real(arr, "gaussian")
    d = arr.shape[1]
    sd = _per_gene(sigma, d, "sigma")
    if not (np.isfinite(sd).all() and (sd >= 0).all()):
        raise ValueError("sigma must be finite and >= 0 (for every gene)")
    p, rng = _probability(p, "p"), _check_rng(rng)
    lo = None if low is None else _per_gene(low, d, "low")
    hi = None if high is None else _per_gene(high, d, "high")
    if lo is not None and hi is not None:
        lo, hi = _bounds(lo, hi, d, finite=False)
    elif (lo is not None and np.isnan(lo).any()) or (hi is not None and np.isnan(hi).any()):
        raise ValueError("low and high must not be NaN")
    mutate = rng.random(arr.shape) < p
    noise = rng.standard_normal(arr.shape) * sd
    out = arr + np.where(mutate, noise, 0.0)
    if lo is not None or hi is not None:
        out = np.clip(out, lo, hi)
    return out.astype(arr.dtype, copy=False)


def polynomial(
    x: ArrayLike,
    rng: np.random.Generator,
    *,
    eta: float,
    low: ArrayLike,
    high: ArrayLike,
    p: float,
) -> NDArray[Any]:
    """Bounded polynomial mutation (Deb; DEAP's ``mutPolynomialBounded``).

    Each gene is mutated with probability ``p``: with ``delta_1 = (x - low) / (high - low)``,
    ``delta_2 = (high - x) / (high - low)`` and ``u`` uniform over [0, 1), the step is
    ``(2u + (1 - 2u)(1 - delta_1)**(eta+1))**(1/(eta+1)) - 1`` if ``u < 1/2``, else
    ``1 - (2(1 - u) + 2(u - 1/2)(1 - delta_2)**(eta+1))**(1/(eta+1))``, times ``high - low``;
    the result is clipped into ``[low, high]``.  A gene whose ``low == high`` stays put.

    Args:
        x: real genomes, shape ``(n, d)``, a float dtype, within ``[low, high]``.
        rng: the source of randomness.
        eta: distribution index (>= 0): large values make small steps.
        low: lower bound, a finite scalar or one per gene.
        high: upper bound, a finite scalar or one per gene.
        p: probability that a gene is mutated.

    Returns:
        A new array of ``x``'s shape and dtype, within ``[low, high]``.

    Raises:
        ValueError: ``x`` is not 2-D or not of a float dtype; ``eta`` is negative or not finite;
            ``p`` is not within [0, 1]; ``low`` or ``high`` is not finite, has the wrong length,
            or ``low > high``; a gene of ``x`` lies outside ``[low, high]``.
    """
    arr = _population(x)
    _require_real(arr, "polynomial")
    eta, p, rng = _non_negative(eta, "eta"), _probability(p, "p"), _check_rng(rng)
    lo, hi = _bounds(low, high, arr.shape[1], finite=True)
    _require_within(arr, lo, hi, "polynomial's x")

    width = hi - lo
    mutate = (rng.random(arr.shape) < p) & (width > 0)
    rand = rng.random(arr.shape)
    safe = np.where(width > 0, width, 1.0)  # a fixed gene (low == high) is never mutated
    delta_1 = (arr - lo) / safe
    delta_2 = (hi - arr) / safe
    power = 1.0 / (eta + 1.0)
    # Both branches are computed everywhere; with x within bounds, each base is within [0, 2].
    down = (2.0 * rand + (1.0 - 2.0 * rand) * (1.0 - delta_1) ** (eta + 1.0)) ** power - 1.0
    up = 1.0 - (2.0 * (1.0 - rand) + 2.0 * (rand - 0.5) * (1.0 - delta_2) ** (eta + 1.0)) ** power
    step = np.where(rand < 0.5, down, up)
    out = np.where(mutate, np.clip(arr + step * width, lo, hi), arr)
    return out.astype(arr.dtype, copy=False)
