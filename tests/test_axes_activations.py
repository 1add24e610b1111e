"""Activations: CRB pruning is permanent and skips compute; GDAS runs one op per edge."""

from __future__ import annotations

import io
from collections import Counter
from types import SimpleNamespace

import pytest
import torch
from helpers import FixedVal, batches, tiny_state

from raydnas.axes.activation import CRB, Sigmoid
from raydnas.axes.checks import AxisParamError
from raydnas.axes.gumbel import Gumbel
from raydnas.axes.gumbel_hard import GumbelHard
from raydnas.model.mixed import Cell
from raydnas.search.run import train_step


def _at(epoch: int, epochs: int) -> SimpleNamespace:
    """The part of a SearchContext that start_epoch reads."""
    return SimpleNamespace(epoch=epoch, epochs=epochs)

def _roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def _count_calls(model):
    """Forward hooks on every op of every mixed op: calls[(cell, edge, op)]."""
    calls, hooks = Counter(), []
    for ci, cell in enumerate(model.cells):
        if not isinstance(cell, Cell):
            continue
        for e, edge in enumerate(cell.edges):
            for k, op in enumerate(edge._ops):
                hooks.append(op.register_forward_hook(
                    lambda m, i, o, key=(ci, e, k): calls.update([key])))
    return calls, hooks


def test_crb_space_init_and_node_norm():
    st = tiny_state({"activation": "crb"})
    assert "none" not in st.space.ops and len(st.space.ops) == 3
    a = st.model.alphas["normal"]
    assert torch.allclose(a, torch.full_like(a, 1 / 3), atol=1e-3) and not torch.equal(a, a[0, 0].expand_as(a))
    assert all(c.node_bn is not None for c in st.model.cells if isinstance(c, Cell))
    assert torch.equal(CRB().probs(torch.tensor([-0.5, 0.3, 1.7])), torch.tensor([0.0, 0.3, 1.0]))


def test_crb_pruned_op_never_comes_back_and_is_never_called():
    torch.set_num_threads(1)
    st = tiny_state({"activation": "crb"})
    model, act = st.model, st.activation
    train, val = batches(st)
    e, k = 2, 1  # edge 2 of the normal cells, op 1
    with torch.no_grad():
        model.alphas["normal"][e, k] = -0.01
    act.after_arch_step(st)
    assert not act.masks["normal"][e, k] and model.alphas["normal"][e, k] == 0
    normal_cells = [i for i, c in enumerate(model.cells) if isinstance(c, Cell) and not c.reduction]
    calls, hooks = _count_calls(model)
    try:
        for _ in range(3):
            # a gradient that pushes the pruned α back up: Adam will move it above 0
            model.alphas["normal"].grad = None
            train_step(st, train, FixedVal(val))
            model.alphas["normal"].grad = torch.zeros_like(model.alphas["normal"])
            model.alphas["normal"].grad[e, k] = -1.0
            st.a_optimizer.step()
            act.after_arch_step(st)
            assert model.alphas["normal"][e, k] == 0 and not act.masks["normal"][e, k]
    finally:
        for h in hooks:
            h.remove()
    for ci in normal_cells:
        assert calls[(ci, e, k)] == 0  # never executed
        assert calls[(ci, e, 0)] > 0 and calls[(ci, e, 2)] > 0  # the hooks do count
    assert act.masks["normal"].sum() == act.masks["normal"].numel() - 1
    # the mask survives a checkpoint (weights_only) and keeps the op off
    fresh = CRB()
    fresh.load_state_dict(_roundtrip(act.state_dict()))
    assert torch.equal(fresh.masks["normal"], act.masks["normal"])
    assert k not in fresh.active_ops("normal", model.alphas["normal"], frozenset())[e]


def test_crb_prunes_every_nonpositive_alpha_after_a_step():
    st = tiny_state({"activation": "crb"})
    with torch.no_grad():
        st.model.alphas["reduce"][0] = torch.tensor([0.0, -1.0, 0.2])
    st.activation.after_weight_step(st)
    assert st.activation.masks["reduce"][0].tolist() == [False, False, True]


