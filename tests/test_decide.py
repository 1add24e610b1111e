"""The statistics of a deciding study, checked against scipy and exact enumeration; the race's
rounds on constructed values."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest
from scipy import stats

from raydnas.reduce import decide
from raydnas.reduce.decide import (
    eliminate,
    p_best,
    power_welch,
    seeds_to_tell,
    welch_less,
    welch_two_sided,
)
from raydnas.reduce.race import Race, RaceRules, replay, round_table


def test_welch_matches_scipy_on_random_samples():
    rng = random.Random(0)
    for _ in range(200):
        a = [rng.gauss(0.9, rng.uniform(0.001, 0.05)) for _ in range(rng.randint(2, 9))]
        b = [rng.gauss(0.9, rng.uniform(0.001, 0.05)) for _ in range(rng.randint(2, 9))]
        t, df, p = welch_less(a, b)
        ref = stats.ttest_ind(a, b, equal_var=False, alternative="less")
        assert t == pytest.approx(ref.statistic, rel=1e-9)
        assert p == pytest.approx(ref.pvalue, rel=1e-7, abs=1e-12)
        assert df == pytest.approx(ref.df, rel=1e-9)
        two = stats.ttest_ind(a, b, equal_var=False)
        assert welch_two_sided(a, b)[2] == pytest.approx(two.pvalue, rel=1e-7, abs=1e-12)


def test_welch_without_variance_is_certain_either_way():
    assert welch_less([0.1, 0.1], [0.9, 0.9])[2] == 0.0
    assert welch_less([0.9, 0.9], [0.1, 0.1])[2] == 1.0
    assert welch_two_sided([0.5, 0.5], [0.5, 0.5])[2] == 1.0


def _sim_power(delta, sa, sb, n, reps=6000, seed=0):
    g = np.random.default_rng(seed)
    a = g.normal(delta, sa, size=(reps, n))
    b = g.normal(0.0, sb, size=(reps, n))
    p = stats.ttest_ind(a, b, axis=1, equal_var=False).pvalue
    return float((p < 0.05).mean())


@pytest.mark.parametrize("delta,sa,sb", [(0.02, 0.015, 0.01), (0.05, 0.05, 0.02),
                                         (0.1, 0.02, 0.09)])
def test_seeds_to_tell_is_where_simulated_welch_tests_reach_80_percent_power(delta, sa, sb):
    a = list(np.random.default_rng(1).normal(0, 1, 40))
    a = [delta + sa * (x - np.mean(a)) / np.std(a, ddof=1) for x in a]  # exact mean and std
    b = list(np.random.default_rng(2).normal(0, 1, 40))
    b = [sb * (x - np.mean(b)) / np.std(b, ddof=1) for x in b]
    n = int(seeds_to_tell(a, b))
    assert power_welch(delta, sa ** 2, sb ** 2, n) >= 0.8
    assert n == 2 or power_welch(delta, sa ** 2, sb ** 2, n - 1) < 0.8
    assert _sim_power(delta, sa, sb, n) == pytest.approx(power_welch(delta, sa ** 2, sb ** 2, n),
                                                         abs=0.03)
    if n > 2:
        assert _sim_power(delta, sa, sb, n - 1, seed=3) < 0.8 + 0.02


def test_seeds_to_tell_edges():
    assert math.isnan(seeds_to_tell([0.9], [0.8, 0.7]))
    assert seeds_to_tell([0.9, 0.8], [0.9, 0.8]) == math.inf  # equal means
    assert seeds_to_tell([0.9, 0.9], [0.5, 0.5]) == 2  # no variance, a difference
    assert seeds_to_tell([0.9, 0.5], [0.9001, 0.5001]) == math.inf  # beyond MAX_SEEDS


def _brute_p_best(values):
    """Every resample of every method, means in exact decimal arithmetic (ties are ties)."""
    from fractions import Fraction

    names = list(values)
    exact = [[Fraction(repr(x)) for x in v] for v in values.values()]
    draws = [list(itertools.product(v, repeat=len(v))) for v in exact]
    total = math.prod(len(d) for d in draws)
    out = {m: 0.0 for m in names}
    for combo in itertools.product(*draws):
        means = [sum(c) / len(c) for c in combo]
        top = max(means)
        win = [names[i] for i, x in enumerate(means) if x == top]
        for w in win:
            out[w] += 1 / (total * len(win))
    return out


def test_p_best_is_exact_by_enumeration_and_the_sampled_one_agrees(monkeypatch):
    vals = {"a": [0.9, 0.8, 0.85], "b": [0.88, 0.7], "c": [0.5, 0.95, 0.6]}
    exact = p_best(vals)
    brute = _brute_p_best(vals)
    for m in vals:
        assert exact[m] == pytest.approx(brute[m], abs=1e-9)
    assert sum(exact.values()) == pytest.approx(1.0)
    monkeypatch.setattr(decide, "EXACT_LIMIT", 0)
    sampled = p_best(vals, reps=20000, seed=1)
    for m in vals:
        assert sampled[m] == pytest.approx(exact[m], abs=0.015)
    assert p_best({"a": [], "b": [0.5]}) == pytest.approx({"a": 0.0, "b": 1.0})


def test_a_round_eliminates_only_what_bonferroni_over_all_pairs_says_is_below():
    vals = {"good": [0.95, 0.96, 0.955], "also": [0.954, 0.95, 0.96],
            "bad": [0.60, 0.61, 0.605], "dead": []}
    r = eliminate(vals, 0.05)
    assert r.eliminated == ["bad"] and r.failed == ["dead"] and r.worse_than["bad"]
    pairs = [("good", "also"), ("good", "bad"), ("also", "bad")]
    ps = {pr: stats.ttest_ind(vals[pr[0]], vals[pr[1]], equal_var=False).pvalue for pr in pairs}
    assert [3 * p <= 0.05 for p in ps.values()] == [False, True, True]
    t = r.tests["bad"]
    assert t["p_adj"] == pytest.approx(3 * min(ps[("good", "bad")], ps[("also", "bad")]))
    assert eliminate(vals, 0.05, top_k=2).eliminated == ["bad"]  # below 2 others
    assert eliminate({"x": [0.9, 0.8], "y": [0.85, 0.86]}, 0.05).eliminated == []


def test_samples_without_variance_are_not_compared():
    """The same cell found twice retrains to the same number: no evidence of precision."""
    r = eliminate({"a": [0.9, 0.9], "b": [0.9000001, 0.9000001]}, 0.01)
    assert r.eliminated == [] and r.tests == {}
    assert eliminate({"a": [0.9, 0.9], "b": [0.5, 0.51, 0.49]}, 0.05).eliminated == ["b"]


def test_p_best_ties_do_not_depend_on_float_rounding():
    exact = _brute_p_best({"a": [0.1, 0.2, 0.3], "b": [0.2]})
    assert p_best({"a": [0.1, 0.2, 0.3], "b": [0.2]}) == pytest.approx(exact, abs=1e-12)
    assert p_best({"a": [0.5, float("nan")], "b": [0.4]}) == {"a": 1.0, "b": 0.0}


def test_the_race_table_and_sentences_survive_failures_and_single_values():
    rules = RaceRules(min_seeds=2, max_seeds=3)
    race = Race(rules, ["a", "b"])
    race.start()
    for s, (va, vb) in enumerate([(0.9, None), (0.91, None)]):
        race.record("a", s, va)
        race.record("b", s, vb)
    race.step()
    d = race.decision()
    assert d["decided"] and "only method(s) with results" in d["sentence"] and "b failed" in \
        d["sentence"]
    assert round_table(race)[0]["eliminated"] == "b (failed)"
    race = Race(rules, ["a", "b"])
    race.start()
    for s in range(2):
        race.record("a", s, None)
        race.record("b", s, None)
    race.step()
    assert race.decision()["sentence"].startswith("no method of 2 has a result")


def _study(means, sd, seeds, seed=0):
    g = random.Random(seed)
    return {m: {s: g.gauss(mu, sd) for s in range(seeds)} for m, mu in means.items()}


def test_a_race_drops_a_bad_method_early_and_stops_when_decided():
    rules = RaceRules(min_seeds=3, max_seeds=10, confidence=0.95, alpha_spending="none")
    vals = _study({"a": 0.95, "b": 0.80, "c": 0.60}, 0.01, 10)
    race = replay(rules, vals)
    d = race.decision()
    assert d["decided"] and d["best"] == "a" and race.out == {"b": 1, "c": 1}
    assert d["searches"] == 9 and d["fixed_searches"] == 30
    assert "a is the best of 3 at 95 % by eval_val_acc after 9 searches; a fixed 10-seed " \
        "study: 30" in d["sentence"]
    assert round_table(race)[0]["eliminated"].count("(below a: t ") == 2


def test_an_undecided_race_runs_to_max_seeds_and_says_how_many_more():
    rules = RaceRules(min_seeds=2, max_seeds=4)
    vals = _study({"a": 0.9, "b": 0.9}, 0.02, 4, seed=3)
    race = replay(rules, vals)
    d = race.decision()
    assert not d["decided"] and race.target == 4 and len(race.rounds) == 3
    assert d["searches"] == 8 and d["sentence"].startswith("undecided by eval_val_acc between")


def test_futility_stops_a_race_max_seeds_cannot_decide_and_only_that():
    """The stop is the planning estimate of raydnas.reduce.decide.seeds_to_tell at the round's
    level over the pairs, against F x max_seeds; a clear difference is still raced."""
    vals = _study({"a": 0.9, "b": 0.9}, 0.02, 10, seed=3)
    rules = RaceRules(min_seeds=3, max_seeds=10, futility=2.0)
    race = replay(rules, vals)
    first = {m: [vals[m][s] for s in range(3)] for m in vals}
    lead = max(first, key=lambda m: sum(first[m]))
    other = next(m for m in first if m != lead)
    need = 3 + max(1.0, seeds_to_tell(first[lead], first[other],
                                      confidence=1 - rules.alpha / 1) - 3)
    assert need > 20  # so round 1 ends it
    d = race.decision()
    assert len(race.rounds) == 1 and race.rounds[0]["futile"] == pytest.approx(need)
    assert not d["decided"] and d["searches"] == 6
    assert "stopped for futility after 6 searches (3 seeds each)" in d["sentence"]
    assert replay(RaceRules(min_seeds=3, max_seeds=10), vals).target == 10  # off: runs on
    clear = _study({"a": 0.95, "b": 0.80}, 0.01, 10)
    assert replay(rules, clear).decision()["decided"]
    assert "futility" not in RaceRules().to_dict() and rules.to_dict()["futility"] == 2.0


def test_a_race_waits_for_missing_values_and_counts_failures():
    rules = RaceRules(min_seeds=2, max_seeds=5)
    race = Race(rules, ["a", "b"])
    assert race.start() == [("a", 0), ("b", 0), ("a", 1), ("b", 1)]
    race.record("a", 0, 0.9)
    race.record("a", 1, 0.91)
    race.record("b", 0, None)
    assert not race.ready()
    race.record("b", 1, float("nan"))
    assert race.ready()
    assert race.step() == [] and race.out == {"b": 1} and race.decision()["best"] == "a"


def test_under_the_null_a_bonferroni_race_rarely_eliminates_anyone():
    """Four equal methods: any elimination is an error; the race's rate stays below α."""
    rules = RaceRules(min_seeds=3, max_seeds=8)
    errors = sum(bool(replay(rules, _study(dict.fromkeys("abcd", 0.9), 0.02, 8, seed=s)).out)
                 for s in range(300))
    assert errors / 300 <= 0.05
