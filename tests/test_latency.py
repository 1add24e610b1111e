"""Latency as a cost: each candidate op timed on the search's device (cached per device and op
shape), the resource regularizer's ``cost: latency`` and its hinge ``target`` (UNAS), the
derived cell's ``cell_latency_ms``; all on a real supernet and the embedded digits."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import tiny_cfg, tiny_state

from raydnas.errors import ConfigError
from raydnas.model.latency import cache_path, device_label, op_latency
from raydnas.search.metrics import cell_costs

LATENCY = {"regularizer": {"cost": "latency", "target": 0.2, "lam": 2.0, "form": "cell"}}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYDNAS_CACHE", str(tmp_path / "cache"))


def test_every_op_is_timed_once_per_shape_and_cached_per_device():
    st = tiny_state()
    table = op_latency(st.model, st.example_input)
    ops = st.space.ops
    for ct, a in st.model.alphas.items():
        assert table[ct].shape[1:] == a.shape and bool((table[ct] >= 0).all())
        none, skip, conv = (ops.index(o) for o in ("none", "skip_connect", "sep_conv_3x3"))
        assert bool((table[ct][..., none] == 0).all())  # never run: free
        assert bool((table[ct][..., conv] > table[ct][..., skip]).all())
    cached = json.loads(cache_path().read_text())
    label = device_label(torch.device("cpu"))
    assert cached and all(k.startswith(label + "|") for k in cached)
    # a second measurement reads the cache: a value written there comes back
    key = next(k for k in cached if "SepConv" in k or "sep" in k.lower())
    cached[key] = 123.0
    cache_path().write_text(json.dumps(cached))
    again = op_latency(st.model, st.example_input)
    assert any(bool((t == 123.0).any()) for t in again.values())


def test_the_latency_hinge_is_the_written_out_penalty_and_resumes_with_its_table():
    st = tiny_state({"regularizer": "resource"}, LATENCY)
    reg = st.parts["regularizer"]
    table = st.latency_table()  # measured on first use
    assert table is reg.costs
    probs = st.model.op_probs()
    alphas = st.model.arch_parameters()
    expected = sum((probs[c] * reg.costs[c].sum(0)).sum() for c in probs)
    want = 2.0 * torch.relu(expected - 0.2)
    got = reg.penalty(st)
    assert got.item() == pytest.approx(want.item()) and want.item() > 0
    for g, w in zip(torch.autograd.grad(got, alphas[:2], allow_unused=True),
                    torch.autograd.grad(want, alphas[:2], allow_unused=True)):
        torch.testing.assert_close(g, w)
    # below the target: no penalty
    reg.target = expected.item() + 1.0
    assert reg.penalty(st).item() == 0.0
    # the measured table travels with the checkpoint
    other = tiny_state({"regularizer": "resource"}, LATENCY)
    other.parts["regularizer"].load_state_dict(reg.state_dict())
    for c in reg.costs:
        torch.testing.assert_close(other.parts["regularizer"].costs[c], reg.costs[c])


def test_cell_latency_is_the_chosen_ops_latency_and_measure_latency_keeps_its_table():
    st = tiny_state(measure={"latency": True})
    table = st.latency_table()
    masks = {c: torch.zeros(a.shape) for c, a in st.model.alphas.items()}
    for c in masks:
        masks[c][:, st.space.ops.index("sep_conv_3x3")] = 1.0
    want = sum(float(table[c][..., st.space.ops.index("sep_conv_3x3")].sum()) for c in table)
    assert cell_costs(masks, table, None)["cell_latency_ms"] == pytest.approx(want)
    assert cell_costs(masks, None, None) == {}
    saved = st.state_dict()
    assert "latency" in saved
    other = tiny_state(measure={"latency": True})
    other.load_state_dict(saved)
    for c in table:
        torch.testing.assert_close(other.latency_table()[c], table[c])
    assert tiny_state().latency_table() is None  # off by default


@pytest.mark.parametrize("params,key,allowed", [
    ({"cost": "latency", "target": 0}, "regularizer.target", "a number > 0"),
    ({"cost": "time"}, "regularizer.cost", "params, flops, latency"),
])
def test_bad_latency_settings_are_one_line(params, key, allowed):
    with pytest.raises(ConfigError) as e:
        tiny_cfg({"regularizer": "resource"}, {"regularizer": params})
    msg = str(e.value)
    assert "\n" not in msg and key in msg and allowed in msg, msg


def test_fused_kernels_are_measured_op_by_op():
    """With speed.fuse the supernet runs ops as fused kernels; the latency capture still times
    every op (the same table as unfused) and leaves fusion on."""
    plain = op_latency(tiny_state().model, tiny_state().example_input)
    st = tiny_state(speed={"fuse": True})
    fused = op_latency(st.model, st.example_input)  # read from the cache: same keys
    for c in plain:
        torch.testing.assert_close(fused[c], plain[c])
    assert any(getattr(m, "fuse", False) is True for m in st.model.modules())


def test_a_resumed_search_does_not_measure_before_loading_its_table():
    st = tiny_state({"regularizer": "resource"}, LATENCY)
    assert not st.parts["regularizer"].costs  # set up without measuring
    assert st.latency_table()  # measured on first use
