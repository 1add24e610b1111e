"""The study config: expansion into methods × seeds and one-line errors for bad input (no Ray)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from raydnas.config.experiment import from_dict, load_config
from raydnas.errors import ConfigError
from raydnas.sweep import parse_study, validate_study
from raydnas.sweep.study import check_fits

ROOT = Path(__file__).resolve().parents[1]
BASE = {"space": "tiny", "epochs": 2, "data": {"dataset": "digits", "batch_size": 64},
        "model": {"channels": 4}}


def study_of(sweep=None, optuna=None, source="study.yaml"):
    raw = dict(BASE)
    if sweep is not None:
        raw["sweep"] = sweep
    if optuna is not None:
        raw["optuna"] = optuna
    return parse_study(from_dict(raw, source), storage="/tmp/raydnas-study-test")


def test_grid_and_methods_expand_to_distinct_methods_with_seeds():
    s = study_of({"grid": {"activation": ["softmax"], "gradient": ["first_order"]},
                  "methods": [{"name": "slow", "set": {"optim.a_lr": 1e-4}}],
                  "seeds": 3, "resources": {"cpu": 1, "gpu": 0.25}})
    assert [m.name for m in s.methods] == ["softmax/first_order/every/none", "slow"]
    assert s.seeds == [0, 1, 2] and s.total_trials() == 6
    assert s.resources == {"cpu": 1.0, "gpu": 0.25}
    cfg = s.trial_config(s.methods[1], 2)
    assert cfg.seed == 2 and cfg.optim.a_lr == 1e-4 and cfg.method()["activation"] == "softmax"
    assert s.trial_config(s.methods[0], 1).optim.a_lr == 3e-4


def test_optuna_params_apply_only_where_the_key_exists_and_points_count():
    s = study_of({"seeds": [3, 5]},
                 {"params": {"optim.a_lr": {"log_uniform": [1e-4, 1e-2]}}, "n_trials": 4})
    assert s.methods[0].params == ["optim.a_lr"]
    assert s.total_trials() == 8
    assert s.journal_path().endswith("optuna.journal")
    d = s.optuna.params[0].distribution()
    assert d.log and d.low == 1e-4 and d.high == 1e-2


@pytest.mark.parametrize("sweep,optuna,key", [
    ({"grid": {"activaton": ["softmax"]}}, None, "sweep.grid.activaton"),
    ({"grid": {"activation": ["nope"]}}, None, "sweep.grid.activation[0]"),
    ({"methods": [{"schedule": "sometimes"}]}, None, "sweep.methods[0].schedule"),
    ({"seeds": 0}, None, "sweep.seeds"),
    ({"seeds": [1, 1]}, None, "sweep.seeds"),
    ({"resources": {"gpu": 1.5}}, None, "sweep.resources.gpu"),
    ({"resources": {"tpu": 1}}, None, "sweep.resources.tpu"),
    ({"methods": [{"set": {"optim.nope": 1}}]}, None, "optim.nope"),
    ({"methods": [{}, {}]}, None, "sweep.methods"),
    ({}, {"params": {"optim.no_such_key": {"uniform": [0, 1]}}}, "optuna.params.optim.no_such_key"),
    ({}, {"params": {"regularizer.rho": {"log_uniform": [1e-4, 1]}}}, "optuna.params.regularizer.rho"),
    ({"grid": {"regularizer": ["none", "admm"]}}, {"params": {"regularizer.rhoo": {"uniform": [0, 1]}}},
     "optuna.params.regularizer.rhoo"),
    ({"grid": {"regularizer": ["admm"]}}, {"params": {"regularizer.rho": {"uniform": [-1, 1]}}},
     "optuna.params.regularizer.rho"),
    ({}, {"params": {"optim.a_lr": {"uniform": [0.1, 0.01]}}}, "optuna.params.optim.a_lr.uniform"),
    ({}, {"params": {"optim.a_lr": {"log_uniform": [0, 0.1]}}}, "optuna.params.optim.a_lr.log_uniform"),
    ({}, {"params": {"optim.a_lr": {"normal": [0, 1]}}}, "optuna.params.optim.a_lr.normal"),
    ({}, {"params": {"optim.a_lr": {"uniform": [1e-4, 1e-2]}}, "mode": "up"}, "optuna.mode"),
    ({}, {"params": {"optim.a_lr": {"uniform": [1e-4, 1e-2]}}, "n_trials": 0}, "optuna.n_trials"),
])
def test_bad_study_is_one_config_error_naming_the_key(sweep, optuna, key):
    with pytest.raises(ConfigError) as e:
        study_of(sweep, optuna)
    assert e.value.key == key, str(e.value)
    assert "\n" not in str(e.value) and str(e.value).startswith("study.yaml: ")


def test_resource_request_no_node_can_hold_is_refused():
    s = study_of({"resources": {"cpu": 1, "gpu": 1}})
    check_fits(s, [{"CPU": 0.0}, {"CPU": 8.0, "GPU": 1.0}])  # the GPU worker fits
    with pytest.raises(ConfigError) as e:
        check_fits(s, [{"CPU": 2.0}])
    assert e.value.key == "sweep.resources" and "cpu: 2" in str(e.value)


def test_quickstart_study_configs_hold_several_distinct_methods_and_seeds():
    """The quickstart studies compare something: distinct methods, each resolved to a valid
    config once, over several seeds (running them is tests/test_sweep.py's job)."""
    for name in ("quickstart_sweep", "quickstart_optuna"):
        cfg = load_config(ROOT / "configs" / f"{name}.yaml")
        s = validate_study(cfg)
        assert len(s.seeds) >= 2
        assert len({tuple(sorted(m.choices().items())) for m in s.methods}) == len(s.methods) >= 2
        assert all(m.epochs == cfg.epochs for m in s.methods)


@pytest.mark.before_ray  # names sweep, refused (or --help) before Ray starts
def test_cli_bad_study_exits_2_with_one_line_before_ray_starts(tmp_path):
    raw = dict(BASE, sweep={"grid": {"activation": ["softmax"]}, "seeds": 0})
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(raw))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for cmd in ("sweep", "validate"):
        r = subprocess.run([sys.executable, "-m", "raydnas", cmd, str(p),
                            "--set", "sweep.storage=" + str(tmp_path / "runs")],
                           capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 2, r.stderr
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert lines == [f"error: {p}: sweep.seeds = 0: an integer >= 1 or a list of distinct "
                         "seeds >= 0"], r.stderr
    assert not (tmp_path / "runs").exists()


def test_relative_space_path_is_pinned_for_trials_in_other_directories(tmp_path, monkeypatch):
    space = (ROOT / "search_spaces" / "tiny.yaml").read_text()
    (tmp_path / "my_space.yaml").write_text(space)
    raw = dict(BASE, space="my_space.yaml", sweep={"seeds": 1})
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    s = parse_study(load_config("exp.yaml"), storage=str(tmp_path / "runs"))
    monkeypatch.chdir(ROOT)  # a trial runs elsewhere
    assert s.trial_config(s.methods[0], 0).space == str(tmp_path / "my_space.yaml")


def test_maile2021_grid_keeps_base_hyperparameters_and_rho_applies_to_admm_only(tmp_path):
    cfg = load_config(ROOT / "configs" / "maile2021.yaml")
    raw = dict(cfg.raw, optuna={"params": {"regularizer.rho": {"log_uniform": [1e-3, 1.0]}},
                                "n_trials": 4})
    s = parse_study(from_dict(raw, "maile.yaml"), storage=str(tmp_path))
    assert len(s.methods) == 12 and s.seeds == [0, 1, 2]
    by = {m.name: m for m in s.methods}
    admm = by["crb/first_order/informed/admm"]
    assert s.trial_config(admm, 0).regularizer.params["every"] == 10  # the base's ADMM settings
    with_rho = sorted(m.name for m in s.methods if m.params)
    assert all(n.endswith(("/admm", "/prox")) for n in with_rho) and len(with_rho) == 8
    assert s.total_trials() == (8 * 4 + 4 * 1) * 3
    t = s.trial_config(admm, 2, {"regularizer.rho": 0.5})
    assert t.regularizer.params["rho"] == 0.5 and t.seed == 2


@pytest.mark.parametrize("block,key,allowed", [
    ({"protocol": "nb201_short"}, "evaluate.protocol", "a protocol for the darts macro"),
    ({"protocol": "darts_short"}, "cutout", "less than the 8-pixel images of digits"),
    ({"protocl": "darts"}, "evaluate.protocl", "unknown key"),
    ({"seeds": 0, "set": {"cutout": 0}}, "evaluate.seeds", "an integer >= 1"),
    ({"set": {"cutout": 0, "epochs": -2}}, "epochs", "an integer >= 1"),
])
def test_evaluate_block_is_checked_before_anything_starts(block, key, allowed):
    from raydnas.config.experiment import from_dict
    from raydnas.errors import ConfigError
    from raydnas.sweep import parse_study

    raw = {"space": "tiny", "epochs": 1, "sweep": {"seeds": 1}, "evaluate": block}
    with pytest.raises(ConfigError) as e:
        parse_study(from_dict(raw, "s.yaml"), storage="/tmp/x", name="n")
    assert key in str(e.value) and allowed in str(e.value), str(e.value)


def test_evaluate_stage_counts_its_trials():
    from raydnas.config.experiment import from_dict
    from raydnas.sweep import parse_study

    raw = {"space": "tiny", "epochs": 1, "sweep": {"seeds": 2, "grid": {"schedule": ["every",
                                                                                   "interval"]}},
           "evaluate": {"seeds": [0, 5], "set": {"cutout": 0}}}
    s = parse_study(from_dict(raw, "s.yaml"), storage="/tmp/x", name="n")
    assert s.evaluate.protocol.name == "darts_cpu" and s.evaluate.seeds == [0, 5]
    assert s.search_trials() == 4 and s.total_trials() == 4 * 3


def test_field_study_runs_every_preset_with_its_preset_settings(tmp_path):
    """configs/field_study.yaml's methods are the presets of configs/: the same axis choices
    with the same resolved hyperparameters and the same data, model, optim, measure, stop and
    select settings (only the seed differs), so its verdict is the presets' verdict."""
    import dataclasses

    from raydnas.config.experiment import create_axis
    from raydnas.sweep import parse_study

    study = parse_study(load_config(ROOT / "configs" / "field_study.yaml"),
                        storage=str(tmp_path), name="f")
    presets = sorted(p.stem for p in (ROOT / "configs").glob("*.yaml")
                     if not p.stem.startswith(("quickstart", "field_study", "decisive_study",
                                               "suite_", "data_aware_study",
                                               "unas_study")))
    assert sorted(m.name for m in study.methods) == presets
    for m in study.methods:
        got = study.trial_config(m, 0)
        want = load_config(ROOT / "configs" / f"{m.name}.yaml")
        for axis in ("activation", "gradient", "schedule", "regularizer"):
            a, b = (create_axis(axis, getattr(c, axis)) for c in (got, want))
            assert type(a) is type(b) and _plain(a) == _plain(b), (m.name, axis)
        for section in ("data", "model", "optim", "measure", "stop", "select"):
            assert dataclasses.asdict(getattr(got, section)) == \
                dataclasses.asdict(getattr(want, section)), (m.name, section)
        assert (got.space, got.epochs) == (want.space, want.epochs), m.name


def _plain(x):
    """An axis choice's resolved state as plain data (nested helper objects by their vars)."""
    if hasattr(x, "__dict__") and not isinstance(x, type):
        return (type(x).__name__, {k: _plain(v) for k, v in vars(x).items()})
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x
