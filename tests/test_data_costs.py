"""The data axis' cost and its discretization: each input configuration has its own cost table
(the cells run on its input alone, at its side, as a network retrained on it would), the
resource regularizer prices Σ_k a(γ)_k·cost_k, and the derived cell is measured, counted and
timed on the chosen input alone. Checked against the cells run directly on each input, against
the written-out penalty and its autograd gradient, and on a real supernet and the digits."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from helpers import tiny_state

from raydnas.data.datasets import Batches
from raydnas.model.costs import op_costs
from raydnas.search.measure import Measurer, bn_indices
from raydnas.search.metrics import cell_costs, derived_params

CONFIGS = [{"name": "full"}, {"name": "crop6", "crop": 6}, {"name": "small", "resize": 4}]


def _state(align="conv", **top):
    top["measure"] = {"tune_epochs": 0, **top.get("measure", {})}
    return tiny_state(data_search={"configs": CONFIGS, "align": align}, **top)


def _without_mixer(model, fn):
    """``fn()`` with the supernet's data axis taken out: the cells see the input given."""
    mixer = model.data_mixer
    model.data_mixer = None
    try:
        return fn()
    finally:
        model.data_mixer = mixer


def _measurer(st):
    """A measurer on the digits: BatchNorm from the first 200 images, accuracy on the next 200."""
    ds, idx = st.dataset, list(range(len(st.dataset)))
    return Measurer(ds, bn_indices(idx[:200], 64, 0), Batches(ds, idx[200:400], 64, 0, False),
                    32, st.device, 1, 0)


def _masks(model, op):
    masks = {c: torch.zeros(a.shape) for c, a in model.alphas.items()}
    for m in masks.values():
        m[:, model.space.ops.index(op)] = 1.0
    return masks


@pytest.mark.parametrize("align", ["conv", "pad"])
def test_one_input_alone_and_one_hot_weights_are_the_cells_on_that_input(align):
    st = _state(align)
    model, mx = st.model, st.model.data_mixer
    model.eval()
    x = st.dataset.data[0][:4]
    w = _masks(model, "sep_conv_3x3")
    for k, c in enumerate(mx.configs):
        got = model(x, op_weights=w, data=k)  # the input alone, unaligned
        want = _without_mixer(model, lambda: model(c.apply(x), op_weights=w))
        torch.testing.assert_close(got, want)
        hot = torch.zeros(len(mx.configs))
        hot[k] = 1.0  # one-hot weights: that input through its alignment, nothing else
        aligned = mx.inputs(x)[k]
        want = _without_mixer(model, lambda: model(aligned, op_weights=w))
        torch.testing.assert_close(model(x, op_weights=w, data=hot), want)
    with pytest.raises(ValueError, match="without a data axis"):
        tiny_state().model(x, data=0)


def test_each_input_has_its_own_cost_table_at_its_own_side():
    st = _state()
    model, mx = st.model, st.model.data_mixer
    x = st.example_input
    flops = model.op_costs("flops", x)
    params = model.op_costs("params", x)
    for ct, t in flops.items():
        assert t.shape == (len(mx.configs), *params[ct].shape[1:])
    for k, c in enumerate(mx.configs):
        ref = _without_mixer(model, lambda: op_costs(model, "flops", c.apply(x)))
        for ct in flops:
            torch.testing.assert_close(flops[ct][k], ref[ct])
            torch.testing.assert_close(params[ct][k], params[ct][0])  # weights: side-free
    # the first cell's convs at stride 1 cost side² per output pixel: 8×8 vs the 6×6 crop
    conv = model.space.ops.index("sep_conv_3x3")
    first = flops["normal"][:, 0, -1, conv]  # an edge between intermediate nodes, stride 1
    assert float(first[0] / first[1]) == pytest.approx((8 / 6) ** 2)
    assert float(first[0] / first[2]) == pytest.approx((8 / 4) ** 2)


