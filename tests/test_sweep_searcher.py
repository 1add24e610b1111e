"""The study searcher through Tune's Searcher API (suggest / on_trial_complete / save / restore),
with a real Optuna journal on disk. No Ray cluster is needed for this protocol."""

from __future__ import annotations

import pickle

import optuna
import pytest
from optuna.trial import TrialState
from ray.tune.search import Searcher

from raydnas.config.experiment import from_dict
from raydnas.sweep import parse_study
from raydnas.sweep.optuna_setup import open_storage
from raydnas.sweep.searcher import StudySearcher

BASE = {"space": "tiny", "epochs": 1, "model": {"channels": 4}}


def make_study(tmp_path, optuna_block=None, seeds=2):
    raw = dict(BASE, sweep={"methods": [{"name": "a"}, {"name": "b", "set": {"optim.w_lr": 0.05}}],
                            "seeds": seeds})
    if optuna_block:
        raw["optuna"] = optuna_block
    return parse_study(from_dict(raw, "s.yaml"), storage=str(tmp_path), name="t")


def test_grid_hands_out_each_method_and_seed_once_seed_major(tmp_path):
    s = StudySearcher(make_study(tmp_path))
    got = [s.suggest(f"t{i}") for i in range(4)]
    assert [(c["method"], c["seed"], c["point"]) for c in got] == [
        ("a", 0, None), ("b", 0, None), ("a", 1, None), ("b", 1, None)]
    assert got[0]["activation"] == "softmax" and "optim.w_lr" not in got[1]
    assert s.suggest("t4") is None  # trials still running
    for i in range(4):
        s.on_trial_complete(f"t{i}", {"discrete_val_acc": 0.5})
    assert s.suggest("t5") == Searcher.FINISHED


def test_optuna_points_run_on_all_seeds_mean_is_told_and_restore_adopts_orphans(tmp_path):
    block = {"params": {"optim.a_lr": {"log_uniform": [1e-4, 1e-2]}}, "n_trials": 2,
             "sampler": "random", "seed": 1}
    study = make_study(tmp_path, block)
    s = StudySearcher(study)
    c0, c1 = s.suggest("x0"), s.suggest("x1")  # method a, point 0, both seeds
    assert (c0["method"], c0["point"], c0["seed"]) == ("a", 0, 0)
    assert (c1["method"], c1["point"], c1["seed"]) == ("a", 0, 1)
    assert c0["optim.a_lr"] == c1["optim.a_lr"]
    ckpt = tmp_path / "searcher.pkl"
    s.save(str(ckpt))                          # Tune's experiment checkpoint
    c2 = s.suggest("x2")                       # method b, point 0: asked after the checkpoint
    assert (c2["method"], c2["point"]) == ("b", 0)

    # the driver dies; Tune unpickles the searcher (tuner.pkl) and restores its saved state
    r = pickle.loads(pickle.dumps(StudySearcher(study)))
    r.restore(str(ckpt))
    again = r.suggest("x2")                    # the orphaned point is adopted, not re-asked
    assert (again["method"], again["point"], again["optim.a_lr"]) == ("b", 0, c2["optim.a_lr"])
    r.on_trial_complete("x0", {"discrete_val_acc": 0.25})
    r.on_trial_complete("x1", {"discrete_val_acc": 0.75})
    r.on_trial_complete("x1", {"discrete_val_acc": 0.0})  # a repeat is ignored
    storage = open_storage(study.journal_path())
    sa = optuna.load_study(study_name="t/a", storage=storage)
    sb = optuna.load_study(study_name="t/b", storage=storage)
    assert [t.state for t in sa.get_trials()] == [TrialState.COMPLETE]
    assert sa.trials[0].value == pytest.approx(0.5)
    assert len(sb.get_trials()) == 1  # no duplicate point in b's study
    # a point with a failed seed is told FAIL
    x3 = r.suggest("x3")
    assert (x3["method"], x3["point"], x3["seed"]) == ("b", 0, 1)
    r.on_trial_complete("x2", {"discrete_val_acc": 0.9})
    r.on_trial_complete("x3", None, error=True)
    assert optuna.load_study(study_name="t/b", storage=storage).trials[0].state == TrialState.FAIL
    # the re-created seeded sampler does not replay b's first suggestion for its next point
    x4 = r.suggest("x4")
    assert (x4["method"], x4["point"]) == ("b", 1)
    assert x4["optim.a_lr"] != c2["optim.a_lr"]


def test_every_trial_carries_every_optuna_key_none_where_it_does_not_apply(tmp_path):
    raw = dict(BASE, sweep={"grid": {"regularizer": ["none", "prox"]}, "seeds": 1},
               optuna={"params": {"optim.a_lr": {"log_uniform": [1e-4, 1e-2]},
                                  "regularizer.rho": {"log_uniform": [1e-3, 1.0]}},
                       "n_trials": 1, "sampler": "random"})
    s = StudySearcher(parse_study(from_dict(raw, "s.yaml"), storage=str(tmp_path), name="n"))
    got = {c["method"]: c for c in (s.suggest("a"), s.suggest("b"))}
    plain, prox = got["softmax/first_order/every/none"], got["softmax/first_order/every/prox"]
    assert plain["regularizer.rho"] is None and isinstance(plain["optim.a_lr"], float)
    assert 1e-3 <= prox["regularizer.rho"] <= 1.0


def test_robust_aggregate_tells_mean_minus_k_std(tmp_path):
    """aggregate: robust tells Optuna mean − k·std over the point's seeds (3 seeds here)."""
    import statistics

    block = {"params": {"optim.a_lr": {"log_uniform": [1e-4, 1e-2]}}, "n_trials": 1,
             "sampler": "random", "aggregate": "robust", "robust_k": 2.0}
    study = make_study(tmp_path, block, seeds=3)
    s = StudySearcher(study)
    vals = [0.9, 0.5, 0.7]
    for i, v in enumerate(vals):
        c = s.suggest(f"r{i}")
        assert c["method"] == "a" and c["seed"] == i
    for i, v in enumerate(vals):
        s.on_trial_complete(f"r{i}", {"discrete_val_acc": v})
    told = optuna.load_study(study_name="t/a", storage=open_storage(study.journal_path()))
    want = statistics.mean(vals) - 2.0 * statistics.stdev(vals)
    assert told.trials[0].value == pytest.approx(want)
    from raydnas.errors import ConfigError

    with pytest.raises(ConfigError, match="optuna.robust_k"):
        make_study(tmp_path, dict(block, robust_k=-1))
    with pytest.raises(ConfigError, match="optuna.aggregate"):
        make_study(tmp_path, dict(block, aggregate="mean-std"))
