"""The operators of :mod:`evocluster.operators` against the distributions they promise.

Every test draws from a fixed seed, so it is deterministic; the tolerances are a few standard
errors (about 5 sigma, or a chi-square quantile at 1e-4) -- never crossed by a right
implementation at these seeds, far below what a wrong one produces.  DEAP, a test dependency,
serves as the oracle for the operators that promise its semantics.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from itertools import combinations
from typing import Any

import numpy as np
import pytest
from deap import tools

from evocluster import operators as op

Rng = np.random.Generator


def rng(seed: int = 0) -> Rng:
    return np.random.default_rng(seed)


def chi_square(counts: np.ndarray, probs: np.ndarray) -> float:
    expected = counts.sum() * probs
    return float(((counts - expected) ** 2 / expected).sum())


def chi_square_limit(df: int, z: float = 3.719) -> float:
    """The upper 1e-4 quantile (z = 3.719) of chi-square with ``df`` degrees of freedom, by the
    Wilson-Hilferty approximation (accurate to a few percent for df >= 3)."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def assert_rate(hits: np.ndarray, p: float, sigmas: float = 5.0) -> None:
    """The fraction of True in ``hits`` is ``p``, within ``sigmas`` binomial standard errors."""
    n = hits.size
    se = math.sqrt(max(p * (1 - p), 1e-12) / n)
    assert abs(hits.mean() - p) <= sigmas * se + 1e-12, (hits.mean(), p, se)


