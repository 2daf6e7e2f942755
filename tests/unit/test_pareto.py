"""NSGA-II selection and hypervolume (evocluster.pareto) against brute force and hand values."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from evocluster.pareto import (
    crowded_tournament,
    crowding_distance,
    dominates,
    hypervolume,
    non_dominated_fronts,
    nsga2_select,
    ranks,
    zdt1,
    zdt1_front,
)

INF = math.inf


# ---------------------------------------------------------------- brute-force oracles


def _dominates_py(a: list[float], b: list[float]) -> bool:
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def _fronts_py(scores: np.ndarray) -> list[list[int]]:
    """Peel the non-dominated set off, again and again: O(n^3), obviously right."""
    rows = scores.tolist()
    left = set(range(len(rows)))
    fronts = []
    while left:
        front = sorted(
            i for i in left if not any(_dominates_py(rows[j], rows[i]) for j in left if j != i)
        )
        fronts.append(front)
        left -= set(front)
    return fronts


def _hv_cells(points: np.ndarray, reference: tuple[int, ...]) -> int:
    """Hypervolume of integer points (minimisation) by counting the unit cells they dominate."""
    kept = [p for p in points.tolist() if all(x < r for x, r in zip(p, reference))]
    lows = [int(min([r, *(p[d] for p in kept)])) for d, r in enumerate(reference)]
    count = 0
    for cell in itertools.product(*(range(lo, r) for lo, r in zip(lows, reference))):
        if any(all(x <= c for x, c in zip(p, cell)) for p in kept):
            count += 1
    return count


def _tied_scores(seed: int, n: int, m: int) -> np.ndarray:
    """Integer-valued scores on a small grid: many ties and exact duplicates."""
    return np.random.default_rng(seed).integers(0, 5, size=(n, m)).astype(np.float64)


# ---------------------------------------------------------------- dominance and fronts


def test_dominates() -> None:
    assert dominates([2.0, 1.0], [1.0, 1.0])
    assert dominates(np.array([2, 2, 2]), np.array([1, 2, 0]))
    assert not dominates([1.0, 1.0], [1.0, 1.0])  # equal: no
    assert not dominates([1.0, 1.0], [2.0, 1.0])
    assert not dominates([2.0, 0.0], [1.0, 1.0])  # incomparable, both ways
    assert not dominates([1.0, 1.0], [2.0, 0.0])
    assert isinstance(dominates([1.0], [0.0]), bool)


@pytest.mark.parametrize("m", [2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_fronts_match_brute_force(seed: int, m: int) -> None:
    scores = _tied_scores(seed, 60, m)
    fronts = non_dominated_fronts(scores)
    assert [f.tolist() for f in fronts] == _fronts_py(scores)
    for f in fronts:
        assert f.dtype == np.int64
    assert sorted(np.concatenate(fronts).tolist()) == list(range(len(scores)))
    expected_rank = np.empty(len(scores), dtype=np.int64)
    for r, f in enumerate(fronts):
        expected_rank[f] = r
    got = ranks(scores)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, expected_rank)


def test_duplicates_share_a_front() -> None:
    scores = np.array([[1.0, 1.0], [0.0, 0.0], [1.0, 1.0], [0.0, 0.0], [2.0, 0.0]])
    assert [f.tolist() for f in non_dominated_fronts(scores)] == [[0, 2, 4], [1, 3]]
    all_same = np.zeros((5, 3))
    assert [f.tolist() for f in non_dominated_fronts(all_same)] == [[0, 1, 2, 3, 4]]


def test_fronts_of_a_chain_and_of_one_objective() -> None:
    chain = np.array([[0.0, 0.0], [3.0, 3.0], [1.0, 1.0], [2.0, 2.0]])
    assert [f.tolist() for f in non_dominated_fronts(chain)] == [[1], [3], [2], [0]]
    np.testing.assert_array_equal(ranks(chain), [3, 0, 2, 1])
    single = np.array([[2.0], [5.0], [2.0], [1.0]])
    assert [f.tolist() for f in non_dominated_fronts(single)] == [[1], [0, 2], [3]]


def test_fronts_of_nothing_and_of_lists() -> None:
    assert non_dominated_fronts(np.empty((0, 2))) == []
    assert ranks(np.empty((0, 3))).shape == (0,)
    assert [f.tolist() for f in non_dominated_fronts([[1, 0], [0, 1]])] == [[0, 1]]


def test_fronts_scale_to_thousands() -> None:
    scores = np.random.default_rng(7).random((2000, 3))
    fronts = non_dominated_fronts(scores)
    assert sum(f.size for f in fronts) == 2000
    # spot-check the definition: no member of a front is dominated by the same or a later front
    for r in (0, len(fronts) // 2):
        later = scores[np.concatenate(fronts[r:])]
        for i in fronts[r][:20]:
            assert not any(dominates(row, scores[i]) for row in later)


# ---------------------------------------------------------------- crowding distance


def test_crowding_hand_computed() -> None:
    # objective 0 range 4, objective 1 range 6
    front = np.array([[0.0, 6.0], [1.0, 5.0], [3.0, 2.0], [4.0, 0.0]])
    want = [INF, 0.75 + 4 / 6, 0.75 + 5 / 6, INF]
    np.testing.assert_allclose(crowding_distance(front), want)
    # the distance follows the point, not its position
    perm = [2, 0, 3, 1]
    np.testing.assert_allclose(crowding_distance(front[perm]), np.array(want)[perm])


def test_crowding_zero_range_objective_contributes_nothing() -> None:
    front = np.array([[0.0, 7.0], [2.0, 7.0], [5.0, 7.0]])
    np.testing.assert_allclose(crowding_distance(front), [INF, 1.0, INF])
    # three objectives, the middle one constant: only objectives 0 and 2 count
    front3 = np.array([[0.0, 1.0, 5.0], [1.0, 1.0, 3.0], [3.0, 1.0, 1.0], [4.0, 1.0, 0.0]])
    want = [INF, (3 - 0) / 4 + (5 - 1) / 5, (4 - 1) / 4 + (3 - 0) / 5, INF]
    np.testing.assert_allclose(crowding_distance(front3), want)
    # every objective constant (duplicates): no spread at all, no infinities
    np.testing.assert_array_equal(crowding_distance(np.ones((4, 2))), np.zeros(4))


def test_crowding_small_fronts() -> None:
    assert crowding_distance(np.empty((0, 2))).shape == (0,)
    np.testing.assert_array_equal(crowding_distance([[1.0, 2.0]]), [0.0])
    np.testing.assert_array_equal(crowding_distance([[0.0, 1.0], [1.0, 0.0]]), [INF, INF])


def test_crowding_ties_are_stable() -> None:
    # equal values keep index order: the lower index is the boundary
    np.testing.assert_allclose(
        crowding_distance([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]]), [INF, 2.0, INF]
    )
    np.testing.assert_allclose(
        crowding_distance([[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]]), [INF, INF, 2.0]
    )
    out = crowding_distance(_tied_scores(3, 40, 2))
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, crowding_distance(_tied_scores(3, 40, 2)))


def test_infinite_objectives_sort_as_extremes_and_crowd_on_the_finite_range() -> None:
    """+/-inf (an infeasible individual, as the engine's NaN message suggests) is a value: the
    best or worst there is.  Issue 20: every function here refused it with a bare ValueError,
    and nsga2() failed after generation 0."""
    scores = np.array(
        [
            [1.0, -INF],  # infeasible in objective 1, best in 0: front 0 with 1 and 2
            [0.5, 1.0],
            [0.0, 2.0],
            [-INF, -INF],  # worst in both: dominated by every other
            [0.4, 0.5],  # dominated by 1 only
        ]
    )
    assert [f.tolist() for f in non_dominated_fronts(scores)] == [[0, 1, 2], [4], [3]]
    assert [f.tolist() for f in non_dominated_fronts(scores)] == _fronts_py(scores)
    assert ranks(scores).tolist() == [0, 0, 0, 2, 1]
    # objective 0 ranges over [0, 1], objective 1 over its finite values [1, 2]: the middle
    # point's gaps are (1 - 0)/1 and (2 - 1)/1, with -inf counted as the finite minimum 1
    dist = crowding_distance(scores[[0, 1, 2]])
    np.testing.assert_allclose(dist, [INF, 2.0, INF])
    assert not np.isnan(crowding_distance(scores)).any()
    # nothing finite in an objective but its ends: no gap is measured there
    np.testing.assert_allclose(
        crowding_distance([[0.0, -INF], [1.0, 5.0], [2.0, INF]]), [INF, 1.0, INF]
    )
    # all equally infinite: no spread, as for equal finite values
    np.testing.assert_array_equal(crowding_distance([[-INF], [-INF]]), [0.0, 0.0])
    assert nsga2_select(scores, 4).tolist() == [0, 1, 2, 4]
    # index 3 (the last front, -inf everywhere) wins only against itself: 1/25
    won = crowded_tournament(scores, 20000, np.random.default_rng(1))
    assert abs(_freq(won, 3) - 1 / 25) < 0.01
    with pytest.raises(ValueError, match="NaN"):
        non_dominated_fronts([[0.0, np.nan]])
    with pytest.raises(ValueError, match="points must contain only finite"):
        hypervolume([[0.0, INF]], [1.0, 1.0])


# ---------------------------------------------------------------- environmental selection


def test_nsga2_select_hand_built() -> None:
    scores = np.array(
        [
            [3.0, 0.0],  # front 1
            [5.0, 5.0],  # front 0
            [0.0, 3.0],  # front 1
            [2.0, 2.0],  # front 1, crowding (2.9 - 0)/3 + (3 - 1)/3 = 4.9/3
            [2.9, 1.0],  # front 1, crowding (3 - 2)/3 + (2 - 0)/3 = 1
            [0.0, 0.0],  # front 2
        ]
    )
    np.testing.assert_allclose(crowding_distance(scores[[0, 2, 3, 4]]), [INF, INF, 4.9 / 3, 1.0])
    assert nsga2_select(scores, 1).tolist() == [1]
    assert nsga2_select(scores, 2).tolist() == [1, 0]  # two infinities: lower index first
    assert nsga2_select(scores, 3).tolist() == [1, 0, 2]
    assert nsga2_select(scores, 4).tolist() == [1, 0, 2, 3]
    assert nsga2_select(scores, 5).tolist() == [1, 0, 2, 3, 4]
    assert nsga2_select(scores, 6).tolist() == [1, 0, 2, 3, 4, 5]
    assert nsga2_select(scores, 0).tolist() == []
    assert nsga2_select(scores, 0).dtype == np.int64


@pytest.mark.parametrize("m", [2, 3])
@pytest.mark.parametrize("seed", [10, 11, 12])
def test_nsga2_select_takes_whole_fronts_then_the_most_spread(seed: int, m: int) -> None:
    scores = _tied_scores(seed, 80, m)
    fronts = non_dominated_fronts(scores)
    for k in range(0, 81, 7):
        chosen = nsga2_select(scores, k)
        assert chosen.dtype == np.int64
        assert len(chosen) == k
        assert len(set(chosen.tolist())) == k
        np.testing.assert_array_equal(chosen, nsga2_select(scores, k))  # deterministic
        taken = set(chosen.tolist())
        room = k
        for front in fronts:
            members = set(front.tolist())
            if len(front) <= room:
                assert members <= taken
                room -= len(front)
                continue
            # the cut front: the chosen ones are the most crowding-distant, ties to lower index
            dist = crowding_distance(scores[front])
            key = sorted(range(len(front)), key=lambda i: (-dist[i], front[i]))
            assert taken & members == {int(front[i]) for i in key[:room]}
            room = 0
        assert room == 0


def test_nsga2_select_all_is_a_permutation() -> None:
    scores = _tied_scores(5, 30, 2)
    assert sorted(nsga2_select(scores, 30).tolist()) == list(range(30))


# ---------------------------------------------------------------- crowded tournament


def _freq(winners: np.ndarray, i: int) -> float:
    return float(np.mean(winners == i))


def test_tournament_lower_rank_always_wins() -> None:
    # index 2 is the only member of front 0: it wins every tournament it enters, so it is
    # chosen exactly as often as it is drawn at least once: 1 - (3/4)^2
    scores = np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0], [0.0, 1.0]])
    winners = crowded_tournament(scores, 20000, np.random.default_rng(1))
    assert winners.dtype == np.int64
    assert winners.shape == (20000,)
    assert abs(_freq(winners, 2) - (1 - (3 / 4) ** 2)) < 0.02
    # index 0 (front 1, dominated by everyone) wins only against itself: 1/16
    assert abs(_freq(winners, 0) - 1 / 16) < 0.01


def test_tournament_two_individuals() -> None:
    # different fronts: the worse one wins only when drawn twice
    winners = crowded_tournament([[1.0, 1.0], [0.0, 0.0]], 20000, np.random.default_rng(2))
    assert abs(_freq(winners, 1) - 0.25) < 0.02
    # same front, both boundary (inf, inf): the first drawn wins, so 50/50
    winners = crowded_tournament([[1.0, 0.0], [0.0, 1.0]], 20000, np.random.default_rng(3))
    assert abs(_freq(winners, 0) - 0.5) < 0.02


def test_tournament_same_rank_prefers_larger_crowding() -> None:
    # one front; crowding [inf, inf, 4.9/3, 1] (see test_nsga2_select_hand_built): index 3 has
    # the smallest distance and wins only against itself
    scores = np.array([[3.0, 0.0], [0.0, 3.0], [2.0, 2.0], [2.9, 1.0]])
    winners = crowded_tournament(scores, 20000, np.random.default_rng(4))
    assert abs(_freq(winners, 3) - 1 / 16) < 0.01
    # index 2 wins against itself and against index 3, in either draw order: 2/16 + 1/16
    assert abs(_freq(winners, 2) - 3 / 16) < 0.015


def test_tournament_depends_only_on_rng() -> None:
    scores = _tied_scores(6, 50, 3)
    a = crowded_tournament(scores, 100, np.random.default_rng(42))
    b = crowded_tournament(scores, 100, np.random.default_rng(42))
    c = crowded_tournament(scores, 100, np.random.default_rng(43))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.min() >= 0 and a.max() < 50
    assert crowded_tournament(scores, 0, np.random.default_rng(0)).shape == (0,)
    # the global numpy state is not used
    np.random.seed(0)
    d = crowded_tournament(scores, 100, np.random.default_rng(42))
    np.testing.assert_array_equal(a, d)


# ---------------------------------------------------------------- hypervolume


def test_hypervolume_2d_hand_computed() -> None:
    assert hypervolume([[0.25, 0.5]], [1.0, 1.0]) == pytest.approx(0.375)
    staircase = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])
    assert hypervolume(staircase, [4.0, 4.0]) == pytest.approx(6.0)
    # a dominated point and a duplicate add nothing
    more = np.vstack([staircase, [[2.5, 2.5], [2.0, 2.0]]])
    assert hypervolume(more, [4.0, 4.0]) == pytest.approx(6.0)
    assert hypervolume(np.empty((0, 2)), [1.0, 1.0]) == 0.0


def test_hypervolume_zdt1_true_front() -> None:
    hv = hypervolume(zdt1_front(10_000), [1.0, 1.0])
    assert 2 / 3 - 1e-3 < hv < 2 / 3  # the continuous front's 2/3, approached from below
    coarse = hypervolume(zdt1_front(100), [1.0, 1.0])
    assert coarse < hv


def test_hypervolume_3d_hand_computed() -> None:
    assert hypervolume([[1.0, 2.0, 3.0]], [2.0, 4.0, 7.0]) == pytest.approx(1.0 * 2.0 * 4.0)
    # two overlapping boxes: 6 + 12 - overlap (box from (1, 1, 2)) 4 = 14
    boxes = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 1.0]])
    assert hypervolume(boxes, [3.0, 3.0, 3.0]) == pytest.approx(6.0 + 12.0 - 4.0)
    # one box inside the other counts once
    nested = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    assert hypervolume(nested, [2.0, 2.0, 2.0]) == pytest.approx(8.0)


@pytest.mark.parametrize("m", [2, 3])
@pytest.mark.parametrize("seed", [20, 21, 22])
def test_hypervolume_matches_cell_count(seed: int, m: int) -> None:
    rng = np.random.default_rng(seed)
    points = rng.integers(0, 8, size=(15, m)).astype(np.float64)
    reference = (7,) * m  # some points sit on or beyond it
    assert hypervolume(points, np.array(reference, dtype=float)) == _hv_cells(points, reference)


@pytest.mark.parametrize("m", [2, 3])
def test_hypervolume_ignores_order_and_duplicates(m: int) -> None:
    rng = np.random.default_rng(30 + m)
    points = rng.random((40, m))
    reference = np.full(m, 1.1)
    base = hypervolume(points, reference)
    assert base > 0
    assert hypervolume(points[rng.permutation(40)], reference) == base
    doubled = np.vstack([points, points[:10]])
    assert hypervolume(doubled[rng.permutation(50)], reference) == base


def test_hypervolume_ignores_points_beyond_the_reference() -> None:
    inside = np.array([[0.5, 0.5]])
    beyond = np.array([[0.1, 1.2], [1.0, 0.2], [2.0, 2.0], [0.2, 1.0]])  # on the edge counts out
    assert hypervolume(np.vstack([inside, beyond]), [1.0, 1.0]) == pytest.approx(0.25)
    assert hypervolume(beyond, [1.0, 1.0]) == 0.0
    box = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [-5.0, -5.0, 3.0]])
    assert hypervolume(box, [1.0, 1.0, 1.0]) == pytest.approx(1.0)


# ---------------------------------------------------------------- ZDT1


def test_zdt1_values() -> None:
    np.testing.assert_allclose(zdt1([0.25, 0.0, 0.0]), [0.25, 0.5])
    np.testing.assert_allclose(zdt1(np.ones(5)), [1.0, 10.0 * (1.0 - math.sqrt(0.1))])
    g = 1.0 + 9.0 * 0.5
    np.testing.assert_allclose(zdt1([0.0, 0.5]), [0.0, g])
    out = zdt1([0.3, 0.2, 0.4])
    assert out.shape == (2,) and out.dtype == np.float64


def test_zdt1_front_lies_on_zdt1() -> None:
    front = zdt1_front(11)
    assert front.shape == (11, 2) and front.dtype == np.float64
    np.testing.assert_allclose(front[:, 0], np.linspace(0, 1, 11))
    for f1, f2 in front:
        np.testing.assert_allclose(zdt1([f1, 0.0, 0.0, 0.0]), [f1, f2], atol=1e-15)
    np.testing.assert_array_equal(zdt1_front(1), [[0.0, 1.0]])
    # the front is mutually non-dominated (as scores: negated)
    assert len(non_dominated_fronts(-front)) == 1


# ---------------------------------------------------------------- argument validation


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros(3),  # 1-D
        np.zeros((2, 2, 2)),  # 3-D
        np.zeros((3, 0)),  # no objective
        np.array([[0.0, np.nan]]),
    ],
    ids=["1d", "3d", "no-column", "nan"],
)
def test_bad_scores_are_refused(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="scores"):
        non_dominated_fronts(bad)
    with pytest.raises(ValueError, match="scores"):
        ranks(bad)
    with pytest.raises(ValueError, match="scores"):
        crowding_distance(bad)
    with pytest.raises(ValueError, match="scores"):
        nsga2_select(bad, 0)
    with pytest.raises(ValueError, match="scores"):
        crowded_tournament(bad, 1, np.random.default_rng(0))


def test_dominates_refuses() -> None:
    with pytest.raises(ValueError, match="1-D"):
        dominates([[1.0]], [[0.0]])
    with pytest.raises(ValueError, match="same length"):
        dominates([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="at least one"):
        dominates([], [])


def test_selection_refuses_bad_k_and_rng() -> None:
    scores = np.zeros((4, 2))
    with pytest.raises(ValueError, match="k must be >= 0"):
        nsga2_select(scores, -1)
    with pytest.raises(ValueError, match="k must be <= the number of individuals"):
        nsga2_select(scores, 5)
    with pytest.raises(TypeError, match="k must be an integer"):
        nsga2_select(scores, 2.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="k must be an integer"):
        nsga2_select(scores, True)
    with pytest.raises(ValueError, match="k must be >= 0"):
        crowded_tournament(scores, -1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="empty population"):
        crowded_tournament(np.empty((0, 2)), 1, np.random.default_rng(0))
    with pytest.raises(TypeError, match=r"numpy\.random\.Generator"):
        crowded_tournament(scores, 1, np.random.RandomState(0))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"numpy\.random\.Generator"):
        crowded_tournament(scores, 1, 0)  # type: ignore[arg-type]
    # more tournaments than individuals is fine (drawn with replacement)
    assert crowded_tournament(scores, 9, np.random.default_rng(0)).shape == (9,)


def test_hypervolume_refuses() -> None:
    with pytest.raises(ValueError, match="only 2 and 3 objectives"):
        hypervolume(np.zeros((2, 4)), np.ones(4))
    with pytest.raises(ValueError, match="only 2 and 3 objectives"):
        hypervolume(np.zeros((2, 1)), np.ones(1))
    with pytest.raises(ValueError, match="one value per objective"):
        hypervolume(np.zeros((2, 2)), np.ones(3))
    with pytest.raises(ValueError, match="reference must be a 1-D"):
        hypervolume(np.zeros((2, 2)), np.ones((1, 2)))
    with pytest.raises(ValueError, match="reference must contain only finite"):
        hypervolume(np.zeros((2, 2)), [1.0, np.nan])
    with pytest.raises(ValueError, match="points must contain only finite"):
        hypervolume([[0.0, np.nan]], [1.0, 1.0])
    with pytest.raises(ValueError, match="points must be a 2-D"):
        hypervolume([0.0, 0.0], [1.0, 1.0])


def test_zdt1_refuses() -> None:
    with pytest.raises(ValueError, match="1-D"):
        zdt1(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="at least 2 variables"):
        zdt1([0.5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        zdt1([0.5, 1.5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        zdt1([-0.1, 0.5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        zdt1([np.nan, 0.5])
    with pytest.raises(ValueError, match="n must be >= 1"):
        zdt1_front(0)
    with pytest.raises(TypeError, match="n must be an integer"):
        zdt1_front(2.5)  # type: ignore[arg-type]
