"""A study whose verdict comes from the truth, on a real local Ray: the random baseline and the
reference cells run as trials of the experiment, Optuna is told each point's retrained
validation accuracy (eval_val_acc) only after its evaluations finished (real searcher, real
journal), and the report leads with the truth."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import yaml

from raydnas.errors import ConfigError
from raydnas.sweep import run_sweep

pytestmark = pytest.mark.slow

STUDY = {
    "space": "tiny201", "epochs": 1, "seed": 0,
    "data": {"dataset": "digits", "val_fraction": 0.5, "batch_size": 64},
    "model": {"channels": 4}, "activation": "softmax", "gradient": "first_order",
    "schedule": "every", "regularizer": {"name": "prox", "rho": 0.1},
    "optim": {"a_lr": 3.0e-2}, "log": {"print_every": 0, "histograms": False},
    "sweep": {"seeds": 2, "resources": {"cpu": 1}, "baseline": {"random": 2}},
    "evaluate": {"protocol": "nb201_short", "seeds": 2, "calibrate": True,
                 "set": {"epochs": 1, "channels": 4, "cells": 1}},
    "optuna": {"params": {"regularizer.rho": {"log_uniform": [1.0e-3, 1.0]}}, "n_trials": 2,
               "metric": "eval_val_acc", "seed": 0},
}


def _write(tmp_path: Path, study: dict, name: str = "truth.yaml") -> str:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(study))
    return str(p)


def test_optuna_is_told_the_evaluations_and_the_report_leads_with_the_truth(ray_local, tmp_path,
                                                                           caplog):
    import logging

    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    caplog.set_level(logging.WARNING)
    s = run_sweep(_write(tmp_path, STUDY), storage=str(tmp_path), name="tr", quiet=True)
    exp = tmp_path / "tr"
    # NaN by design (Optuna keys that do not apply to the baseline's trials) is logged as NaN
    # without tensorboardX's notice for every value
    assert not [r for r in caplog.records if "NaN or Inf" in r.getMessage()]
    # 2 points x 2 seeds searched; each cell 2 evaluation seeds; 2 random + 5 reference cells
    assert (s.total, s.done, s.failed, s.unfinished) == (4, 4, 0, 0)
    assert s.evaluations == {"done": 4 * 2 + (2 + 5) * 2, "failed": 0, "unfinished": 0}
    evals = {}
    for d in exp.glob("eval-*"):
        cfg = json.loads((d / "params.json").read_text())
        last = [json.loads(ln) for ln in (d / "result.json").read_text().splitlines()][-1]
        evals[(cfg.get("role"), cfg["search_trial_id"], cfg["eval_seed"])] = (cfg, last)
    assert len(evals) == 22
    assert sum(r == "random" for r, _, _ in evals) == 4
    assert {c["reference"] for (r, _, _), (c, _) in evals.items() if r == "reference"} == {
        "conv", "one_path", "skip_path", "all_pool", "all_skip"}
    # what Optuna was told: per point, the mean over its seeds of the mean over each seed's
    # evaluation seeds of eval_val_acc (not a search metric)
    expected: dict[int, list[float]] = {}
    for (role, tid, _), (cfg, last) in evals.items():
        if role is None:
            assert 0 <= last["eval_val_acc"] <= 1 and last["eval_val_n"] > 0
            expected.setdefault(cfg["point"], {}).setdefault(tid, []).append(
                last["eval_val_acc"])
    storage = JournalStorage(JournalFileBackend(str(exp / "optuna.journal")))
    study = optuna.load_study(study_name="tr/softmax/first_order/every/prox", storage=storage)
    told = {t.number: t.value for t in study.trials if t.state.name == "COMPLETE"}
    assert set(told) == set(expected) == {0, 1}
    for point, by_seed in expected.items():
        assert len(by_seed) == 2
        want = statistics.fmean(statistics.fmean(v) for v in by_seed.values())
        assert told[point] == pytest.approx(want, abs=1e-12)
    # the report: the truth first, with percentiles among the random cells and the calibration
    md = (exp / "report" / "report.md").read_text()
    sections = [ln for ln in md.splitlines() if ln.startswith("## ")]
    assert sections[:2] == ["## Decision", "## Verdict: the truth"]  # the truth leads
    assert sections[2].startswith("## Proxies")
    assert "Sorted by `test_acc_mean`" in md and "Calibration: the conv cell scores" in md
    assert "Random baseline: 2 cells" in md
    doc = json.loads((exp / "report" / "report.json").read_text())
    assert doc["truth"]["baseline"]["n"] == 2 and doc["truth"]["evaluations"] == 8
    assert doc["truth"]["calibration"]["discriminates"] in (True, False)
    for g in doc["groups"]:
        assert g["n_evaluated"] == 2 and 0 <= g["random_percentile_mean"] <= 100
        assert 0 <= g["eval_val_acc_mean"] <= 1
        # random search at the same budget, from the 2 random cells' own seconds and accuracy
        assert 1 <= g["random_search_n"] <= 2 and 0 <= g["p_beats_random_search"] <= 1
        assert g["vs_random_search"] in ("beats", "loses", "cannot tell")
        cells = doc["truth"]["baseline"]["cells"].values()
        assert min(c["test_acc"] for c in cells) <= g["random_search_test_acc"] \
            <= max(c["test_acc"] for c in cells)
    assert all(c["seconds"] > 0 for c in doc["truth"]["baseline"]["cells"].values())
    assert "Against random search at the same budget" in md
    ranks = [g["test_rank"] for g in doc["groups"]]
    assert ranks == sorted(ranks)  # sorted by the truth


@pytest.mark.parametrize("edit, key", [
    (lambda s: s["sweep"].update(baseline={"random": 0}), "sweep.baseline.random"),
    (lambda s: s.pop("evaluate"), "sweep.baseline"),
    (lambda s: (s["sweep"].pop("baseline"), s.pop("evaluate")), "optuna.metric"),
    (lambda s: s["evaluate"]["set"].update(val_fraction=0), "optuna.metric"),
    (lambda s: s["optuna"].update(metric="test_acc"), "optuna.metric"),
    (lambda s: s["evaluate"].update(calibrate="yes"), "evaluate.calibrate"),
])
def test_bad_truth_settings_are_one_line_before_anything_starts(tmp_path, edit, key):
    import copy

    from raydnas.config.experiment import load_config
    from raydnas.sweep.study import parse_study

    bad = copy.deepcopy(STUDY)
    edit(bad)
    path = _write(tmp_path, bad)
    with pytest.raises(ConfigError) as e:
        parse_study(load_config(path))
    assert e.value.key == key and "\n" not in str(e.value) and path in str(e.value)
    assert not (tmp_path / "runs").exists()


def test_progress_table_of_a_study_with_evaluation_trials_does_not_sort_on_a_missing_metric(
        tmp_path):
    """Finished evaluation trials report test_acc, not the study's discrete_val_acc; Tune's sort
    by that metric compared None with None and killed the sweep (seen on a 17-method study).
    The reporter is pickled by reference, so a resumed experiment runs the current code."""
    import pickle

    import cloudpickle
    from ray.tune.experiment import Trial
    from ray.tune.progress_reporter import _get_progress_table_data

    from raydnas.config.experiment import load_config
    from raydnas.sweep import parse_study
    from raydnas.sweep.tune_setup import reporter, sortable

    root = Path(__file__).resolve().parents[1]
    study = parse_study(load_config(root / "configs" / "quickstart_truth.yaml"),
                        storage=str(tmp_path), name="t")
    rep = pickle.loads(cloudpickle.dumps(reporter(study)))  # as Tune's experiment state
    assert type(rep).__module__ == "raydnas.sweep.tune_setup"
    assert type(rep).__qualname__ == "StudyReporter"
    trials = []
    for i, last in enumerate([{"test_acc": 0.9}, {"test_acc": 0.8},
                              {"discrete_val_acc": 0.5, "epoch": 10}]):
        t = Trial("__fake", config={"method": "m", "seed": i, "eval_seed": 0}, stub=True)
        t.set_status(Trial.TERMINATED)
        t.run_metadata.last_result = last
        trials.append(t)

    def table(sort):
        return _get_progress_table_data(trials, rep._metric_columns, rep._parameter_columns,
                                        12, study.metric, "max", sort)

    with pytest.raises(TypeError):  # what Tune does when asked to sort these
        table(True)
    assert not sortable(trials, study.metric) and sortable(trials[2:], study.metric)
    assert len(table(sortable(trials, study.metric))[0]) == 3
    # the best trial by the study metric is a search trial, whose config has no eval_seed
    rep.setup(metric=study.metric, mode="max")
    for t in trials:
        t.run_metadata.last_result = {**t.last_result, "config": {"method": "m", "seed": 0}}
    assert rep._current_best_trial(trials)[0] is None
    trials[2].run_metadata.last_result["config"]["eval_seed"] = 0
    assert rep._current_best_trial(trials)[0] is trials[2]