def ks_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic."""
    x, y = np.sort(np.ravel(x)), np.sort(np.ravel(y))
    z = np.concatenate([x, y])
    fx = np.searchsorted(x, z, side="right") / x.size
    fy = np.searchsorted(y, z, side="right") / y.size
    return float(np.max(np.abs(fx - fy)))


def with_python_random(seed: int, fn: Callable[[], Any]) -> Any:
    """Run a DEAP operator (it draws from the global ``random``) without leaking the seed."""
    state = random.getstate()
    try:
        random.seed(seed)
        return fn()
    finally:
        random.setstate(state)


# --------------------------------------------------------------------------- initialisers


def test_random_bits_shape_dtype_and_mean() -> None:
    x = op.random_bits(1000, 500, rng(1))
    assert x.shape == (1000, 500)
    assert x.dtype == np.bool_
    assert_rate(x, 0.5)
    # every column (and every row) is fair too, not just the whole
    col = x.mean(axis=0)
    assert np.abs(col - 0.5).max() < 5 * math.sqrt(0.25 / 1000)
    assert op.random_bits(0, 7, rng()).shape == (0, 7)
    assert op.random_bits(3, 0, rng()).shape == (3, 0)


def test_random_integers_range_and_uniformity() -> None:
    x = op.random_integers(2000, 100, rng(2), low=-3, high=4)
    assert x.shape == (2000, 100)
    assert x.dtype == np.int64
    assert x.min() == -3 and x.max() == 4  # both ends inclusive
    counts = np.bincount(x.ravel() + 3, minlength=8)
    assert chi_square(counts, np.full(8, 1 / 8)) < chi_square_limit(7)
    assert (op.random_integers(5, 5, rng(), low=9, high=9) == 9).all()


def test_random_reals_scalar_and_per_gene_bounds() -> None:
    x = op.random_reals(20000, 3, rng(3), low=[-1.0, 0.0, 5.0], high=[1.0, 10.0, 5.0])
    assert x.shape == (20000, 3)
    assert x.dtype == np.float64
    assert (x[:, 0] >= -1).all() and (x[:, 0] < 1).all()
    assert (x[:, 1] >= 0).all() and (x[:, 1] < 10).all()
    assert (x[:, 2] == 5.0).all()  # low == high: the value itself
    # uniform: mean (low + high) / 2, variance (high - low)^2 / 12
    assert abs(x[:, 0].mean()) < 5 * math.sqrt(4 / 12 / 20000)
    assert abs(x[:, 1].var() - 100 / 12) < 0.02 * 100 / 12
    counts = np.histogram(x[:, 1], bins=10, range=(0, 10))[0]
    assert chi_square(counts, np.full(10, 0.1)) < chi_square_limit(9)
    y = op.random_reals(100, 4, rng(3), low=2.0, high=3.0)
    assert (y >= 2).all() and (y < 3).all()


def test_random_reals_is_half_open_even_when_rounding_would_reach_high() -> None:
    # the interval is one ulp wide: low + (high - low) * u rounds to high for u >= 0.5
    low = 1.0
    high = float(np.nextafter(1.0, 2.0))
    x = op.random_reals(1000, 1, rng(4), low=low, high=high)
    assert (x == low).all()


# --------------------------------------------------------------------------- selection


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_tournament_matches_the_exact_rank_probabilities(size: int) -> None:
    n, k = 8, 200_000
    gen = rng(10 + size)
    scores = gen.permutation(np.arange(n, dtype=float) * 1.5 - 4)  # distinct, shuffled
    picked = op.tournament(scores, k, rng(size), size=size)
    assert picked.dtype == np.int64 and picked.shape == (k,)
    rank = np.empty(n, dtype=int)  # rank[index] = 1 for the best ... n for the worst
    rank[np.argsort(-scores)] = np.arange(1, n + 1)
    counts = np.bincount(rank[picked] - 1, minlength=n)
    i = np.arange(1, n + 1)
    exact = ((n - i + 1.0) ** size - (n - i.astype(float)) ** size) / float(n) ** size
    assert math.isclose(exact.sum(), 1.0)
    assert chi_square(counts, exact) < chi_square_limit(n - 1)
    assert np.abs(counts / k - exact).max() < 0.005


def test_tournament_breaks_ties_by_draw_order_not_by_index() -> None:
    # two equally best individuals: the first drawn wins, so they win equally often (a rule such
    # as "lowest index wins" would give index 0 every tournament that holds both).
    scores = np.array([0.0, 5.0, 1.0, 5.0, 2.0])
    picked = op.tournament(scores, 100_000, rng(20), size=4)
    c1, c3 = int((picked == 1).sum()), int((picked == 3).sum())
    assert abs(c1 - c3) < 5 * math.sqrt(c1 + c3)
    # only tied-best or an individual never facing them can win; with identical scores the
    # choice is uniform
    same = op.tournament(np.zeros(4), 80_000, rng(21), size=3)
    assert chi_square(np.bincount(same, minlength=4), np.full(4, 0.25)) < chi_square_limit(3)


def test_tournament_edge_cases() -> None:
    empty = op.tournament([1.0, 2.0], 0, rng())
    assert empty.shape == (0,) and empty.dtype == np.int64
    assert op.tournament([], 0, rng()).shape == (0,)
    assert (op.tournament([3.0], 10, rng(), size=5) == 0).all()
    # -inf is a legal score (an invalid individual): it loses whenever it meets anything else
    picked = op.tournament([-np.inf, 0.0], 1000, rng(5), size=2)
    assert_rate(picked == 0, 0.25)


def test_truncation_is_exact_and_stable() -> None:
    scores = np.array([3.0, 9.0, 3.0, -np.inf, 9.0, 7.0, 3.0])
    out = op.truncation(scores, 7)
    assert out.dtype == np.int64
    assert out.tolist() == [1, 4, 5, 0, 2, 6, 3]
    assert op.truncation(scores, 3).tolist() == [1, 4, 5]
    assert op.truncation(scores, 0).tolist() == []
    assert op.truncation(list(scores), 4).tolist() == [1, 4, 5, 0]


def test_random_selection_is_uniform() -> None:
    picked = op.random_selection(6, 60_000, rng(30))
    assert picked.dtype == np.int64 and picked.shape == (60_000,)
    assert picked.min() >= 0 and picked.max() <= 5
    counts = np.bincount(picked, minlength=6)
    assert chi_square(counts, np.full(6, 1 / 6)) < chi_square_limit(5)
    assert op.random_selection(0, 0, rng()).shape == (0,)


# --------------------------------------------------------------------------- crossover


def zeros_and_ones(p: int, d: int, dtype: Any = np.int64) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((p, d), dtype=dtype), np.ones((p, d), dtype=dtype)


def assert_complementary(a: np.ndarray, b: np.ndarray, c1: np.ndarray, c2: np.ndarray) -> None:
    """Position by position, the children hold the parents' two genes (in some order)."""
    assert c1.shape == a.shape and c2.shape == a.shape
    assert c1.dtype == a.dtype and c2.dtype == a.dtype
    straight = (c1 == a) & (c2 == b)
    crossed = (c1 == b) & (c2 == a)
    assert (straight | crossed).all()


