"""Stopped-and-resumed searches continue exactly with every axis's state; MiLeNAS early stop;
every preset in configs/ loads and runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import FixedVal, batches, tiny_cfg

from raydnas.config.experiment import apply_overrides, from_dict, load_config, read_yaml
from raydnas.search.run import SearchState, run_search, train_step

ROOT = Path(__file__).resolve().parent.parent
PRESETS = ["darts_v1", "darts_v2", "idarts", "milenas", "snas", "gdas", "darts_prime", "maile2021",
           "beta_darts", "drnas", "fairdarts", "sdarts_rs", "sdarts_adv", "darts_minus",
           "darts_es", "pc_darts", "darts_pt"]

STATEFUL = {
    "crb/mixed/informed/admm": (
        {"activation": "crb", "gradient": "mixed_level", "schedule": "informed",
         "regularizer": "admm"},
        {"schedule": {"threshold": 50.0, "every": 2}, "regularizer": {"every": 3}}),
    "gumbel_hard/implicit/interval/prox": (
        {"activation": "gumbel_hard", "gradient": "implicit", "schedule": "interval",
         "regularizer": "prox"},
        {"schedule": {"every": 2}}),
}


def _cfg(method, params, **top):
    return tiny_cfg(method, params, data={"dataset": "digits", "val_fraction": 0.5,
                                          "batch_size": 64}, **top)


def _quiet(_):
    pass


@pytest.mark.slow  # a whole search or a CLI subprocess: the full lane
@pytest.mark.parametrize("name", list(STATEFUL))
def test_stop_and_resume_continues_exactly(name, tmp_path):
    torch.set_num_threads(1)
    method, params = STATEFUL[name]
    cfg = _cfg(method, params)
    full = run_search(cfg, tmp_path / "full", device="cpu", log=_quiet)
    part = run_search(cfg, tmp_path / "part", device="cpu", log=_quiet, stop_after_epochs=1)
    assert part["epoch"] == 1
    again = run_search(cfg, tmp_path / "part", device="cpu", log=_quiet)
    assert again["epoch"] == 2
    for k in ("train_loss", "val_loss", "val_acc", "discrete_val_acc", "alpha_steps", "genotype"):
        assert again[k] == full[k], k
    fa = json.loads((tmp_path / "full" / "final.json").read_text())
    fb = json.loads((tmp_path / "part" / "final.json").read_text())
    assert fa["op_weights"] == fb["op_weights"]
    sa = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)["state"]["axes"]
    sb = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)["state"]["axes"]
    assert repr(sa) == repr(sb)  # every axis's state, tensors included


@pytest.mark.slow  # a whole search or a CLI subprocess: the full lane
def test_milenas_size_bookkeeping_and_early_stop(tmp_path):
    torch.set_num_threads(1)
    every_count = [[n, r] for n in range(5) for r in range(5)]
    cfg = _cfg({"gradient": "mixed_level"}, {"gradient": {"early_stop_at": every_count}},
               epochs=3)
    m = run_search(cfg, tmp_path, device="cpu", log=_quiet)
    assert m["epoch"] == 1 and "early_stop_at" in m["early_stop"]
    key = f"{m['conv_ops_normal']},{m['conv_ops_reduce']}"
    assert m["size_best"][key] == {"val_acc": m["val_acc"], "epoch": 1, "genotype": m["genotype"]}
    final = json.loads((tmp_path / "final.json").read_text())
    assert final["early_stop"] == m["early_stop"] and final["complete"]
    assert run_search(cfg, tmp_path, device="cpu", log=_quiet)["epoch"] == 1  # stays stopped


def test_size_book_keeps_the_best_per_count():
    from raydnas.axes.bookkeeping import ModelSizeBook
    from raydnas.model.genotype import Genotype

    g = lambda ops: Genotype({"normal": (((ops[0], 0),),), "reduce": (((ops[1], 1),),)}, 2,  # noqa
                             "concat", "darts")
    book = ModelSizeBook(early_stop_at=[6, 0])
    book.update(1, 0.5, g(["sep_conv_3x3", "skip_connect"]))
    book.update(2, 0.7, g(["dil_conv_3x3", "max_pool_3x3"]))
    m = book.update(3, 0.6, g(["sep_conv_5x5", "avg_pool_3x3"]))
    assert m["size_best"]["1,0"]["epoch"] == 2 and m["size_best"]["1,0"]["val_acc"] == 0.7
    assert "early_stop" not in m and (m["conv_ops_normal"], m["conv_ops_reduce"]) == (1, 0)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_loads_cites_its_source_and_runs_two_steps(name):
    torch.set_num_threads(1)
    path = ROOT / "configs" / f"{name}.yaml"
    text = path.read_text()
    assert text.startswith("#") and ("arXiv" in text or "ICLR" in text or "CVPR" in text)
    cfg = load_config(path)
    assert cfg.space == "tiny" and cfg.data.dataset == "digits"
    raw = read_yaml(path)
    channels = 2 * raw.get("model", {}).get("partial_channels", 1) if "model" in raw else 4
    raw = apply_overrides(raw, [f"model.channels={max(4, channels)}", "data.batch_size=8",
                                "log.tensorboard=false"])
    st = SearchState(from_dict(raw, str(path)), torch.device("cpu"))
    st.activation.start_epoch(st)
    train, val = batches(st)
    before = {c: a.detach().clone() for c, a in st.model.alphas.items()}
    for _ in range(2):
        train_step(st, train, FixedVal(val))  # raises NonFiniteLoss on a NaN loss
    while st.alpha_steps == 0 and st.step < 300:  # interval/informed schedules step later
        train_step(st, train, FixedVal(val))
        if st.step % 20 == 0:  # an epoch every 20 steps: warm-up epochs end
            st.epoch += 1
            for part in st.parts.values():
                part.start_epoch(st)
    assert st.alpha_steps >= 1, f"no α step in {st.step} weight steps"
    assert any(not torch.equal(before[c], a.detach()) for c, a in st.model.alphas.items())
    # the epoch's measurement runs on a copy of the stepped supernet (SNAS's single-level step
    # leaves its sample's graph on the model: the copy must still work)
    from raydnas.data.datasets import Batches
    from raydnas.model.genotype import derive
    from raydnas.search.measure import Measurer, bn_indices

    ds = st.dataset
    meas = Measurer(ds, bn_indices(list(range(64)), 32, 0),
                    Batches(ds, list(range(64, 96)), 16, 0, False), 16, torch.device("cpu"), 2, 0)
    _, masks = derive(st.model.op_probs(), st.space)
    acc = meas.supernet(st.model, masks)
    assert 0 <= acc["val_acc"] <= 1 and 0 <= acc["discrete_val_acc"] <= 1
    if name == "maile2021":
        assert cfg.sweep == {"grid": {"activation": ["softmax", "crb"],
                                      "schedule": ["every", "informed"],
                                      "regularizer": ["none", "prox", "admm"]}, "seeds": 3}
    if name == "darts_prime":
        assert cfg.data.val_fraction == pytest.approx(1 / 11)
