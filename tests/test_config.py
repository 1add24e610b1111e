"""Config validation: every bad input is one line naming file, key, value, allowed; exit 2;
nothing started."""

import subprocess
import sys
import textwrap

import pytest

from raydnas.cli.main import main
from raydnas.config.experiment import apply_overrides, from_dict, load_config
from raydnas.errors import ConfigError


def _cfg(tmp_path, text):
    p = tmp_path / "exp.yaml"
    p.write_text(textwrap.dedent(text))
    return p


BAD = [
    ("space: tiny\nepochs: [1\n", "line", "valid YAML"),
    ("space: tiny\nepoch: 3\n", "epoch", "unknown key"),
    ("space: tiny\ndata: {batch_size: many}\n", "data.batch_size", "integer"),
    ("space: tiny\noptim: {w_lr: -0.1}\n", "optim.w_lr", "> 0"),
    ("space: tiny\ndata: {val_fraction: 1.0}\n", "data.val_fraction", "[0, 1)"),
    ("space: imaginary\n", "space", "built-in spaces"),
    ("space: tiny\ndata: {dataset: mnist3d}\n", "data.dataset", "digits"),
    ("space: tiny\ndata: {dataset: imagefolder, root: /no/such/dir}\n", "data.root", "existing"),
    ("space: tiny\ndata: {dataset: cifar10}\n", "data.root", "needs data.root"),
    ("space: tiny\nactivation: softmaxx\n", "activation.name", "softmax"),
    ("space: tiny\nregularizer: {name: none, rho: 1}\n", "regularizer.rho", "unknown hyperparameter"),
    ("space: tiny\ndata: {batch_size: 5000}\n", "data.batch_size", "at most"),
    ("space: tiny\nlog: {tensorboard: maybe}\n", "log.tensorboard", "true or false"),
    ("- just\n- a list\n", "<top level>", "mapping"),
]