def test_one_point_cut_is_uniform_and_children_complementary() -> None:
    d, p = 7, 60_000
    a, b = zeros_and_ones(p, d)
    c1, c2 = op.one_point(a, b, rng(40))
    assert_complementary(a, b, c1, c2)
    # child1 = a[:c] + b[c:]: a run of 0s, then a run of 1s, both non-empty
    assert (np.diff(c1, axis=1) >= 0).all()
    cut = (c1 == 0).sum(axis=1)
    assert cut.min() >= 1 and cut.max() <= d - 1
    counts = np.bincount(cut, minlength=d)[1:]
    assert chi_square(counts, np.full(d - 1, 1 / (d - 1))) < chi_square_limit(d - 2)
    # any values, any dtype: genes keep their positions
    x = rng(41).random((500, 9))
    y = rng(42).random((500, 9))
    assert_complementary(x, y, *op.one_point(x, y, rng(43)))
    u8a, u8b = zeros_and_ones(10, 2, np.uint8)
    k1, k2 = op.one_point(u8a, u8b, rng())
    assert k1.tolist() == [[0, 1]] * 10 and k2.tolist() == [[1, 0]] * 10


def test_two_point_swaps_one_contiguous_segment_like_deap() -> None:
    d, p = 6, 60_000
    a, b = zeros_and_ones(p, d, np.bool_)
    c1, c2 = op.two_point(a, b, rng(50))
    assert_complementary(a, b, c1, c2)
    # the genes child1 took from b form one non-empty run [c1, c2), 1 <= c1 < c2 <= d
    padded = np.pad(c1.astype(int), ((0, 0), (1, 1)))
    starts = (np.diff(padded, axis=1) == 1).sum(axis=1)
    assert (starts == 1).all()
    assert not c1[:, 0].any()  # DEAP's cut points are >= 1: gene 0 never moves
    lo = np.argmax(c1, axis=1)
    hi = lo + c1.sum(axis=1)
    # DEAP draws the pair of cut points uniformly among the C(d, 2) pairs of 1..d
    pairs = list(combinations(range(1, d + 1), 2))
    index = {pair: i for i, pair in enumerate(pairs)}
    counts = np.bincount([index[(int(s), int(e))] for s, e in zip(lo, hi)], minlength=len(pairs))
    probs = np.full(len(pairs), 1 / len(pairs))
    assert chi_square(counts, probs) < chi_square_limit(len(pairs) - 1)


def test_two_point_on_the_smallest_genome() -> None:
    a, b = zeros_and_ones(4, 2)
    c1, c2 = op.two_point(a, b, rng())
    assert c1.tolist() == [[0, 1]] * 4 and c2.tolist() == [[1, 0]] * 4


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_uniform_swaps_each_gene_with_probability_p(p: float) -> None:
    a, b = zeros_and_ones(2000, 50, np.uint8)
    c1, c2 = op.uniform(a, b, rng(60), p=p)
    assert_complementary(a, b, c1, c2)
    assert_rate(c1 == 1, p)
    if p == 0.0:
        assert (c1 == a).all() and (c2 == b).all()
    if p == 1.0:
        assert (c1 == b).all() and (c2 == a).all()


def test_uniform_default_rate_is_one_half() -> None:
    a, b = zeros_and_ones(1000, 40)
    assert_rate(op.uniform(a, b, rng(61))[0] == 1, 0.5)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.3])
def test_blend_children_on_the_line_with_uniform_gamma(alpha: float) -> None:
    gen = rng(70)
    a = gen.uniform(-5, 5, (1000, 40))
    b = a + gen.choice([-1.0, 1.0], a.shape) * gen.uniform(0.5, 3, a.shape)
    c1, c2 = op.blend(a, b, rng(71), alpha=alpha)
    assert c1.dtype == np.float64 and c1.shape == a.shape
    np.testing.assert_allclose((c1 + c2) / 2, (a + b) / 2, rtol=0, atol=1e-12)
    # child1 = a + gamma (b - a) and child2 = a + (1 - gamma)(b - a): both on the line
    gamma = (c1 - a) / (b - a)
    np.testing.assert_allclose((c2 - a) / (b - a), 1 - gamma, rtol=0, atol=1e-9)
    assert gamma.min() >= -alpha - 1e-9 and gamma.max() <= 1 + alpha + 1e-9
    # gamma uniform over [-alpha, 1 + alpha)
    width = 1 + 2 * alpha
    assert abs(gamma.mean() - 0.5) < 5 * width / math.sqrt(12 * gamma.size)
    assert abs(gamma.var() - width**2 / 12) < 0.02 * width**2 / 12
    counts = np.histogram(gamma, bins=10, range=(-alpha, 1 + alpha))[0]
    assert chi_square(counts, np.full(10, 0.1)) < chi_square_limit(9)


