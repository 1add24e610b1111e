"""Stopping searches that have already failed: the stop rules (no comparison between trials),
Tune's schedulers over search trials, and what the report and Optuna are told.

Real parts: a real Ray Tune run on the session's local Ray, a real Optuna journal on disk, real
searches on the embedded digits."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from raydnas.config.experiment import from_dict
from raydnas.errors import ConfigError
from raydnas.model.genotype import derive, parse_genotype
from raydnas.model.spaces import load_space
from raydnas.search.metrics import DECIDED_MARGIN
from raydnas.search.stop_rules import check


def _stop(**kw):
    return from_dict({"space": "tiny", "data": {"dataset": "digits"}, "stop": kw}, "<t>").stop


LIVE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|none~1|nor_conv_3x3~2|"
DEAD = "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|nor_conv_3x3~2|"
POOLS = "|avg_pool_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|avg_pool_3x3~0|none~1|avg_pool_3x3~2|"


def _rec(epoch, margin=0.2):
    return {"epoch": epoch, "alpha_margin_mean": margin}


def test_stop_rules_fire_on_dead_collapsed_and_stalled_cells_and_only_then():
    live, dead, pools = (parse_genotype(s) for s in (LIVE, DEAD, POOLS))
    assert dead.dead_cells() and not live.dead_cells()
    rules = _stop(dead=True, collapsed=1.0, margin_stall_epochs=2, rules_min_epochs=2)
    hist = [_rec(1), _rec(2)]
    assert check(rules, hist, _rec(3), dead, 10) == "dead"
    assert check(rules, hist, _rec(3), pools, 10) == "collapsed"
    assert check(rules, hist, _rec(3), live, 10) is None
    assert check(rules, [], _rec(1), dead, 10) is None  # before rules_min_epochs
    assert check(rules, hist, _rec(10), dead, 10) is None  # the last epoch: it ran to its end
    assert check(_stop(collapsed=0.5), hist, _rec(3), live, 10) is None  # 2 of 5 live ops
    # undecided and the margin moved < delta over the last 2 epochs
    small = DECIDED_MARGIN / 2
    stalled = [_rec(1, small), _rec(2, small + 0.001)]
    assert check(rules, stalled, _rec(3, small + 0.002), live, 10) == "margin_stalled"
    assert check(rules, stalled, _rec(3, small + 0.02), live, 10) is None  # it moves
    decided = [_rec(1, 0.3), _rec(2, 0.3)]
    assert check(rules, decided, _rec(3, 0.3), live, 10) is None  # decided: not stalled
    assert check(_stop(), hist, _rec(3), dead, 10) is None  # every rule is off by default


@pytest.mark.parametrize("sched,key,allowed", [
    ({"name": "hyperband"}, "sweep.scheduler.name", "one of asha, median"),
    ({"name": "asha", "metric": "test_acc"}, "sweep.scheduler.metric", "every search trial"),
    ({"name": "asha", "grace_epochs": 3}, "sweep.scheduler.grace_epochs", "fewer than"),
    ({"name": "median", "reduction_factor": 2}, "sweep.scheduler.reduction_factor",
     "unknown key"),
    ({"name": "asha", "reduction_factor": 1}, "sweep.scheduler.reduction_factor", "> 1"),
])
def test_bad_scheduler_is_one_line_before_anything_starts(sched, key, allowed, tmp_path):
    from raydnas.sweep import parse_study

    raw = {"space": "tiny", "epochs": 3, "data": {"dataset": "digits"},
           "sweep": {"seeds": 1, "scheduler": sched}}
    with pytest.raises(ConfigError) as e:
        parse_study(from_dict(raw, "s.yaml"), storage=str(tmp_path), name="x")
    msg = str(e.value)
    assert "\n" not in msg and "s.yaml" in msg and key in msg and allowed in msg
    assert not any(tmp_path.iterdir())


def _dead_and_live_seeds(space_name: str) -> tuple[int, int]:
    """Seeds whose α initialization (what the cell stays at without α steps) derives a dead
    and a live cell of the space: found here, not hard-coded."""
    from raydnas.axes.activation import Softmax

    space = load_space(space_name)
    found: dict[bool, int] = {}
    for seed in range(200):
        a = Softmax().init_alpha((space.num_edges, len(space.ops)),
                                 torch.Generator().manual_seed(seed))
        g, _ = derive({"normal": a}, space)
        found.setdefault(bool(g.dead_cells()), seed)
        if len(found) == 2:
            return found[True], found[False]
    raise AssertionError("no dead and live initializations in 200 seeds")


@pytest.mark.slow  # a whole search or a CLI subprocess: the full lane
def test_a_search_stopped_for_a_dead_cell_carries_its_reason_into_the_report_and_optuna(
        ray_local, tmp_path):
    import optuna

    from raydnas.sweep import run_sweep

    dead_seed, live_seed = _dead_and_live_seeds("tiny201")
    cfg = {"space": "tiny201", "epochs": 3, "seed": 0,
           "data": {"dataset": "digits", "batch_size": 64}, "model": {"channels": 4},
           # no α step in 3 epochs: each seed's cell is its initialization's
           "schedule": {"name": "interval", "every": 100000},
           "stop": {"dead": True, "rules_min_epochs": 1},
           "measure": {"tune_epochs": 0}, "log": {"print_every": 0, "histograms": False},
           "sweep": {"seeds": [dead_seed, live_seed], "resources": {"cpu": 1}},
           "optuna": {"params": {"optim.w_lr": {"uniform": [0.02, 0.03]}}, "n_trials": 1,
                      "metric": "discrete_val_acc", "mode": "max", "seed": 0}}
    path = tmp_path / "stop.yaml"
    path.write_text(yaml.safe_dump(cfg))
    s = run_sweep(path, storage=str(tmp_path), name="stop", reduce=True, quiet=True)
    exp = tmp_path / "stop"
    finals = {}
    for f in exp.glob("*/final.json"):
        d = json.loads(f.read_text())
        finals[d["seed"]] = d["metrics"]
    dead, live = finals[dead_seed], finals[live_seed]
    assert dead["stopped_reason"] == "dead" and dead["epoch"] == 1
    assert dead["early_stop"].startswith("stop.dead:")
    assert "stopped_reason" not in live and live["epoch"] == 3
    from raydnas.reduce import reduce

    df = reduce(exp)
    row = df.iloc[0]
    assert row["n_stopped"] == 1 and row["stopped_reasons"] == "dead 1" and row["n"] == 2
    md = (exp / "report" / "report.md").read_text()
    assert "1/2 (dead 1)" in md
    # the Optuna point, one of whose seeds was stopped, is told PRUNED
    from raydnas.sweep.optuna_setup import open_storage

    storage = open_storage(str(exp / "optuna.journal"))
    (name,) = [st.study_name for st in optuna.get_all_study_summaries(storage)]
    trials = optuna.load_study(study_name=name, storage=storage).get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.PRUNED]
    assert s is not None
