"""GDAS (gumbel_hard): the forward_gdas form against an explicit reference, and long runs that
must not crash when every sampled path misses some α."""

import pytest
import torch
from helpers import FixedVal, batches, tiny_state

from raydnas.search.run import train_step

TINY201 = {"space": "tiny201", "model": {"channels": 4, "cells": 1}}


def _gdas_state(form, dtype=torch.float32, seed=0):
    return tiny_state({"activation": "gumbel_hard"}, {"activation": {"form": form}},
                      dtype=dtype, seed=seed, **TINY201)


def _reference_forward(m, x, hard, index):
    """AutoDL-Projects forward_gdas written out plainly: per edge
    Σ_k (h_k · o_k(x) if k == sampled else h_k), nodes summed, on the supernet's own modules."""
    space = m.space

    def cell(c, inputs):
        states = list(inputs)
        e = 0
        for j in range(space.nodes):
            node = 0
            for i in range(len(states)):
                h, k_sel = hard[e], int(index[e])
                for k, op in enumerate(c.edges[e]._ops):
                    if k == k_sel:
                        if space.ops[k] != "none":
                            node = node + h[k] * op(states[i])
                    else:
                        node = node + h[k]
                e += 1
            states.append(node)
        return states[-1]

    return m.run(x, cell)


def test_forward_gdas_matches_reference_values_and_alpha_gradients():
    st = _gdas_state("gdas", torch.float64)
    m = st.model
    m.train()
    (x, y), _ = batches(st, 16, torch.float64)
    a = m.alphas["normal"]
    with m.activation.frozen_noise():
        loss = st.criterion(m(x), y)
        g_ours, = torch.autograd.grad(loss, [a])
        hard = m.activation.weights(a, True)
        index = hard.detach().argmax(1)
        loss_ref = st.criterion(_reference_forward(m, x, hard, index), y)
        g_ref, = torch.autograd.grad(loss_ref, [a])
    torch.testing.assert_close(loss, loss_ref)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-9, atol=1e-12)
    assert (g_ours.abs().sum(1) > 0).all()  # every sampled edge's α gets a gradient


def test_v1_form_same_values_zero_gradient_on_none_edges():
    """v1 (forward_gdas_v1) computes the same values; an edge whose sampled op is none gets a
    zero α gradient there, while the gdas form gives it one."""
    helped = 0
    for seed in range(40):
        grads = {}
        for form in ("gdas", "v1"):
            st = _gdas_state(form, torch.float64)
            m = st.model
            m.train()
            (x, y), _ = batches(st, 16, torch.float64)
            torch.manual_seed(seed)
            with m.activation.frozen_noise():
                loss = st.criterion(m(x), y)
                idx = m.activation.weights(m.alphas["normal"], True).detach().argmax(1)
            grads[form] = (float(loss.detach()), torch.autograd.grad(loss, [m.alphas["normal"]])[0], idx)
        assert grads["gdas"][0] == pytest.approx(grads["v1"][0], rel=1e-12)
        none_edges = (grads["v1"][2] == 0).nonzero().flatten()  # op 0 of tiny201 is none
        assert (grads["v1"][1][none_edges] == 0).all()
        helped += int((grads["gdas"][1][none_edges].abs().sum(1) > 0).sum())
    # (a none edge into a node whose every edge is none still gets 0: relu'(0) = 0 downstream)
    assert helped > 0


@pytest.mark.slow  # a whole search or a CLI subprocess: the full lane
@pytest.mark.parametrize("form", ["gdas", "v1"])
def test_gdas_500_alpha_steps_without_a_crash(form):
    """500 GDAS search steps (an α step before each weight step) on tiny201 with α pushed toward
    `none` so that all-none paths (α unused in the graph) happen often; none may crash."""
    st = _gdas_state(form)
    with torch.no_grad():
        st.model.alphas["normal"][:, 0] += 1.5  # none most likely on every edge
    train_b, val_b = batches(st, 8)
    val = FixedVal(val_b)
    before = st.model.alphas["normal"].detach().clone()
    for _ in range(500):
        train_step(st, train_b, val)  # raises NonFiniteLoss on a NaN loss
    assert st.alpha_steps == 500
    assert not torch.equal(before, st.model.alphas["normal"].detach())