def test_blend_keeps_float32() -> None:
    a = np.zeros((3, 4), dtype=np.float32)
    c1, c2 = op.blend(a, a + 1, rng())
    assert c1.dtype == np.float32 and c2.dtype == np.float32


def test_sbx_children_within_bounds_and_gene_rate() -> None:
    gen = rng(80)
    low, high = np.array([0.0, -1.0, 10.0]), np.array([1.0, 1.0, 20.0])
    a = gen.uniform(low, high, (20000, 3))
    b = gen.uniform(low, high, (20000, 3))
    for eta in (0.0, 1.0, 20.0):
        c1, c2 = op.sbx(a, b, rng(81), eta=eta, low=low, high=high, p_gene=0.3)
        assert c1.dtype == np.float64 and c1.shape == a.shape
        assert ((c1 >= low) & (c1 <= high) & (c2 >= low) & (c2 <= high)).all()
        changed = (c1 != a) | (c2 != b)
        # crossed genes change, almost surely (not when the coin gives them back unchanged)
        assert_rate(changed, 0.3)


def test_sbx_preserves_the_mean_when_the_parents_sit_symmetrically_in_the_range() -> None:
    # bounded SBX draws the two spread factors against different bounds; when the parents are
    # symmetric about the middle of the range the two factors agree and the mean is preserved
    p = 20000
    a = np.tile([0.2, 0.4, -3.0], (p, 1))
    b = np.tile([0.8, 0.6, 3.0], (p, 1))
    low, high = [0.0, 0.0, -10.0], [1.0, 1.0, 10.0]
    c1, c2 = op.sbx(a, b, rng(82), eta=2.0, low=low, high=high, p_gene=1.0)
    assert ((c1 != a) | (c2 != b)).all()
    np.testing.assert_allclose((c1 + c2) / 2, (a + b) / 2, rtol=0, atol=1e-12)
    # child1 takes the lower or the upper child with a fair coin
    assert_rate(c1 < c2, 0.5)


def test_sbx_spread_shrinks_as_eta_grows() -> None:
    a = np.full((20000, 2), 0.4)
    b = np.full((20000, 2), 0.6)
    departures = []  # mean |beta_q - 1|: how far the children's spread is from the parents'
    for eta in (0.5, 2.0, 15.0, 100.0):
        c1, c2 = op.sbx(a, b, rng(83), eta=eta, low=0.0, high=1.0, p_gene=1.0)
        beta_q = np.abs(c1 - c2) / 0.2  # the parents are 0.2 apart
        departures.append(float(np.abs(beta_q - 1).mean()))
    assert departures == sorted(departures, reverse=True)
    assert departures[0] > 5 * departures[2] and departures[-1] < 0.02


def test_sbx_leaves_uncrossed_and_equal_genes_alone() -> None:
    gen = rng(84)
    a, b = gen.random((100, 5)), gen.random((100, 5))
    c1, c2 = op.sbx(a, b, rng(85), eta=3.0, low=0.0, high=1.0, p_gene=0.0)
    assert (c1 == a).all() and (c2 == b).all()
    same = np.full((100, 5), 0.5)
    d1, d2 = op.sbx(same, same.copy(), rng(86), eta=3.0, low=0.0, high=1.0, p_gene=1.0)
    assert (d1 == 0.5).all() and (d2 == 0.5).all()


@pytest.mark.parametrize(("x1", "x2", "eta"), [(0.1, 0.3, 2.0), (0.05, 0.9, 0.5), (0.5, 0.52, 10)])
def test_sbx_matches_deaps_distribution(x1: float, x2: float, eta: float) -> None:
    n = 20000
    ind1, ind2 = [x1] * n, [x2] * n
    with_python_random(
        7, lambda: tools.cxSimulatedBinaryBounded(ind1, ind2, eta=eta, low=0.0, up=1.0)
    )
    c1, c2 = op.sbx(np.full((1, n), x1), np.full((1, n), x2), rng(87), eta=eta, low=0, high=1)
    assert ks_distance(np.array(ind1), c1) < 0.02
    assert ks_distance(np.array(ind2), c2) < 0.02
    assert ks_distance(np.array(ind1 + ind2), np.concatenate([c1, c2])) < 0.015


