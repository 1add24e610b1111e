"""What a new user meets in the first hour: each rough edge once reported, now one clear line or
the expected behaviour (no Ray is started here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from raydnas import load_config, run_search
from raydnas.cli.common import plural, split_set_values
from raydnas.cli.main import main
from raydnas.errors import ConfigError
from raydnas.model.genotype import parse_genotype

ROOT = Path(__file__).resolve().parent.parent
QUICK = ROOT / "configs" / "quickstart.yaml"


def test_set_before_the_config_path_leaves_the_path_positional(capsys):
    assert main(["validate", "--set", "epochs=2", "seed=3", str(QUICK)]) == 0
    assert "2 epochs" in capsys.readouterr().out
    assert split_set_values(["--set", "a=1", "b=2", "x.yaml", "--set", "c=3"]) == \
        ["--set", "a=1", "--set", "b=2", "x.yaml", "--set", "c=3"]


def test_one_epoch_is_singular(capsys):
    assert main(["validate", str(QUICK), "--set", "epochs=1"]) == 0
    assert "1 epoch," in capsys.readouterr().out
    assert plural(1, "group") == "1 group" and plural(3, "group") == "3 groups"


@pytest.mark.before_ray  # names sweep, refused (or --help) before Ray starts
def test_help_imports_no_torch():
    code = ("import sys\nfrom raydnas.cli.main import main\n"
            "for argv in (['--help'], ['search', '--help'], ['sweep', '--help'], "
            "['evaluate', '--help'], ['reduce', '--help']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stderr.strip().splitlines()[-1] == "NO-TORCH", r.stderr


def test_help_texts_match_the_code(capsys):
    from raydnas.model.cells import REFERENCE_NAMES

    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"{len(REFERENCE_NAMES)} reference cells" in text
    for name in REFERENCE_NAMES:
        assert name in text, name
    with pytest.raises(SystemExit):
        main(["reduce", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "parameter-free" in text and "skip_connect or none" not in text


def test_hyperparameter_of_a_choice_without_any(tmp_path):
    with pytest.raises(ConfigError, match="it takes no hyperparameters") as e:
        load_config(QUICK, ["regularizer.rho=1"])
    assert "allowed: none" not in str(e.value)


def test_yaml_syntax_error_names_line_and_column(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("space: tiny\nepochs: 2\ndata: a: b\n")
    with pytest.raises(ConfigError) as e:
        load_config(bad)
    msg = str(e.value)
    assert msg.startswith(f"{bad}: not valid YAML at line 3, column") and "\n" not in msg


def test_unknown_op_in_a_genotype_is_named_first():
    from raydnas.evaluation import plan

    g = "|nor_conv_3x3~0|+|foo_op~0|none~1|+|none~0|none~1|none~2|"
    with pytest.raises(ConfigError, match=r"genotype op = 'foo_op': not an op of space 'nb201'"):
        plan(None, genotype=g, space="nb201", protocol="nb201_short")


@pytest.mark.slow  # a whole search or a CLI subprocess: the full lane
def test_python_api_takes_a_path_and_a_mapping_and_revalidates(tmp_path):
    cfg = load_config(QUICK, {"epochs": 1, "log.tensorboard": False, "log.print_every": 0})
    assert cfg.epochs == 1
    with pytest.raises(ConfigError, match=r"overrides\['epochs'\] = 0 .*epochs = 0"):
        load_config(QUICK, {"epochs": 0})
    cfg.epochs = "ten"
    with pytest.raises(ConfigError, match="epochs = 'ten': an integer >= 1"):
        run_search(cfg, tmp_path / "bad", device="cpu")
    assert not (tmp_path / "bad").exists()
    small = tmp_path / "one.yaml"
    small.write_text(QUICK.read_text() + "\nthreads: 1\n")
    small.write_text(small.read_text().replace("epochs: 10", "epochs: 1")
                     .replace("print_every: 11", "print_every: 0"))
    m = run_search(str(small), tmp_path / "run", device="cpu", log=lambda s: None)
    assert m["epoch"] == 1


@pytest.mark.before_ray  # names sweep, refused (or --help) before Ray starts
def test_sweep_of_a_config_without_a_study_block_is_refused_before_ray(tmp_path):
    r = subprocess.run([sys.executable, "-m", "raydnas", "sweep", str(QUICK), "--storage",
                        str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "sweep = None: a sweep: block" in r.stderr, r.stderr
    assert "Started a local Ray" not in r.stdout + r.stderr and not list(tmp_path.iterdir())


def test_live_edges_leave_out_ops_cut_off_from_the_inputs():
    g = parse_genotype("|none~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|nor_conv_3x3~2|")
    assert g.live_edges("normal") == {(3, 0)}
    g = parse_genotype("|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|none~1|none~2|")
    assert g.live_edges("normal") == {(3, 0)}  # node 2 is fed but reaches no output
    d = parse_genotype("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
                       "('skip_connect', 2), ('none', 0)], normal_concat=range(2, 4), "
                       "reduce=[('none', 0), ('none', 1), ('sep_conv_3x3', 2), ('none', 1)], "
                       "reduce_concat=range(2, 4))")
    assert d.live_edges("normal") == {(2, 0), (2, 1), (3, 2)}
    assert d.live_edges("reduce") == set()


# -- threads are part of a run -------------------------------------------------------------
def _cfg(**over):
    return load_config(QUICK, {"epochs": 2, "log.print_every": 0, "model.channels": 4, **over})


def test_default_threads_are_a_sweep_trials():
    assert _cfg().default_threads() == 1
    assert _cfg(**{"sweep.resources.cpu": 2}).default_threads() == 2
    assert _cfg(**{"sweep.resources.cpu": 0.5}).default_threads() == 1
    assert _cfg(threads=3).resolved_threads() == 3
    with pytest.raises(ConfigError, match="threads = 0: an integer >= 1"):
        _cfg(threads=0)


@pytest.mark.slow  # a whole search or a CLI subprocess: the full lane
def test_threads_recorded_in_config_final_and_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    run_search(_cfg(), tmp_path, device="cpu", log=lambda s: None)
    assert torch.get_num_threads() == 1
    assert load_config(tmp_path / "config.yaml").threads == 1
    assert json.loads((tmp_path / "final.json").read_text())["threads"] == 1
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    start = [plugin_data_pb2.HParamsPluginData.FromString(v) for v in content.values()]
    hp = [s.session_start_info.hparams for s in start if s.HasField("session_start_info")]
    assert hp and hp[0]["threads"].number_value == 1
    assert hp[0]["activation"].string_value == "softmax"


@pytest.mark.slow  # a whole search or a CLI subprocess: the full lane
def test_resume_keeps_the_recorded_threads_or_says_it_is_not_exact(tmp_path):
    lines: list[str] = []
    run_search(_cfg(), tmp_path / "a", device="cpu", log=lambda s: None, stop_after_epochs=1,
               threads=2)
    run_search(_cfg(), tmp_path / "a", device="cpu", log=lines.append)  # keeps 2
    assert torch.get_num_threads() == 2 and not any("bit-exact" in s for s in lines)
    run_search(_cfg(), tmp_path / "b", device="cpu", log=lambda s: None, stop_after_epochs=1,
               threads=2)
    run_search(_cfg(), tmp_path / "b", device="cpu", log=lines.append, threads=1)
    said = [s for s in lines if "bit-exact" in s]
    assert len(said) == 1 and "at 1 thread(s), its checkpoint was made at 2" in said[0]
    torch.set_num_threads(1)