@pytest.mark.parametrize("text,key,allowed", BAD)
def test_bad_config_one_line_exit_2_nothing_started(tmp_path, capsys, text, key, allowed):
    p = _cfg(tmp_path, text)
    out = tmp_path / "run"
    rc = main(["search", str(p), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1, err
    assert str(p) in err and key in err and allowed in err
    assert not out.exists()


def test_unknown_op_in_a_space_file_referenced_by_a_config(tmp_path, capsys):
    sp = tmp_path / "myspace.yaml"
    sp.write_text("ops: [none, sep_conv_3x3, conv_17x17]\n")
    p = _cfg(tmp_path, f"space: {sp}\n")
    assert main(["validate", str(p)]) == 2
    err = capsys.readouterr().err
    assert str(sp) in err and "ops[2]" in err and "conv_17x17" in err


def test_missing_config_file(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err


@pytest.mark.slow  # a whole search or a CLI subprocess: the full lane
def test_cli_error_has_no_traceback(tmp_path):
    p = _cfg(tmp_path, "space: tiny\noptim: {w_lr: -1}\n")
    r = subprocess.run([sys.executable, "-m", "raydnas", "search", str(p), "--out",
                        str(tmp_path / "o")], capture_output=True, text=True)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1
    assert "optim.w_lr" in r.stderr and not (tmp_path / "o").exists()


def test_overrides_reach_typed_config_and_are_validated(tmp_path):
    p = _cfg(tmp_path, "space: tiny\nregularizer: none\n")
    cfg = load_config(p, ["data.val_fraction=0.25", "optim.a_betas=[0.9, 0.99]", "seed=7",
                          "model.channels=4"])
    assert cfg.data.val_fraction == 0.25 and cfg.optim.a_betas == [0.9, 0.99]
    assert cfg.seed == 7 and cfg.model.channels == 4
    raw = apply_overrides({"regularizer": "none"}, ["regularizer.name=none"])
    assert raw["regularizer"] == {"name": "none"}
    with pytest.raises(ConfigError, match="optim.w_momentum"):
        load_config(p, ["optim.w_momentum=2"])


def test_to_dict_round_trips():
    cfg = from_dict({"space": "tiny", "epochs": 3, "optim": {"w_lr": 0.1}})
    again = from_dict(cfg.to_dict())
    assert again.to_dict() == cfg.to_dict()


def test_version_flag():
    import raydnas

    r = subprocess.run([sys.executable, "-m", "raydnas.cli", "--version"], capture_output=True,
                       text=True)
    assert r.returncode == 0 and r.stdout.strip() == f"raydnas {raydnas.__version__}"


@pytest.mark.parametrize("setup,args,key,allowed", [
    ("digits", ["--device", "cuda:99"], "--device", "a visible CUDA device"),
    ("empty_cifar", [], "data.root", "cifar10 could not be read"),
])
@pytest.mark.slow  # a whole search or a CLI subprocess: the full lane
def test_errors_before_the_first_epoch_leave_no_directory(tmp_path, setup, args, key, allowed):
    """A missing GPU or unreadable data: one line, exit 2, no banner, no run directory."""
    cfg = tmp_path / "exp.yaml"
    if setup == "digits":
        cfg.write_text("space: tiny201\nepochs: 1\ndata: {dataset: digits, batch_size: 32}\n")
    else:
        (tmp_path / "empty").mkdir()
        cfg.write_text(f"space: tiny\nepochs: 1\ndata: {{dataset: cifar10, root: "
                       f"{tmp_path / 'empty'}}}\n")
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "raydnas.cli", "search", str(cfg), "--out",
                        str(out), *args], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and key in err and allowed in err, err
    assert "Traceback" not in r.stderr and not out.exists()
    if setup == "empty_cifar":
        assert str(cfg) in err  # the config file the data settings came from


def test_set_values_are_blamed_on_the_set_and_several_follow_one_set(tmp_path, capsys):
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    qs = str(root / "configs" / "quickstart.yaml")
    assert main(["validate", qs, "--set", "epochs=-1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --set epochs=-1 (over ") and "an integer >= 1" in err
    assert main(["validate", qs, "--set", "epochs"]) == 2
    assert "e.g. --set epochs=20" in capsys.readouterr().err
    assert main(["validate", qs, "--set", "epochs=3", "data.batch_size=16"]) == 0
    assert "3 epochs" in capsys.readouterr().out
    assert main(["validate", str(root / "configs" / "maile2021.yaml")]) == 0
    assert "12 method(s) x 3 seed(s) = 36 search trials" in capsys.readouterr().out


def test_overrides_merge_as_data_and_optuna_params_keys_stay_literal():
    from raydnas.config.experiment import merge, set_key

    raw = {"regularizer": "admm", "optuna": {"params": {}}}
    out = merge(raw, {"regularizer.rho": 0.5, "optim.a_betas": [0.9, 0.99],
                      "optuna.params.regularizer.rho": {"log_uniform": [1e-3, 1.0]}})
    assert raw == {"regularizer": "admm", "optuna": {"params": {}}}  # a copy, not in place
    assert out["regularizer"] == {"name": "admm", "rho": 0.5}
    assert out["optim"] == {"a_betas": [0.9, 0.99]}  # a list stays a list (no YAML text)
    assert out["optuna"]["params"] == {"regularizer.rho": {"log_uniform": [1e-3, 1.0]}}
    set_key(out, "regularizer", "prox")  # a new choice drops the old one's hyperparameters
    assert out["regularizer"] == {"name": "prox"}
    with pytest.raises(ConfigError, match="optim is not a mapping"):
        set_key({"optim": 3}, "optim.w_lr", 0.1)


def test_set_of_an_optuna_param_reaches_the_study(tmp_path, capsys):
    p = tmp_path / "study.yaml"
    p.write_text(textwrap.dedent("""\
        space: tiny
        epochs: 1
        data: {dataset: digits, batch_size: 32}
        sweep: {grid: {regularizer: [none, admm]}, seeds: 1}
        optuna: {params: {optim.a_lr: {log_uniform: [1.0e-4, 1.0e-2]}}, n_trials: 2}
        """))
    assert main(["validate", str(p), "--set",
                 "optuna.params.regularizer.rho={log_uniform: [0.001, 1.0]}"]) == 0
    assert "x up to 2 Optuna points" in capsys.readouterr().out
    assert main(["validate", str(p), "--set",
                 "optuna.params.regularizer.rho={log_uniform: [0.001, -1.0]}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "optuna.params.regularizer.rho.log_uniform" in err


def test_an_empty_imagefolder_is_one_line(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    p = tmp_path / "c.yaml"
    p.write_text(f"space: tiny\ndata: {{dataset: imagefolder, root: {tmp_path / 'images'}}}\n")
    assert main(["search", str(p), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "data.root" in err and "one subfolder of images per class" in err
    assert not (tmp_path / "run").exists()