# --------------------------------------------------------------------------- mutation


@pytest.mark.parametrize("dtype", [np.bool_, np.uint8, np.int64])
@pytest.mark.parametrize("p", [0.0, 0.01, 0.3, 1.0])
def test_bit_flip_flips_a_fraction_p(dtype: Any, p: float) -> None:
    x = op.random_bits(500, 400, rng(90)).astype(dtype)
    y = op.bit_flip(x, rng(91), p=p)
    assert y.dtype == x.dtype and y.shape == x.shape
    assert set(np.unique(y).tolist()) <= {0, 1}
    assert_rate(y != x, p)
    if p == 1.0:
        assert (y.astype(int) == 1 - x.astype(int)).all()


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8])
def test_random_reset_within_bounds_and_at_rate(dtype: Any) -> None:
    x = np.full((1000, 100), 5, dtype=dtype)
    y = op.random_reset(x, rng(100), p=0.2, low=2, high=9)
    assert y.dtype == x.dtype and y.shape == x.shape
    assert y.min() >= 2 and y.max() <= 9
    # a reset gene is uniform over 8 values, one of them the old: it changes with p * 7/8
    assert_rate(y != x, 0.2 * 7 / 8)
    fresh = y[y != 5]
    counts = np.bincount(fresh, minlength=10)[[2, 3, 4, 6, 7, 8, 9]]
    assert chi_square(counts, np.full(7, 1 / 7)) < chi_square_limit(6)
    z = op.random_reset(x, rng(101), p=1.0, low=0, high=0)
    assert (z == 0).all()


def test_gaussian_std_rate_and_per_gene_sigma() -> None:
    x = np.tile([0.0, 10.0, -5.0], (50000, 1))
    sigma = np.array([0.5, 2.0, 0.0])
    y = op.gaussian(x, rng(110), sigma=sigma, p=0.4)
    assert y.dtype == np.float64 and y.shape == x.shape
    delta = y - x
    mutated = delta[:, :2] != 0
    assert_rate(mutated, 0.4)
    assert (delta[:, 2] == 0).all()  # sigma 0: unchanged
    for j in (0, 1):
        step = delta[mutated[:, j], j]
        m = step.size
        assert abs(step.mean()) < 5 * sigma[j] / math.sqrt(m)
        # sample std of m normals has standard error ~ sigma / sqrt(2 m)
        assert abs(step.std() - sigma[j]) < 5 * sigma[j] / math.sqrt(2 * m)
        kurtosis = float((step**4).mean() / step.var() ** 2)
        assert abs(kurtosis - 3) < 0.15  # normal, not uniform (1.8) or Laplace (6)


def test_gaussian_default_mutates_every_gene() -> None:
    x = np.zeros((100, 100))
    assert (op.gaussian(x, rng(111), sigma=1.0) != 0).all()


def test_gaussian_clips_when_bounds_are_given() -> None:
    x = np.full((10000, 2), 0.9)
    y = op.gaussian(x, rng(112), sigma=0.5, low=0.0, high=[1.0, 2.0])
    assert (y >= 0).all() and (y[:, 0] <= 1).all() and (y[:, 1] <= 2).all()
    # clipping, not resampling: the bounds themselves are hit often
    assert_rate(y[:, 0] == 1.0, 0.5 * math.erfc(0.1 / 0.5 / math.sqrt(2)))
    assert (y == 0.0).any()
    only_high = op.gaussian(x, rng(113), sigma=0.5, high=1.0)
    assert only_high.max() <= 1.0 and only_high.min() < 0.0
    only_low = op.gaussian(x, rng(114), sigma=0.5, low=0.5)
    assert only_low.min() >= 0.5 and only_low.max() > 2.0


@pytest.mark.parametrize("p", [0.0, 0.25, 1.0])
def test_polynomial_rate_bounds_and_centred_steps(p: float) -> None:
    low, high = np.array([-2.0, 0.0, 3.0]), np.array([2.0, 1.0, 3.0])
    x = np.tile([0.0, 0.0, 3.0], (40000, 1))  # centre, at the lower bound, fixed gene
    y = op.polynomial(x, rng(120), eta=5.0, low=low, high=high, p=p)
    assert y.dtype == np.float64 and y.shape == x.shape
    assert ((y >= low) & (y <= high)).all()
    assert (y[:, 2] == 3.0).all()  # low == high: nothing to mutate
    changed = y[:, 0] != x[:, 0]
    assert_rate(changed, p)
    if p:
        step = y[changed, 0]
        # in the middle of the range the step distribution is symmetric about 0
        assert abs(step.mean()) < 5 * step.std() / math.sqrt(step.size)
        assert abs((step > 0).mean() - 0.5) < 5 * 0.5 / math.sqrt(step.size)
        # at the lower bound a mutated gene moves up or stays
        assert (y[:, 1] >= 0).all() and (y[:, 1] > 0).any()