@pytest.mark.parametrize("form", ["target", "cell", "snas"])
def test_the_resource_penalty_prices_the_input_mix_and_pulls_gamma_to_cheaper_inputs(form):
    reg = ({"lam": 0.01, "cost": "flops", "target": 1.0} if form == "target"
           else {"lam": 0.01, "cost": "flops", "form": form})
    st = _state(**{"regularizer": {"name": "resource", **reg}})
    model, mx, part = st.model, st.model.data_mixer, st.parts["regularizer"]
    with torch.no_grad():
        mx.gamma.copy_(torch.tensor([[0.2, -0.1, 0.4]]))
    tables = model.op_costs("flops", st.example_input)
    gamma = mx.gamma
    g = torch.softmax(gamma[0], -1)
    mixed = {c: sum(g[k] * t[k] for k in range(len(g))) for c, t in tables.items()}
    probs = model.op_probs()
    if form == "target":  # written out: λ·relu(Σ_k g_k Σ a·cost_k − T)
        want = 0.01 * torch.relu(sum((probs[c] * mixed[c].sum(0)).sum() for c in probs) - 1.0)
    elif form == "cell":  # λ·Σ_c log Σ a·cost(γ)
        want = 0.01 * sum(torch.log((probs[c] * mixed[c].sum(0)).sum()
                                    + 1e-6 * mixed[c].detach().sum(0).max(1).values.sum())
                          for c in probs)
    else:  # λ·Σ_c ratio_c · mean over cells of Σ_edges log Σ_k z·cost(γ)
        want = 0.01 * sum((probs[c].unsqueeze(0) * mixed[c]).sum(-1).clamp_min(1).log()
                          .sum(-1).mean() for c in probs)
    got = part.penalty(st)
    torch.testing.assert_close(got, want)
    (gg,) = torch.autograd.grad(got, [gamma])
    (gw,) = torch.autograd.grad(want, [gamma])
    torch.testing.assert_close(gg, gw)
    # a descent step on the penalty alone moves weight to the cheapest input (4×4)
    assert gg[0, 2] < 0 < gg[0, 0]


def test_the_derived_cell_is_measured_counted_and_costed_on_the_chosen_input(tmp_path,
                                                                             monkeypatch):
    monkeypatch.setenv("RAYDNAS_CACHE", str(tmp_path / "cache"))
    st = _state(measure={"latency": True})
    model, mx, act = st.model, st.model.data_mixer, st.model.activation
    meas = _measurer(st)
    masks = _masks(model, "sep_conv_3x3")
    with torch.no_grad():
        mx.gamma.copy_(torch.tensor([[0.0, 1.0, -1.0]]))  # chosen: crop6
    a = meas.supernet(model, masks)
    with torch.no_grad():
        mx.gamma.copy_(torch.tensor([[0.9, 1.0, -3.0]]))  # same choice, another mix
    b = meas.supernet(model, masks)
    assert mx.choice(act).name == "crop6"
    # the derived cell sees the chosen input alone: the rest of the mix does not matter ...
    assert a["discrete_val_acc"] == b["discrete_val_acc"]
    assert a["discrete_val_loss"] == b["discrete_val_loss"]
    # ... while the supernet is measured on the mix
    assert a["val_loss"] != b["val_loss"]
    # parameters: no alignment convs (a network retrained on the input has none)
    no_mixer = sum(p.numel() for p in model.weight_parameters()) - sum(
        p.numel() for p in mx.convs.parameters())
    unchosen = sum(sum(p.numel() for p in op.parameters())
                   for _, ct, e, k, op in model.mixed_ops() if masks[ct][e, k] == 0)
    assert derived_params(model, masks) == no_mixer - unchosen
    # FLOPs and latency of the chosen input's own table
    k = st.data_index()
    flops, lat = st.flops_table(), st.latency_table()
    m = cell_costs(masks, lat, flops, k)
    conv = model.space.ops.index("sep_conv_3x3")
    assert m["cell_flops"] == pytest.approx(sum(float(t[k][..., conv].sum())
                                                for t in flops.values()))
    assert m["cell_latency_ms"] == pytest.approx(sum(float(t[k][..., conv].sum())
                                                     for t in lat.values()))
    assert m["cell_flops"] < cell_costs(masks, None, flops, 0)["cell_flops"]  # 6×6 < 8×8
    # the latency table of every input is kept: a resumed search never re-measures
    other = _state(measure={"latency": True})
    other.load_state_dict(st.state_dict())
    for c in lat:
        torch.testing.assert_close(other._latency[c], lat[c])
    assert math.isfinite(m["cell_latency_ms"])


def test_cost_tables_count_the_ops_when_the_cells_run_fused():
    """Fused kernels never call the op modules the FLOPs hooks count: the table is taken
    unfused, the same as without fusion (it was all zeros before), and fusion is restored."""
    plain, fused = tiny_state(), tiny_state(speed={"fuse": True})
    a = plain.model.op_costs("flops", plain.example_input)
    b = fused.model.op_costs("flops", fused.example_input)
    for ct in a:
        assert float(a[ct].sum()) > 0
        torch.testing.assert_close(a[ct], b[ct])
    assert any(getattr(m, "fuse", False) is True for m in fused.model.modules())


