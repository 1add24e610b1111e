"""The Pareto front of a multi-objective study: the front against a brute-force check of every
pair written out independently, the study's objectives read back, and a real two-objective
Optuna sweep (accuracy vs parameters) whose report lists and draws its front."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd
import pytest
import yaml

from raydnas.reduce.pareto import compute, front, objectives

ROOT = Path(__file__).resolve().parents[1]


def _brute(points, modes):
    """On the front: no other point at least as good on every objective, better on one."""
    sign = [1 if m == "max" else -1 for m in modes]
    out = []
    for i, p in enumerate(points):
        dominated = False
        for j, q in enumerate(points):
            if i == j:
                continue
            ge = all(s * qk >= s * pk for s, pk, qk in zip(sign, p, q))
            gt = any(s * qk > s * pk for s, pk, qk in zip(sign, p, q))
            dominated |= ge and gt
        out.append(not dominated)
    return out


@pytest.mark.parametrize("modes", [["max", "min"], ["max", "max"], ["min", "max", "min"]])
def test_the_front_is_every_undominated_point(modes):
    rng = random.Random(len(modes))
    for _ in range(30):
        pts = [tuple(rng.choice([0.1, 0.2, 0.3, rng.random()]) for _ in modes)
               for _ in range(rng.randint(1, 12))]
        assert front(pts, modes) == _brute(pts, modes)


def test_missing_values_are_never_on_the_front_and_ties_both_are():
    pts = [(0.9, 10.0), (0.9, 10.0), None, (float("nan"), 1.0), (0.5, 20.0)]
    assert front(pts, ["max", "min"]) == [True, True, False, False, False]


def test_the_objectives_come_from_the_study_file(tmp_path):
    assert objectives(tmp_path) == []
    (tmp_path / "raydnas_study.json").write_text(json.dumps(
        {"optuna": {"metric": ["discrete_val_acc", "arch_params"], "mode": ["max", "min"]}}))
    assert objectives(tmp_path) == [("discrete_val_acc", "max"), ("arch_params", "min")]
    df = pd.DataFrame({"group": list("abc"), "discrete_val_acc_mean": [0.9, 0.8, 0.95],
                       "arch_params_mean": [100.0, 50.0, 200.0]})
    p = compute(df, tmp_path)
    assert p["front"] == ["a", "b", "c"] and df["pareto"].tolist() == [True, True, True]
    df.loc[1, "arch_params_mean"] = 150.0  # b: worse than a on both
    assert compute(df, tmp_path)["front"] == ["a", "c"]
    (tmp_path / "raydnas_study.json").write_text(json.dumps(
        {"optuna": {"metric": ["discrete_val_acc", "cell_latency_ms"], "mode": ["max", "min"]}}))
    assert compute(df, tmp_path)["missing"] == ["cell_latency_ms_mean"]


@pytest.mark.slow
def test_a_two_objective_sweep_reports_and_draws_its_front(ray_local, tmp_path):
    from raydnas.sweep import run_sweep

    study = {
        "space": "tiny", "epochs": 1, "seed": 0,
        "data": {"dataset": "digits", "val_fraction": 0.5, "batch_size": 64},
        "model": {"channels": 4}, "log": {"print_every": 0, "histograms": False},
        "measure": {"tune_epochs": 0},
        "sweep": {"seeds": 1, "resources": {"cpu": 1}},
        "optuna": {"params": {"optim.a_lr": {"log_uniform": [1.0e-3, 1.0e-1]},
                              "model.channels": {"choice": [4, 8]}},
                   "n_trials": 4, "metric": ["discrete_val_acc", "arch_params"],
                   "mode": ["max", "min"], "sampler": "random", "seed": 0},
    }
    p = tmp_path / "mo.yaml"
    p.write_text(yaml.safe_dump(study))
    s = run_sweep(p, storage=str(tmp_path), name="mo", quiet=True)
    assert s.failed == 0
    rep = tmp_path / "mo" / "report"
    md = (rep / "report.md").read_text()
    assert "## Pareto front" in md and (rep / "pareto.png").is_file()
    df = pd.read_csv(rep / "report.csv")
    pts = list(zip(df["discrete_val_acc_mean"], df["arch_params_mean"]))
    assert len(pts) == 4 and df["pareto"].tolist() == _brute(pts, ["max", "min"])
    assert any(df["pareto"]) and not all(df["pareto"]) and df["arch_params_mean"].nunique() > 1