def test_polynomial_step_shrinks_as_eta_grows() -> None:
    x = np.full((20000, 1), 0.5)
    sizes = [
        float(np.abs(op.polynomial(x, rng(121), eta=eta, low=0, high=1, p=1.0) - x).mean())
        for eta in (0.0, 2.0, 20.0, 200.0)
    ]
    assert sizes == sorted(sizes, reverse=True)
    assert sizes[0] > 5 * sizes[2]


@pytest.mark.parametrize(("x0", "eta", "p"), [(0.2, 5.0, 0.7), (0.97, 1.0, 1.0), (0.5, 30.0, 0.5)])
def test_polynomial_matches_deaps_distribution(x0: float, eta: float, p: float) -> None:
    n = 20000
    ind = [x0] * n
    with_python_random(
        8, lambda: tools.mutPolynomialBounded(ind, eta=eta, low=0.0, up=1.0, indpb=p)
    )
    y = op.polynomial(np.full((1, n), x0), rng(122), eta=eta, low=0.0, high=1.0, p=p)
    assert ks_distance(np.array(ind), y) < 0.02


# --------------------------------------------------------------------------- purity, determinism

_A = rng(200).uniform(0.0, 1.0, (30, 8))
_B = rng(201).uniform(0.0, 1.0, (30, 8))
_BITS = op.random_bits(30, 8, rng(202))
_INTS = op.random_integers(30, 8, rng(203), low=0, high=5)
_SCORES = rng(204).random(30)

#: name -> (inputs, call(*inputs, rng)): each operator that takes arrays, on inputs to keep intact
CASES: dict[str, tuple[tuple[np.ndarray, ...], Callable[..., Any]]] = {
    "tournament": ((_SCORES,), lambda s, g: op.tournament(s, 20, g, size=3)),
    "truncation": ((_SCORES,), lambda s, g: op.truncation(s, 20)),
    "one_point": ((_BITS, ~_BITS), op.one_point),
    "two_point": ((_INTS, _INTS + 1), op.two_point),
    "uniform": ((_A, _B), lambda a, b, g: op.uniform(a, b, g, p=0.5)),
    "blend": ((_A, _B), lambda a, b, g: op.blend(a, b, g, alpha=0.5)),
    "sbx": ((_A, _B), lambda a, b, g: op.sbx(a, b, g, eta=2.0, low=0.0, high=1.0, p_gene=1.0)),
    "bit_flip": ((_BITS,), lambda x, g: op.bit_flip(x, g, p=0.5)),
    "random_reset": ((_INTS,), lambda x, g: op.random_reset(x, g, p=0.5, low=0, high=5)),
    "gaussian": ((_A,), lambda x, g: op.gaussian(x, g, sigma=0.3, low=0.0, high=1.0)),
    "gaussian_p0": ((_A,), lambda x, g: op.gaussian(x, g, sigma=0.3, p=0.0)),
    "polynomial": ((_A,), lambda x, g: op.polynomial(x, g, eta=5.0, low=0.0, high=1.0, p=1.0)),
    "polynomial_p0": ((_A,), lambda x, g: op.polynomial(x, g, eta=5.0, low=0.0, high=1.0, p=0)),
}


def outputs(result: Any) -> list[np.ndarray]:
    return list(result) if isinstance(result, tuple) else [result]


@pytest.mark.parametrize("name", sorted(CASES))
def test_operators_are_pure(name: str) -> None:
    inputs, call = CASES[name]
    frozen = []
    for arr in inputs:
        c = arr.copy()
        c.setflags(write=False)  # an in-place write would raise
        frozen.append(c)
    result = call(*frozen, rng(210))
    for arr, c in zip(inputs, frozen):
        np.testing.assert_array_equal(arr, c)
    for out in outputs(result):
        assert isinstance(out, np.ndarray)
        assert out.flags.writeable
        assert not any(np.shares_memory(out, c) for c in frozen)


