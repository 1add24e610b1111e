"""UNAS's generalization-gap objective (``objective: {name: gen_gap, lam: λ}``): α's step
minimizes L_train + λ·|L_val − L_train|; checked against the same expression written out and
differentiated by autograd, on a real supernet and the embedded digits."""

from __future__ import annotations

import pytest
import torch
from helpers import batches, tiny_cfg, tiny_state

from raydnas.axes.gradient import FirstOrder
from raydnas.errors import ConfigError


@pytest.mark.parametrize("lam", [0.5, 2.0])
def test_gen_gap_gradient_is_the_written_out_objective(lam):
    st = tiny_state(objective={"name": "gen_gap", "lam": lam})
    tr, va = batches(st)
    st.model.train()
    alphas = st.model.arch_parameters()
    FirstOrder().arch_grad(st, tr, va)
    got = [a.grad.clone() for a in alphas]
    lt, lv = st.loss(*tr), st.loss(*va)
    assert lv.item() != pytest.approx(lt.item())  # the gap is not zero: the test can fail
    want = torch.autograd.grad(lt + lam * (lv - lt).abs(), alphas)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)
    # the default objective is the validation loss alone
    plain = tiny_state()
    plain.model.train()
    FirstOrder().arch_grad(plain, tr, va)
    want = torch.autograd.grad(plain.loss(*va), plain.model.arch_parameters())
    for a, w in zip(plain.model.arch_parameters(), want):
        torch.testing.assert_close(a.grad, w)


def test_gen_gap_with_reinforce_scores_the_gap_of_one_sampled_path():
    st = tiny_state({"activation": "gumbel_hard"},
                    {"activation": {"estimator": "reinforce", "baseline_decay": 0.0}},
                    objective={"name": "gen_gap", "lam": 0.5})
    act = st.model.activation
    act._baseline = 1.0  # c
    tr, va = batches(st)
    st.model.train()
    with st.frozen_noise():
        FirstOrder().arch_grad(st, tr, va)
        alphas = st.model.arch_parameters()
        got = [a.grad.clone() for a in alphas]
        with torch.no_grad():
            lt, lv = float(st.loss(*tr)), float(st.loss(*va))
        bs = [(torch.log_softmax(a, -1) + act._frozen[id(a)]).argmax(-1) for a in alphas]
    f = lt + 0.5 * abs(lv - lt)
    logp = sum(torch.log_softmax(a, -1).gather(-1, b[:, None]).sum() for a, b in zip(alphas, bs))
    want = torch.autograd.grad((f - 1.0) * logp, alphas)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-7)
    assert act._baseline == pytest.approx(f)  # decay 0: the baseline is the last objective


@pytest.mark.parametrize("method,objective,key,allowed", [
    ({"gradient": "single_level"}, {"name": "gen_gap"}, "objective.name",
     "no validation loss"),
    ({"gradient": "unrolled"}, {"name": "gen_gap"}, "objective.name", "first_order"),
    ({}, {"name": "gen_gap", "lam": 0}, "objective.lam", "a number > 0"),
    ({}, {"name": "gap"}, "objective.name", "val or gen_gap"),
])
def test_bad_objectives_are_one_line(method, objective, key, allowed):
    with pytest.raises(ConfigError) as e:
        tiny_cfg(method, objective=objective)
    msg = str(e.value)
    assert "\n" not in msg and key in msg and allowed in msg, msg