def test_gumbel_hard_runs_exactly_one_op_per_edge():
    torch.set_num_threads(1)
    st = tiny_state({"activation": "gumbel_hard"})
    model, act = st.model, st.activation
    act.start_epoch(_at(0, 2))
    (x, y), _ = batches(st)
    zero = model.zero_ops
    for _ in range(3):
        calls, hooks = _count_calls(model)
        try:
            with act.frozen_noise():
                w = model.op_weights()
                loss = torch.nn.functional.cross_entropy(model(x), y)
        finally:
            for h in hooks:
                h.remove()
        for ct, wt in w.items():
            assert torch.allclose(wt.detach(), torch.nn.functional.one_hot(
                wt.detach().argmax(1), wt.shape[1]).to(wt.dtype))
        for ci, cell in enumerate(model.cells):
            if not isinstance(cell, Cell):
                continue
            chosen = w["reduce" if cell.reduction else "normal"].detach().argmax(1).tolist()
            for e, edge in enumerate(cell.edges):
                ran = [k for k in range(len(edge._ops)) if calls[(ci, e, k)]]
                assert all(calls[(ci, e, k)] == 1 for k in ran)
                assert ran == ([] if chosen[e] in zero else [chosen[e]])
        grads = torch.autograd.grad(loss, model.arch_parameters())
        assert all(g.abs().sum() > 0 for g in grads)  # straight-through gradient reaches α


def test_gumbel_soft_sample_frozen_noise_and_eval():
    torch.manual_seed(0)
    act = Gumbel()
    act.start_epoch(_at(0, 5))
    a = torch.nn.Parameter(torch.randn(5, 4))
    w1, w2 = act.weights(a, True), act.weights(a, True)
    assert torch.allclose(w1.sum(1), torch.ones(5)) and not torch.allclose(w1, w2)
    with act.frozen_noise():
        assert torch.equal(act.weights(a, True), act.weights(a, True))
    assert torch.equal(act.weights(a, False), torch.softmax(a, -1))


@pytest.mark.parametrize("cls,tau0,tau_min,last", [(Gumbel, 1.0, 0.03, 4), (GumbelHard, 10.0, 0.1, 4)])
def test_temperature_anneals_over_the_searchs_epochs(cls, tau0, tau_min, last):
    act = cls()
    taus = []
    for e in range(5):
        act.start_epoch(_at(e, 5))
        taus.append(act.tau)
    assert taus[0] == pytest.approx(tau0)
    assert all(b < a for a, b in zip(taus, taus[1:]))
    diffs = [a - b for a, b in zip(taus, taus[1:])]
    assert max(diffs) == pytest.approx(min(diffs))  # linear
    if cls is GumbelHard:  # GDAS reaches τ_min at the last epoch
        assert taus[last] == pytest.approx(tau_min)
    else:  # SNAS: τ_e = τ0 − (τ0 − τ_min)·e/E
        assert taus[last] == pytest.approx(tau0 - (tau0 - tau_min) * 4 / 5)
    act2 = cls(anneal_epochs=100)
    act2.start_epoch(_at(4, 5))
    assert act2.tau > taus[4]  # a longer anneal is slower: the epoch count is not hard-coded
    act3 = cls()
    act3.load_state_dict(_roundtrip(act.state_dict()))
    assert act3.tau == act.tau


def test_sigmoid_gates_are_independent():
    a = torch.tensor([[0.0, 2.0, -2.0]])
    assert torch.allclose(Sigmoid().probs(a), torch.sigmoid(a))
    assert Sigmoid(node_norm=True).node_norm and not Sigmoid().node_norm


def test_activation_hyperparameters_are_checked():
    for bad in ({"tau0": 0}, {"tau_min": 20.0}, {"anneal_epochs": 0}):
        with pytest.raises(AxisParamError):
            GumbelHard(**bad)
    with pytest.raises(AxisParamError):
        Sigmoid(node_norm="yes")
