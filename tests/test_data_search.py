"""The data axis (``data_search:``, data-aware DNAS, Shi et al., MLSP 2025): K input
configurations mixed by the method's activation of γ before the stem, γ stepped with α and
frozen by the ratio rule; checked against the mixture and its gradient written out here, on a
real supernet and the embedded digits; the chosen input travels to the retraining."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_cfg, tiny_state

from raydnas.errors import ConfigError
from raydnas.search.state import _arch_update

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [{"name": "full"}, {"name": "crop6", "crop": 6}, {"name": "small", "resize": 4}]


def _state(align="conv", activation=None, **ds):
    return tiny_state(activation, data_search={"configs": CONFIGS, "align": align, **ds},
                      measure={"tune_epochs": 0})


@pytest.mark.parametrize("align", ["conv", "pad"])
def test_the_mixture_and_its_gradient_are_the_written_out_ones(align):
    st = _state(align)
    mx = st.model.data_mixer
    with torch.no_grad():
        mx.gamma.copy_(torch.tensor([[0.3, -0.2, 0.5]]))
    x = st.example_input.repeat(4, 1, 1, 1) + 0.01 * torch.arange(4.0).view(4, 1, 1, 1)
    # written out: center crop 8 -> 6 is rows/cols 1..6; resize is bilinear with antialias
    ins = [x, x[..., 1:7, 1:7],
           F.interpolate(x, size=(4, 4), mode="bilinear", align_corners=False, antialias=True)]
    if align == "conv":  # valid convs to the smallest side (4): kernels 5, 3, 1
        assert [c.kernel_size[0] for c in mx.convs] == [5, 3, 1] and mx.side == 4
        ins = [F.conv2d(t, c.weight) for t, c in zip(ins, mx.convs)]
    else:  # centered zero padding to the largest side (8)
        assert mx.side == 8
        ins = [ins[0], F.pad(ins[1], (1, 1, 1, 1)), F.pad(ins[2], (2, 2, 2, 2))]
    g = mx.gamma
    want = sum(w * t for w, t in zip(torch.softmax(g[0], -1), ins))
    got = mx(x, st.model.activation, True)
    torch.testing.assert_close(got, want)
    r = torch.randn_like(want)
    (gg,) = torch.autograd.grad((got * r).sum(), [g])
    # d/dγ_j Σ_k softmax_k T_k = softmax_j (T_j − Σ_k softmax_k T_k)
    p = torch.softmax(g[0].detach(), -1)
    dots = torch.stack([(t.detach() * r).sum() for t in ins])
    torch.testing.assert_close(gg[0], p * (dots - (p * dots).sum()))
    # γ is an architecture parameter: the α optimizer steps it
    assert any(q is g for q in st.model.arch_parameters())
    assert not any(q is g for q in st.model.weight_parameters())


def test_gamma_freezes_at_the_ratio_and_is_never_stepped_again():
    st = _state(freeze_ratio=2.0)
    mx, act = st.model.data_mixer, st.model.activation
    with torch.no_grad():
        mx.gamma.copy_(torch.log(torch.tensor([[1.0, 1.9, 1.0]])))  # 1.9 < 2: not yet
    assert not mx.check_freeze(act)
    with torch.no_grad():
        mx.gamma.copy_(torch.log(torch.tensor([[1.0, 2.0, 1.0]])))  # 2.0 ≥ 2 × 1.0
    assert mx.check_freeze(act)
    before = mx.gamma.detach().clone()
    alpha0 = st.model.alphas["normal"].detach().clone()
    for p in st.model.arch_parameters():
        p.grad = torch.ones_like(p)
    _arch_update(st)
    torch.testing.assert_close(mx.gamma.detach(), before)  # frozen: not stepped
    assert not torch.equal(st.model.alphas["normal"].detach(), alpha0)  # α is
    assert mx.choice(act).name == "crop6"
    # γ and the freeze are in the checkpoint
    other = _state(freeze_ratio=2.0)
    other.load_state_dict(st.state_dict())
    assert bool(other.model.data_mixer.frozen)
    torch.testing.assert_close(other.model.data_mixer.gamma, mx.gamma)


def test_the_search_metrics_and_the_retraining_carry_the_choice():
    from raydnas.config.experiment import from_dict
    from raydnas.search.metrics import data_metrics
    from raydnas.sweep.stage import eval_configs, job_of
    from raydnas.sweep.study import parse_study

    st = _state()
    m = data_metrics(st.model)
    assert m["data_choice"] in {"full", "crop6", "small"} and not m["data_frozen"]
    assert sum(m[f"data_weight_{c['name']}"] for c in CONFIGS) == pytest.approx(1.0)
    raw = {"space": "tiny", "epochs": 1, "data": {"dataset": "digits", "batch_size": 64},
           "model": {"channels": 4}, "data_search": {"configs": CONFIGS},
           "measure": {"tune_epochs": 0},
           "sweep": {"seeds": 1}, "evaluate": {"protocol": "darts_cpu"}}
    study = parse_study(from_dict(raw, "d.yaml"), storage="/tmp/x", name="d")
    g = ("Genotype(normal=[('sep_conv_3x3', 0), ('skip_connect', 1), ('sep_conv_3x3', 0), "
         "('avg_pool_3x3', 2)], normal_concat=range(2, 4), reduce=[('sep_conv_3x3', 0), "
         "('skip_connect', 1), ('sep_conv_3x3', 0), ('avg_pool_3x3', 2)], "
         "reduce_concat=range(2, 4))")
    cfg = dict(study.methods[0].choices(), method=study.methods[0].name, seed=0, point=None)
    ev = eval_configs(study.evaluate, cfg, "t0", {"genotype": g, "data_choice": "small"})
    job = job_of(ev[0], study)
    assert job.meta["data_input"] == {"name": "small", "crop": None, "resize": 4,
                                      "grayscale": False}


@pytest.mark.parametrize("edit,key,allowed", [
    ({"configs": CONFIGS[:1]}, "data_search.configs", "at least 2"),
    ({"configs": CONFIGS + [{"name": "full"}]}, "data_search.configs[3].name", "once"),
    ({"configs": CONFIGS + [{"name": "big", "crop": 9}]}, "data_search.configs[3].crop",
     "at most the images' side (8)"),
    ({"configs": CONFIGS + [{"name": "r", "resize": 1}]}, "data_search.configs[3].resize",
     "an integer side >= 2"),
    ({"configs": CONFIGS, "freeze_ratio": 1.0}, "data_search.freeze_ratio", "a number > 1"),
    ({"configs": CONFIGS, "align": "zero"}, "data_search.align", "conv or pad"),
    ({"configs": CONFIGS, "size": 3}, "data_search.size", "unknown key"),
    ({"configs": CONFIGS + [{"name": "n", "normalize": {"mean": 0.5}}]},
     "data_search.configs[3].normalize", "{mean, std}"),
    ({"configs": CONFIGS + [{"name": "n", "normalize": {"mean": 0.5, "std": 0}}]},
     "data_search.configs[3].normalize", "std > 0"),
    ({"configs": CONFIGS + [{"name": "n", "normalize": {"mean": [0.1, 0.2], "std": [1, 2, 3]}}]},
     "data_search.configs[3].normalize", "lists of one length"),
    ({"configs": CONFIGS + [{"name": "n", "normalize": {"mean": float("nan"), "std": 1}}]},
     "data_search.configs[3].normalize", "a finite number"),
    ({"configs": CONFIGS + [{"name": "n", "normalize": {"mean": [0.1, 0.2, 0.3], "std": 1}}]},
     "data_search.configs[3].normalize", "one per channel (1)"),  # digits: 1 channel
    ({"configs": CONFIGS}, "measure.tune_epochs", "0 with data_search"),
])
def test_bad_data_search_is_one_line(edit, key, allowed):
    with pytest.raises(ConfigError) as e:
        tiny_cfg(data_search=edit)
    msg = str(e.value)
    assert "\n" not in msg and key in msg and allowed in msg, msg


def test_normalize_is_the_written_out_affine_map_and_checked_against_the_channels():
    from raydnas.model.data_mix import DataMixer, InputConfig, parse_data_search

    x = torch.rand(2, 3, 8, 8)
    c = InputConfig("n", crop=6, grayscale=True, normalize={"mean": [0.1, 0.2, 0.3],
                                                           "std": [2.0, 4.0, 0.5]})
    g = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:])[..., 1:7, 1:7]
    want = torch.cat([(g - m) / sd for m, sd in ((0.1, 2.0), (0.2, 4.0), (0.3, 0.5))], 1)
    torch.testing.assert_close(c.apply(x), want)
    one = InputConfig("n1", normalize={"mean": [0.5], "std": [0.25]})
    torch.testing.assert_close(one.apply(x), (x - 0.5) / 0.25)
    spec = parse_data_search({"configs": [{"name": "a"}, {"name": "b", "normalize": {
        "mean": [0.1, 0.2, 0.3], "std": 1.0}}]}, "f", 8)
    with pytest.raises(ConfigError) as e:  # 3 means for 1-channel images (an image folder's
        DataMixer(spec, 1, 8, tiny_state().model.activation, torch.Generator())  # seen late)
    msg = str(e.value)
    assert msg.startswith("f:") and "configs.b.normalize" in msg and "(1)" in msg, msg
    # a job's input: normalize as checked lists, and no key at all when unset (as before it
    # existed, so older evaluation checkpoints still match their job)
    from raydnas.model.data_mix import input_dict

    assert input_dict({"name": "a", "crop": 6}) == {"name": "a", "crop": 6, "resize": None,
                                                    "grayscale": False}
    assert input_dict({"name": "b", "normalize": {"mean": 0.5, "std": 2}})["normalize"] == {
        "mean": [0.5], "std": [2.0]}
    # what a search writes to its config.yaml reads back the same (and names no source file)
    from raydnas.config.experiment import from_dict

    cfg = tiny_cfg(data_search={"configs": CONFIGS + [
        {"name": "n", "normalize": {"mean": 0.5, "std": [2.0]}}]}, measure={"tune_epochs": 0})
    raw = cfg.to_dict()
    assert "source" not in raw["data_search"]
    assert from_dict(raw, "config.yaml").data_search == cfg.data_search


@pytest.mark.parametrize("method,params", [
    ({"activation": "crb"}, {}), ({"activation": "sigmoid"}, {}),
    ({"activation": "gumbel_hard"}, {"activation": {"estimator": "reinforce"}}),
])
def test_an_activation_that_cannot_mix_inputs_is_refused(method, params):
    with pytest.raises(ConfigError) as e:
        tiny_cfg(method, params, data_search={"configs": CONFIGS}, measure={"tune_epochs": 0})
    msg = str(e.value)
    assert "activation = " in msg and "data_search" in msg and "\n" not in msg, msg


def test_a_crop_larger_than_the_images_is_one_line_at_build_time_too():
    """The side of a dataset is not always known when the config is read; the supernet's
    mixer checks it again against the real images."""
    from raydnas.model.data_mix import DataMixer, parse_data_search

    spec = parse_data_search({"configs": [{"name": "a"}, {"name": "b", "crop": 12}]}, "f", None)
    with pytest.raises(ConfigError) as e:
        DataMixer(spec, 1, 8, tiny_state().model.activation, torch.Generator())
    assert "crop" in str(e.value) and "(8)" in str(e.value)


@pytest.mark.slow
def test_a_data_aware_search_is_retrained_on_its_chosen_input(tmp_path):
    cfg = {"space": "tiny", "epochs": 2, "seed": 0,
           "data": {"dataset": "digits", "batch_size": 64}, "model": {"channels": 4},
           "log": {"print_every": 0}, "optim": {"a_lr": 0.3}, "measure": {"tune_epochs": 0},
           "data_search": {"configs": CONFIGS, "freeze_ratio": 1.05}}
    p = tmp_path / "d.yaml"
    p.write_text(json.dumps(cfg))
    run = tmp_path / "run"
    for cmd in (["search", str(p), "--out", str(run)],
                ["evaluate", str(run), "--set", "epochs=1"]):
        r = subprocess.run([sys.executable, "-m", "raydnas", *cmd], capture_output=True,
                           text=True, timeout=300, cwd=ROOT)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    final = json.loads((run / "final.json").read_text())
    chosen = final["data_config"]
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert chosen["name"] == metrics[-1]["data_choice"]
    assert max(chosen["weights"].values()) == chosen["weights"][chosen["name"]]
    # genotype.txt: the cell still evaluates as DARTS's Genotype (the data line is a comment)
    from collections import namedtuple

    text = (run / "genotype.txt").read_text()
    darts = namedtuple("Genotype", "normal normal_concat reduce reduce_concat")
    assert eval(text, {"Genotype": darts, "range": range}).normal  # noqa: S307
    comment = text.splitlines()[-1]
    assert comment.startswith("# data_config: ")
    assert json.loads(comment.split(": ", 1)[1]) == {
        k: chosen[k] for k in ("name", "crop", "resize", "grayscale")}
    ev = json.loads(next(run.glob("evaluation/*/seed0/final.json")).read_text())
    assert ev["data_input"] == {k: chosen[k] for k in ("name", "crop", "resize", "grayscale")}


@pytest.mark.slow
def test_a_study_reports_each_groups_input_and_the_retrained_cost(ray_local, tmp_path):
    """Fixed against searched input through a real sweep with retraining: the report's Data
    axis section lists every seed's choice (as the searches reported it) beside the fixed
    group, eval_macs is the evaluations' own, and the accuracy-against-cost figure is drawn."""
    import pandas as pd
    import yaml

    from raydnas.sweep import run_sweep

    study = {"space": "tiny", "epochs": 1, "seed": 0,
             "data": {"dataset": "digits", "val_fraction": 0.5, "batch_size": 64},
             "model": {"channels": 4}, "optim": {"a_lr": 0.3}, "measure": {"tune_epochs": 0},
             "log": {"print_every": 0, "histograms": False},
             "sweep": {"seeds": 2, "resources": {"cpu": 1},
                       "methods": [{"name": "fixed"},
                                   {"name": "searched",
                                    "set": {"data_search": {"configs": CONFIGS}}}]},
             "evaluate": {"protocol": "darts_cpu", "seeds": 1, "set": {"epochs": 1}}}
    p = tmp_path / "d.yaml"
    p.write_text(yaml.safe_dump(study))
    s = run_sweep(str(p), storage=str(tmp_path), name="da", quiet=True)
    assert (s.done, s.failed) == (4, 0)
    exp = tmp_path / "da"
    choices, macs = {}, {"fixed": [], "searched": []}
    for d in exp.iterdir():
        if not (d / "result.json").exists():
            continue
        cfg = json.loads((d / "params.json").read_text())
        last = json.loads((d / "result.json").read_text().splitlines()[-1])
        if d.name.startswith("eval-"):
            macs[cfg["method"]].append(last["eval_macs"])
            if cfg["method"] == "searched":
                final = json.loads((d / "final.json").read_text())
                assert final["data_input"]["name"] == cfg["data_choice"]
        elif cfg["method"] == "searched":
            choices[cfg["seed"]] = last["data_choice"]
    assert len(choices) == 2 and all(len(v) == 2 and min(v) > 0 for v in macs.values())
    md = (exp / "report" / "report.md").read_text()
    section = md.split("## Data axis", 1)[1].split("\n## ", 1)[0]
    row = next(ln for ln in section.splitlines() if ln.startswith("| searched |"))
    assert sorted(row.split(" | ")[3].split(", ")) == sorted(choices.values())
    assert "| fixed | (as loaded) |" in section
    assert "![accuracy against cost](data_cost.png)" in section
    assert (exp / "report" / "data_cost.png").stat().st_size > 0
    df = pd.read_csv(exp / "report" / "report.csv").set_index("group")
    for g, v in macs.items():
        assert df.loc[g, "eval_macs_mean"] == pytest.approx(sum(v) / len(v))
