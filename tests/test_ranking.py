"""Methods ranked across benchmarks (raydnas.reduce.ranking) against scipy, and `raydnas rank`
on experiments written to disk."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest
from reduce_fixtures import ExperimentWriter, flat
from scipy import stats

from raydnas.errors import ConfigError
from raydnas.reduce.ranking import (
    cliques,
    critical_difference,
    friedman,
    kendall,
    rank_suite,
    ranks,
)
from raydnas.reduce.suite import rank_experiments

ROOT = Path(__file__).resolve().parents[1]
M = ["a", "b", "c", "d", "e"]


def _scores(seed: int, n: int = 6) -> dict[str, dict[str, float]]:
    rng = random.Random(seed)
    # two decimals: ties happen
    return {f"b{i}": {m: round(rng.uniform(0.8, 0.9), 2) for m in M} for i in range(n)}


@pytest.mark.parametrize("seed", range(5))
def test_ranks_and_friedman_match_scipy(seed):
    scores = _scores(seed)
    table = [ranks(s, M) for s in scores.values()]
    for s, t in zip(scores.values(), table):
        want = stats.rankdata([-s[m] for m in M], method="average")
        assert [t[m] for m in M] == pytest.approx(list(want))
    stat, p = friedman(table, M)
    ref = stats.friedmanchisquare(*[[s[m] for s in scores.values()] for m in M])
    assert stat == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)


def test_a_method_without_a_value_shares_the_worst_ranks():
    t = ranks({"a": 0.9, "b": None, "c": 0.8, "d": math.nan}, ["a", "b", "c", "d"])
    assert t == {"a": 1, "c": 2, "b": 3.5, "d": 3.5}


def test_critical_difference_is_nemenyis():
    # Demšar (JMLR 2006) Table 5, q_0.05 for k = 2..6: 1.960 2.343 2.569 2.728 2.850
    for k, q in zip(range(2, 7), (1.960, 2.343, 2.569, 2.728, 2.850)):
        assert critical_difference(k, 10) == pytest.approx(q * math.sqrt(k * (k + 1) / 60),
                                                           abs=2e-3)


def test_kendall_and_the_suite_summary():
    scores = _scores(7)
    r = rank_suite(scores)
    b = list(scores)
    t0, t1 = ranks(scores[b[0]], M), ranks(scores[b[1]], M)
    ref = stats.kendalltau([t0[m] for m in M], [t1[m] for m in M]).statistic
    assert kendall(t0, t1, M) == pytest.approx(ref)
    assert r["kendall"][f"{b[0]} ~ {b[1]}"] == pytest.approx(ref)
    assert len(r["kendall"]) == 15 and r["kendall_mean"] == pytest.approx(
        sum(r["kendall"].values()) / 15)
    mean = r["mean_rank"]
    assert sum(mean.values()) == pytest.approx(len(M) * (len(M) + 1) / 2)
    assert r["methods"] == sorted(M, key=lambda m: (mean[m], m))
    assert all(abs(mean[x] - mean[y]) > r["cd"] for x, y in r["differ"])
    for m in M:
        lo, hi = r["mean_rank_ci"][m]
        assert lo <= mean[m] <= hi


def test_a_clearly_best_method_is_told_apart_and_cliques_cover_the_rest():
    scores = {f"b{i}": {"best": 0.99, "x": 0.5 + 0.01 * (i % 3), "y": 0.5 + 0.01 * ((i + 1) % 3),
                        "z": 0.5 + 0.01 * ((i + 2) % 3)} for i in range(12)}
    r = rank_suite(scores)
    assert r["methods"][0] == "best" and r["friedman_p"] < 0.01
    assert all(["best", m] in r["differ"] for m in ("x", "y", "z"))
    # means 1, 3, 3, 3 (x, y, z cycle through the same places); CD 1.35: one bar x..z
    assert [(m, r["mean_rank"][m]) for m in r["methods"]] == [
        ("best", 1), ("x", 3), ("y", 3), ("z", 3)]
    assert cliques(r["methods"], r["mean_rank"], r["cd"]) == [("x", "z")]


def _experiments(tmp_path):
    """Three studies (benchmarks) of the same three methods; c has no searches on the last."""
    A, B, C = ("softmax/first_order/every/none", "crb/first_order/every/none",
               "sigmoid/first_order/every/none")
    g = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|skip_connect~1|none~2|"
    out = []
    for i, accs in enumerate([(0.9, 0.8, 0.7), (0.85, 0.6, 0.7), (0.9, 0.7, None)]):
        w = ExperimentWriter(tmp_path, f"bench{i}")
        for m, acc in zip((A, B, C), accs):
            if acc is not None:
                for s in range(2):
                    w.trial(flat(m, s), [g], discrete_val_acc=acc, nb201=True)
        out.append(w.finish())
    return out


def test_raydnas_rank_on_experiments_on_disk(tmp_path):
    exps = _experiments(tmp_path)
    r = subprocess.run([sys.executable, "-m", "raydnas", "rank", *map(str, exps), "--out",
                        str(tmp_path / "rank"), "--metric", "discrete_val_acc_mean"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "3 methods on 3 benchmarks" in r.stdout
    doc = json.loads((tmp_path / "rank" / "rank.json").read_text())
    assert doc["methods"][0] == "softmax/first_order/every/none"
    assert doc["ranks"]["bench2"]["sigmoid/first_order/every/none"] == 3  # no value: last
    assert doc["missing"]["bench2"] == ["sigmoid/first_order/every/none"]
    md = (tmp_path / "rank" / "rank.md").read_text()
    assert "Friedman" in md and "![cd](cd.png)" in md and "Kendall" in md
    assert (tmp_path / "rank" / "cd.png").stat().st_size > 5000


def test_bad_rank_input_is_one_line(tmp_path):
    exps = _experiments(tmp_path)
    for args, key in [((exps[:1], tmp_path / "o"), "EXPERIMENT"), ((exps[:2], tmp_path / "o", "nope"), "--metric"),
                      ((exps[:2], tmp_path / "o", "discrete_val_acc_mean", 1.5), "--alpha")]:
        with pytest.raises(ConfigError) as e:
            rank_experiments(*args)
        assert key in str(e.value) and "\n" not in str(e.value)
        assert not (tmp_path / "o").exists()  # nothing written
    same = [exps[0], exps[0]]
    with pytest.raises(ConfigError, match="distinct directory names"):
        rank_experiments(same, tmp_path / "o", "discrete_val_acc_mean")