@pytest.mark.parametrize("name", sorted(CASES))
def test_operators_are_deterministic_given_the_seed(name: str) -> None:
    inputs, call = CASES[name]
    first = outputs(call(*inputs, rng(220)))
    again = outputs(call(*inputs, rng(220)))
    for x, y in zip(first, again):
        np.testing.assert_array_equal(x, y)
    if name not in ("truncation", "gaussian_p0", "polynomial_p0"):
        other = outputs(call(*inputs, rng(221)))
        assert any(not np.array_equal(x, y) for x, y in zip(first, other))


def test_initialisers_are_deterministic_given_the_seed() -> None:
    for make in (
        lambda g: op.random_bits(10, 10, g),
        lambda g: op.random_integers(10, 10, g, low=0, high=100),
        lambda g: op.random_reals(10, 10, g, low=-1, high=1),
        lambda g: op.random_selection(10, 10, g),
    ):
        np.testing.assert_array_equal(make(rng(230)), make(rng(230)))
        assert not np.array_equal(make(rng(230)), make(rng(231)))


def test_no_global_random_state_is_used() -> None:
    state, np_state = random.getstate(), np.random.get_state()
    for inputs, call in CASES.values():
        call(*inputs, rng(240))
    assert random.getstate() == state
    after = np.random.get_state()
    assert after[0] == np_state[0] and np.array_equal(after[1], np_state[1])


# --------------------------------------------------------------------------- bad arguments

_F2 = np.zeros((4, 3))
_I2 = np.zeros((4, 3), dtype=np.int64)

