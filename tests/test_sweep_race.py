"""A raced study on a real local Ray (real searcher, real evaluation trials): a method made bad
on purpose (its space has only parameter-free ops) is out after the first round and gets no
further seed, the others race on; the report replays the race and opens with the decision, the
power table and the truth's two figures. Bad race blocks are one line before anything starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from raydnas.config.experiment import from_dict
from raydnas.errors import ConfigError
from raydnas.sweep import parse_study

ROOT = Path(__file__).resolve().parents[1]

STUDY = {
    "space": "tiny201", "epochs": 1, "seed": 0,
    "data": {"dataset": "digits", "val_fraction": 0.5, "batch_size": 64},
    "model": {"channels": 4}, "activation": "softmax", "gradient": "first_order",
    "schedule": "every", "regularizer": "none",
    "optim": {"a_lr": 3.0e-2}, "log": {"print_every": 0, "histograms": False},
    "sweep": {"methods": [{"name": "darts_v1"},
                          {"name": "milenas", "gradient": {"name": "mixed_level"}}],
              "resources": {"cpu": 1},
              "race": {"min_seeds": 3, "max_seeds": 4, "confidence": 0.95}},
    "evaluate": {"protocol": "nb201_short", "seeds": 1,
                 "set": {"epochs": 6, "channels": 8, "cells": 1}},
}


def _space(tmp_path: Path, name: str, ops: list[str]) -> str:
    """tiny201 with only ``ops``."""
    raw = yaml.safe_load((ROOT / "search_spaces" / "tiny201.yaml").read_text())
    raw.update(name=name, ops=ops)
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(raw))
    return str(p)


def _study(tmp_path: Path, **sweep) -> dict:
    """Two methods whose cells are all convs (retrained on digits: ~0.93, measured) and one
    whose cells are all parameter-free (~0.48): the bad one on purpose."""
    s = json.loads(json.dumps(STUDY))
    s["space"] = _space(tmp_path, "tiny201_conv", ["nor_conv_1x1", "nor_conv_3x3"])
    free = _space(tmp_path, "tiny201_free", ["skip_connect", "avg_pool_3x3"])
    s["sweep"]["methods"].append({"name": "free", "set": {"space": free}})
    s["sweep"].update(sweep)
    return s


@pytest.mark.slow
def test_a_bad_method_is_out_after_the_first_round_and_the_report_decides(ray_local, tmp_path):
    from raydnas.reduce import reduce
    from raydnas.sweep import run_sweep

    p = tmp_path / "race.yaml"
    p.write_text(yaml.safe_dump(_study(tmp_path)))
    s = run_sweep(str(p), storage=str(tmp_path), name="race", quiet=True)
    exp = tmp_path / "race"
    searched: dict[str, list[int]] = {}
    for d in exp.glob("*_seed*"):
        cfg = json.loads((d / "params.json").read_text())
        if cfg.get("kind") != "evaluate":
            searched.setdefault(cfg["method"], []).append(cfg["seed"])
    assert sorted(searched["free"]) == [0, 1, 2]  # min_seeds, then out
    assert sorted(searched["darts_v1"]) == sorted(searched["milenas"]) == [0, 1, 2, 3]
    assert s.failed == 0 and s.unfinished == 0
    df = reduce(exp)
    d = df.attrs["decision"]
    race = d["race"]
    assert race["out"].get("free") == 1 and race["searches"] == 11
    assert race["fixed_searches"] == 12 and race["rounds"][0]["eliminated"].startswith("free")
    assert d["sentence"] == race["sentence"]
    text = (exp / "report" / "report.md").read_text()
    assert text.index("## Decision") < text.index("## Verdict: the truth")
    assert d["sentence"] in text and "| round | seeds each |" in text
    assert "to tell it from the leader" in text
    for name in ("truth.png", "rank_intervals.png"):
        assert (exp / "report" / name).stat().st_size > 5000 and f"]({name})" in text
    from PIL import Image

    assert Image.open(exp / "report" / "truth.png").size[0] > 600
    row = df.set_index("group").loc["free"]
    assert row["p_best"] < 0.01


@pytest.mark.parametrize("race,extra,key,allowed", [
    ({"min_seeds": 1}, {}, "sweep.race.min_seeds", "an integer >= 2"),
    ({"min_seeds": 5, "max_seeds": 4}, {}, "sweep.race.min_seeds", "at most"),
    ({"confidence": 1.0}, {}, "sweep.race.confidence", "(0.5, 1)"),
    ({"metric": "test_acc"}, {}, "sweep.race.metric", "never selects on the test split"),
    ({"metric": "discrete_val_acc"}, {}, "sweep.race.metric", "one of eval_val_acc"),
    ({"top_k": 3}, {}, "sweep.race.top_k", "fewer than the study's 3"),
    ({"rounds": 2}, {}, "sweep.race.rounds", "unknown key"),
    ({"futility": 0.5}, {}, "sweep.race.futility", "a number >= 1"),
    ({"futility": 1000}, {}, "sweep.race.futility", "futility x max_seeds < 1000"),
    ({}, {"seeds": [0, 1, 2]}, "sweep.seeds", "absent with sweep.race"),
    ({}, {"no_evaluate": True}, "sweep.race", "an evaluate: block"),
    ({}, {"optuna": True}, "sweep.race", "absent with an optuna: block"),
    ({}, {"val_fraction": 0}, "sweep.race.metric", "val_fraction > 0"),
])
def test_a_bad_race_block_is_one_line_before_anything_starts(tmp_path, race, extra, key,
                                                             allowed):
    s = _study(tmp_path)
    s["sweep"]["race"] = {**s["sweep"]["race"], **race}
    if "seeds" in extra:
        s["sweep"]["seeds"] = extra["seeds"]
    if extra.get("no_evaluate"):
        del s["evaluate"]
    if extra.get("optuna"):
        s["optuna"] = {"params": {"optim.a_lr": {"log_uniform": [1.0e-3, 1.0e-1]}},
                       "n_trials": 2}
    if "val_fraction" in extra:
        s["evaluate"]["set"]["val_fraction"] = 0
    before = set(tmp_path.iterdir())
    with pytest.raises(ConfigError) as e:
        parse_study(from_dict(s, "race.yaml"), storage=str(tmp_path / "out"), name="x")
    msg = str(e.value)
    assert "\n" not in msg and "race.yaml" in msg and key in msg and allowed in msg, msg
    assert set(tmp_path.iterdir()) == before


def test_a_good_race_block_gives_the_rules_and_the_seeds(tmp_path):
    st = parse_study(from_dict(_study(tmp_path), "race.yaml"), storage=str(tmp_path), name="x")
    assert st.race.min_seeds == 3 and st.race.max_seeds == 4 and st.seeds == [0, 1, 2, 3]
    assert st.race.alpha == pytest.approx(0.05 / 2)  # bonferroni over the race's 2 rounds


@pytest.mark.slow
def test_a_driver_killed_mid_race_resumes_with_the_same_eliminations(tmp_path):
    """SIGKILL the driver once the second round has started; the rerun continues the race: the
    bad method gets no further seed, no (method, seed) is searched or evaluated twice."""
    import os
    import subprocess
    import sys

    from drivers import kill_driver_when

    p = tmp_path / "race.yaml"
    p.write_text(yaml.safe_dump(_study(tmp_path)))
    exp = tmp_path / "r"
    cmd = [sys.executable, "-m", "raydnas", "sweep", str(p), "--storage", str(tmp_path),
           "--name", "r", "--num-cpus", "2", "--quiet"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    kill_driver_when(cmd, tmp_path / "first.log",  # once round 2 began
                     lambda: exp.is_dir() and any(exp.glob("*_seed3_*")), env=env, poll=0.2)
    r = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    searched: dict[str, list[int]] = {}
    evaluated: list[tuple[str, int]] = []
    for d in exp.glob("*_seed*"):
        if not (d / "params.json").is_file():
            continue  # created by Tune, never started
        cfg = json.loads((d / "params.json").read_text())
        if cfg.get("kind") == "evaluate":
            evaluated.append((cfg["method"], cfg["seed"]))
        else:
            searched.setdefault(cfg["method"], []).append(cfg["seed"])
    assert sorted(searched["free"]) == [0, 1, 2]
    assert sorted(searched["darts_v1"]) == sorted(searched["milenas"]) == [0, 1, 2, 3]
    assert len(evaluated) == len(set(evaluated)) == 11
    assert "darts_v1" in r.stdout and "Race: 11 searches" in r.stdout