def test_network_macs_is_the_hand_count_and_shrinks_with_the_chosen_input():
    from torch import nn

    from raydnas.model.costs import network_macs
    from raydnas.model.data_mix import with_input
    from raydnas.model.genotype import parse_genotype
    from raydnas.model.network import DiscreteNetwork
    from raydnas.model.spaces import load_space

    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AvgPool2d(2), nn.Flatten(),
                        nn.Linear(4 * 4 * 4, 10))
    # conv: 8·8·4 outputs × 3·3·3 inputs; pool: 4·4·4 outputs × 2·2; linear: 10 × 64
    assert network_macs(net, torch.zeros(1, 3, 8, 8)) == 8 * 8 * 4 * 27 + 64 * 4 + 10 * 64
    g = parse_genotype("Genotype(normal=[('sep_conv_3x3', 0), ('skip_connect', 1), "
                       "('sep_conv_3x3', 0), ('avg_pool_3x3', 2)], normal_concat=range(2, 4), "
                       "reduce=[('sep_conv_3x3', 0), ('skip_connect', 1), ('sep_conv_3x3', 0), "
                       "('avg_pool_3x3', 2)], reduce_concat=range(2, 4))")

    def build(data_input):
        torch.manual_seed(0)
        return with_input(DiscreteNetwork(load_space("tiny"), g, 10, 1, channels=4, cells=3),
                          data_input)

    x = torch.zeros(1, 1, 8, 8)
    full = network_macs(build(None), x)
    small = network_macs(build({"name": "small", "resize": 4}), x)
    assert 0 < small < full
    # against torch's own FLOP counter (2 FLOPs per multiply-add of convs and linear layers)
    # on a cell without pooling, whose multiply-adds torch does not count
    from torch.utils.flop_counter import FlopCounterMode

    g2 = parse_genotype(g.to_darts().replace("avg_pool_3x3", "sep_conv_3x3"))
    for data_input in (None, {"name": "small", "resize": 4}):
        torch.manual_seed(0)
        net2 = with_input(DiscreteNetwork(load_space("tiny"), g2, 10, 1, channels=4, cells=3),
                          data_input).eval()
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            net2(x)
        assert network_macs(net2, x) == counter.get_total_flops() // 2


def test_the_data_axis_section_and_figure_from_a_reduced_frame(tmp_path):
    """The report's Data axis section: a fixed-input group beside a searched one, each row's
    numbers from its columns; the figure from the per-trial truth."""
    import pandas as pd

    from raydnas.reduce.data_axis import figure, section_lines

    df = pd.DataFrame([
        {"group": "fixed", "data_choice": None, "data_choice_share": None,
         "data_choices": None, "test_acc_mean": 0.97, "eval_params_mean": 3680.0,
         "eval_macs_mean": 63872.0, "arch_params_mean": 14302.8, "cell_flops_mean": 34112.0},
        {"group": "searched", "data_choice": "small", "data_choice_share": 2 / 3,
         "data_choices": ["small", "full", "small"], "test_acc_mean": 0.95,
         "eval_params_mean": 3100.0, "eval_macs_mean": 45290.0, "arch_params_mean": 13742.8,
         "cell_flops_mean": 22521.6}])
    lines = section_lines(df, {"data_cost": "data_cost.png"})
    text = "\n".join(lines)
    assert lines[0] == "## Data axis"
    assert "| fixed | (as loaded) | — | — | 0.9700 | 3,680 | 63,872 | 14,303 | 34,112 |" in text
    assert "| searched | small | 67% | small, full, small | 0.9500 | 3,100 | 45,290 |" in text
    assert "![accuracy against cost](data_cost.png)" in text
    assert section_lines(df.assign(data_choice=None)) == []  # no group searched its input

    class T:  # a search trial as the report's members hold it: its id is all the figure reads
        def __init__(self, tid):
            self.trial_id = tid

    df.attrs["truth"] = {"per_trial": {"a": {"test_acc": 0.97, "eval_macs": 6e4},
                                       "b": {"test_acc": 0.95, "eval_macs": 4e4},
                                       "c": {"test_acc": 0.94, "eval_macs": 5e4}}}
    path = tmp_path / "data_cost.png"
    assert figure(df, {"fixed": [T("a")], "searched": [T("b"), T("c")]}, path)
    assert path.stat().st_size > 0
    assert not figure(df.assign(data_choice=None), {}, tmp_path / "none.png")


def test_a_supernet_measured_without_data_weights_mixes_by_a_gamma_not_a_fresh_draw():
    """DARTS-PT's scores measure the supernet under op weights alone: with a data axis and a
    sampling activation the inputs are mixed by a(γ), so the same call gives the same number."""
    st = _state(activation={"name": "gumbel"})
    model, mx = st.model, st.model.data_mixer
    meas = _measurer(st)
    w = _masks(model, "sep_conv_3x3")
    with torch.no_grad():
        mx.gamma.copy_(torch.tensor([[0.3, -0.2, 0.5]]))
    a = meas.measure(copy.deepcopy(model), w)
    b = meas.measure(copy.deepcopy(model), w)
    c = meas.measure(copy.deepcopy(model), w, data=mx.probs(model.activation).detach())
    assert a == b == c