BAD: list[tuple[str, Callable[[], Any], str]] = [
    ("bits n<0", lambda: op.random_bits(-1, 3, rng()), "n must be >= 0"),
    ("bits d<0", lambda: op.random_bits(3, -1, rng()), "d must be >= 0"),
    ("ints low>high", lambda: op.random_integers(2, 2, rng(), low=3, high=2), "low must be <="),
    ("reals low>high", lambda: op.random_reals(2, 2, rng(), low=1.0, high=0.0), "low must be <="),
    ("reals inf", lambda: op.random_reals(2, 2, rng(), low=0, high=np.inf), "finite"),
    ("reals length", lambda: op.random_reals(2, 3, rng(), low=[0, 0], high=1), "per gene"),
    ("tour k<0", lambda: op.tournament([1.0], -1, rng()), "k must be >= 0"),
    ("tour size<1", lambda: op.tournament([1.0], 1, rng(), size=0), "size must be >= 1"),
    ("tour empty", lambda: op.tournament([], 1, rng()), "empty"),
    ("tour nan", lambda: op.tournament([1.0, np.nan], 1, rng()), "NaN"),
    ("tour 2-D", lambda: op.tournament(np.ones((2, 2)), 1, rng()), "1-D"),
    ("trunc k<0", lambda: op.truncation([1.0], -1), "k must be >= 0"),
    ("trunc k>n", lambda: op.truncation([1.0, 2.0], 3), "population size"),
    ("randsel k<0", lambda: op.random_selection(3, -1, rng()), "k must be >= 0"),
    ("randsel n<0", lambda: op.random_selection(-3, 1, rng()), "n must be >= 0"),
    ("randsel empty", lambda: op.random_selection(0, 1, rng()), "empty"),
    ("1pt d<2", lambda: op.one_point(np.zeros((2, 1)), np.zeros((2, 1)), rng()), "at least 2"),
    ("2pt d<2", lambda: op.two_point(np.zeros((2, 1)), np.zeros((2, 1)), rng()), "at least 2"),
    ("1pt shape", lambda: op.one_point(_F2, np.zeros((4, 4)), rng()), "same shape"),
    ("2pt shape", lambda: op.two_point(_F2, np.zeros((3, 3)), rng()), "same shape"),
    ("unif shape", lambda: op.uniform(_F2, np.zeros((4, 2)), rng()), "same shape"),
    ("blend shape", lambda: op.blend(_F2, np.zeros((5, 3)), rng()), "same shape"),
    ("sbx shape", lambda: op.sbx(_F2, np.zeros((4, 2)), rng(), eta=1, low=0, high=1), "same shape"),
    ("1pt dtype", lambda: op.one_point(_F2, _I2, rng()), "same dtype"),
    ("1pt 1-D", lambda: op.one_point(np.zeros(3), np.zeros(3), rng()), "2-D"),
    ("unif p>1", lambda: op.uniform(_F2, _F2, rng(), p=1.5), "within \\[0, 1\\]"),
    ("unif p<0", lambda: op.uniform(_F2, _F2, rng(), p=-0.1), "within \\[0, 1\\]"),
    ("unif p nan", lambda: op.uniform(_F2, _F2, rng(), p=np.nan), "within \\[0, 1\\]"),
    ("blend alpha<0", lambda: op.blend(_F2, _F2, rng(), alpha=-0.1), "alpha must be"),
    ("blend ints", lambda: op.blend(_I2, _I2, rng()), "float dtype"),
    ("sbx eta<0", lambda: op.sbx(_F2, _F2, rng(), eta=-1, low=0, high=1), "eta must be"),
    ("sbx p_gene", lambda: op.sbx(_F2, _F2, rng(), eta=1, low=0, high=1, p_gene=2), "p_gene"),
    ("sbx low>high", lambda: op.sbx(_F2, _F2, rng(), eta=1, low=1, high=0), "low must be <="),
    ("sbx inf", lambda: op.sbx(_F2, _F2, rng(), eta=1, low=-np.inf, high=1), "finite"),
    ("sbx outside", lambda: op.sbx(_F2, _F2, rng(), eta=1, low=0.5, high=1), "within"),
    ("sbx ints", lambda: op.sbx(_I2, _I2, rng(), eta=1, low=0, high=1), "float dtype"),
    ("flip p>1", lambda: op.bit_flip(_I2, rng(), p=1.01), "within \\[0, 1\\]"),
    ("flip p<0", lambda: op.bit_flip(_I2, rng(), p=-0.01), "within \\[0, 1\\]"),
    ("flip not bits", lambda: op.bit_flip(_I2 + 2, rng(), p=0.1), "0s and 1s"),
    ("flip floats", lambda: op.bit_flip(_F2, rng(), p=0.1), "bool or integer"),
    ("flip 1-D", lambda: op.bit_flip(np.zeros(3, dtype=bool), rng(), p=0.1), "2-D"),
    ("reset p", lambda: op.random_reset(_I2, rng(), p=2, low=0, high=1), "within \\[0, 1\\]"),
    ("reset low>high", lambda: op.random_reset(_I2, rng(), p=0.1, low=2, high=1), "low must be"),
    ("reset floats", lambda: op.random_reset(_F2, rng(), p=0.1, low=0, high=1), "integer dtype"),
    (
        "reset overflow",
        lambda: op.random_reset(_I2.astype(np.uint8), rng(), p=0.1, low=0, high=300),
        "fit in uint8",
    ),
    ("gauss sigma<0", lambda: op.gaussian(_F2, rng(), sigma=-1.0), "sigma must be"),
    ("gauss sigma len", lambda: op.gaussian(_F2, rng(), sigma=[1.0, 2.0]), "per gene"),
    ("gauss p", lambda: op.gaussian(_F2, rng(), sigma=1.0, p=1.2), "within \\[0, 1\\]"),
    ("gauss low>high", lambda: op.gaussian(_F2, rng(), sigma=1.0, low=1, high=0), "low must be"),
    ("gauss low nan", lambda: op.gaussian(_F2, rng(), sigma=1.0, low=np.nan), "NaN"),
    ("gauss ints", lambda: op.gaussian(_I2, rng(), sigma=1.0), "float dtype"),
    ("poly eta<0", lambda: op.polynomial(_F2, rng(), eta=-1, low=0, high=1, p=0.5), "eta must"),
    ("poly p", lambda: op.polynomial(_F2, rng(), eta=1, low=0, high=1, p=-1), "within \\[0, 1\\]"),
    ("poly low>high", lambda: op.polynomial(_F2, rng(), eta=1, low=1, high=0, p=0.5), "low must"),
    ("poly outside", lambda: op.polynomial(_F2 - 1, rng(), eta=1, low=0, high=1, p=0.5), "within"),
    ("poly inf", lambda: op.polynomial(_F2, rng(), eta=1, low=0, high=np.inf, p=0.5), "finite"),
]


@pytest.mark.parametrize(("call", "match"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_arguments_raise_value_error(call: Callable[[], Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("bad", [0, np.random.RandomState(0), random.Random(0)])
def test_rng_must_be_a_numpy_generator(bad: Any) -> None:
    with pytest.raises(TypeError, match=r"numpy\.random\.Generator"):
        op.random_bits(2, 2, bad)
    with pytest.raises(TypeError, match=r"numpy\.random\.Generator"):
        op.uniform(_F2, _F2, bad)
