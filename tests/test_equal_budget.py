"""Random search at the same budget (raydnas.reduce.equal_budget) against exact enumeration:
every n-subset of the random cells, ties on validation accuracy broken every possible way."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from raydnas.reduce.equal_budget import best_of, budget, columns, p_beats, verdict


def _enumerated(cells, n):
    """Expected test accuracy of the best-by-validation cell of a uniform n-subset, and
    P(value > it) for each value, by listing every subset (ties: each tied cell equally)."""
    subsets = list(itertools.combinations(range(len(cells)), n))
    outcome = []  # (probability, test accuracy)
    for s in subsets:
        top = max(cells[i][0] for i in s)
        tied = [i for i in s if cells[i][0] == top]
        outcome += [(1 / len(subsets) / len(tied), cells[i][1]) for i in tied]
    return outcome


@pytest.mark.parametrize("seed", range(6))
def test_best_of_matches_every_subset_written_out(seed):
    rng = random.Random(seed)
    r = rng.randint(2, 8)
    # validation accuracies on a coarse grid: ties are common
    cells = [(rng.choice([0.90, 0.92, 0.95]), rng.random()) for _ in range(r)]
    for n in range(1, r + 1):
        want = _enumerated(cells, n)
        got = best_of(cells, n)
        assert sum(q for q, _ in got) == pytest.approx(1.0)
        assert sum(q * t for q, t in got) == pytest.approx(sum(q * t for q, t in want))
        for v in (0.1, 0.5, 0.9, cells[0][1]):
            assert p_beats([v], got) == pytest.approx(p_beats([v], want))


def test_best_of_all_cells_is_the_best_by_validation_and_one_cell_is_the_mean():
    cells = [(0.9, 0.1), (0.8, 0.7), (0.95, 0.4)]
    assert sum(q * t for q, t in best_of(cells, 3)) == pytest.approx(0.4)
    assert sum(q * t for q, t in best_of(cells, 1)) == pytest.approx(0.4)  # mean (0.1+0.7+0.4)/3
    with pytest.raises(ValueError):
        best_of(cells, 4)


def test_p_beats_counts_ties_half_and_the_verdict_follows_the_interval():
    dist = [(0.5, 0.9), (0.5, 0.8)]
    assert p_beats([0.9], dist) == pytest.approx(0.75)  # beats 0.8, ties 0.9
    assert verdict([0.99] * 8, dist)[3] == "beats"
    assert verdict([0.5] * 8, dist)[3] == "loses"
    assert verdict([0.99, 0.5, 0.99, 0.5, 0.99, 0.5], dist)[3] == "cannot tell"
    assert verdict([0.99] * 4, dist)[3] == "cannot tell"  # fewer than 5 seeds: no verdict


def test_budget_is_search_plus_retraining_in_random_retrainings_within_the_pool():
    assert budget(20.0, 2.0, 2.0, 10) == (10, True)  # 11 wanted, 10 cells
    assert budget(5.0, 2.0, 2.0, 10) == (4, False)  # round(3.5) = 4
    assert budget(0.1, 0.1, 2.0, 10) == (1, False)
    assert budget(math.nan, 2.0, 2.0, 10) is None  # no timings: no budget


def test_columns_need_random_cells_with_a_validation_accuracy():
    randoms = {f"r{i}": {"test_acc": 0.5 + i / 10, "eval_val_acc": 0.5 + i / 10,
                         "seconds": 1.0} for i in range(4)}
    out = columns({"m": [0.95, 0.97] * 3}, {"m": 1.0}, {"m": 1.0}, randoms)
    row = out["m"]
    assert row["random_search_n"] == 2 and not row["random_search_capped"]
    # the best of 2 of 4 cells ordered 0.8, 0.7, 0.6, 0.5: P = 3/6, 2/6, 1/6, 0
    assert row["random_search_test_acc"] == pytest.approx((3 * 0.8 + 2 * 0.7 + 0.6) / 6)
    assert row["vs_random_search"] == "beats" and row["p_beats_random_search"] == pytest.approx(1.0)
    one = {"r0": randoms["r0"]}
    assert columns({"m": [0.9]}, {"m": 1.0}, {"m": 1.0}, one) == {}
    assert columns({"m": [0.9]}, {"m": math.nan}, {"m": 1.0}, randoms) == {}  # no timing
    twice = {k: dict(c, eval_seeds=2) for k, c in randoms.items()}  # 2 retrainings per cell
    assert columns({"m": [0.9]}, {"m": 3.0}, {"m": 1.0}, twice)["m"]["random_search_n"] == 2
