"""Schedules (every, interval, informed) and regularizers (prox, admm, resource)."""

from __future__ import annotations

import io
import math
from types import SimpleNamespace

import pytest
import torch
from helpers import tiny_cfg, tiny_state

from raydnas.axes.checks import AxisParamError
from raydnas.axes.penalties import BetaDecay, Resource
from raydnas.axes.regularizer import ADMM, Prox, project
from raydnas.axes.schedule import Informed, Interval
from raydnas.errors import ConfigError
from raydnas.model.costs import op_costs


def _roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("s", [10, 4])
def test_informed_long_run_alpha_fraction_is_one_over_one_plus_s(s):
    g = torch.Generator().manual_seed(0)
    signal = (3.0 * torch.exp(0.5 * torch.randn(30000, generator=g))).tolist()  # stationary
    sch = Informed(every=s)
    steps = 0
    for f in signal:
        steps += sch.wants_step(None)
        sch.observe(None, f)
    frac = steps / len(signal)
    assert abs(frac - 1 / (1 + s)) <= 0.1 / (1 + s), frac


def test_informed_rule_ewma_and_threshold_updates():
    sch = Informed(threshold=1.0, threshold_multiplier=2.0, every=3, ewma=0.5)
    assert not sch.wants_step(None) and sch.tau == 2.0  # no F̄ yet: τ·m
    sch.observe(None, 1.0)
    assert sch.fbar == 1.0  # F̄₀ = F₀
    assert sch.wants_step(None) and sch.tau == pytest.approx(2.0 * 2.0 ** -3)
    sch.observe(None, 3.0)
    assert sch.fbar == pytest.approx(0.5 * 3.0 + 0.5 * 1.0)
    assert not sch.wants_step(None) and sch.tau == pytest.approx(0.5)
    again = Informed()
    again.load_state_dict(_roundtrip(sch.state_dict()))
    assert (again.tau, again.fbar) == (sch.tau, sch.fbar)


def test_informed_matching_split_is_applied_by_the_config():
    cfg = tiny_cfg({"schedule": "informed"}, {"schedule": {"match_split": True, "every": 10}},
                   data={"dataset": "digits", "batch_size": 8})
    assert cfg.data.val_fraction == pytest.approx(1 / 11)
    with pytest.raises(ConfigError, match="val_fraction"):
        tiny_cfg({"schedule": "informed"}, {"schedule": {"match_split": True}},
                 data={"dataset": "digits", "val_fraction": 0.5, "batch_size": 8})
    assert Informed(every=4, match_split=True).requested_val_fraction == pytest.approx(0.2)
    with pytest.raises(ConfigError, match="schedule.ewma"):
        tiny_cfg({"schedule": "informed"}, {"schedule": {"ewma": 0}})


def test_interval_steps_every_s_after_warmup():
    sch = Interval(every=3, warmup_epochs=1)
    st = SimpleNamespace(epoch=0, step=0, steps_per_epoch=4)
    got = []
    for i in range(12):
        st.epoch, st.step = i // 4, i
        got.append(sch.wants_step(st))
    assert got == [False] * 4 + [False, False, True, False, False, True, False, False]
    with pytest.raises(AxisParamError):
        Interval(every=0)


def test_prox_penalty_is_the_ramped_distance_to_the_projection():
    st = tiny_state()
    reg = Prox(rho=0.4)
    st.step, st.steps_per_epoch = 0, 10
    assert reg.penalty(st) == 0.0  # t/T = 0
    st.step = 5  # t/T = 5 / (2 epochs · 10 steps)
    probs = {c: p.detach() for c, p in st.model.op_probs().items()}
    target = project(probs, st.space)
    want = 0.25 * 0.4 / 2 * sum(float(torch.linalg.norm(probs[c] - target[c])) for c in probs)
    pen = reg.penalty(st)
    assert float(pen.detach()) == pytest.approx(want, rel=1e-6)
    # its gradient step moves a(α) toward Π(a(α))
    alphas = st.model.arch_parameters()
    grads = torch.autograd.grad(pen, alphas)
    with torch.no_grad():
        for a, g in zip(alphas, grads):
            a -= 1.0 * g
    after = {c: p.detach() for c, p in st.model.op_probs().items()}
    dist = lambda p: sum(float(torch.linalg.norm(p[c] - target[c])) for c in p)  # noqa: E731
    assert dist(after) < dist(probs)


def test_beta_decay_is_the_ramped_mean_logsumexp_with_the_softmax_gradient():
    # float64 against an explicit reference: R = λ_e·mean_e logsumexp(α_e), and its exact
    # gradient λ_e·softmax(α_e)/E (E: edges of every cell type), λ_e = lam·e/ramp_epochs
    st = tiny_state(dtype=torch.float64)
    with torch.no_grad():
        for a in st.model.arch_parameters():
            a.copy_(torch.randn_like(a))
    reg = BetaDecay(lam=50, ramp_epochs=100)
    st.epoch = 0
    assert reg.penalty(st) == 0.0  # the code's weight is 0 in its first epoch
    st.epoch = 7
    alphas = st.model.arch_parameters()
    edges = sum(a.shape[0] for a in alphas)
    lam = 50 * 7 / 100
    want = lam * sum(math.log(sum(math.exp(v) for v in row)) for a in alphas
                     for row in a.detach().tolist()) / edges
    pen = reg.penalty(st)
    assert pen.dtype == torch.float64 and float(pen.detach()) == pytest.approx(want, rel=1e-12)
    for a, g in zip(alphas, torch.autograd.grad(pen, alphas)):
        torch.testing.assert_close(g, lam * torch.softmax(a.detach(), -1) / edges,
                                   rtol=1e-12, atol=1e-15)
    with pytest.raises(AxisParamError, match="ramp_epochs"):
        BetaDecay(ramp_epochs=0)
    with pytest.raises(AxisParamError, match="lam"):
        BetaDecay(lam=-1)


def test_admm_reaches_a_feasible_discrete_cell_on_a_fixed_quadratic():
    torch.manual_seed(0)
    st = tiny_state({"activation": "crb"})
    model = st.model
    target = {c: torch.rand_like(a) for c, a in model.alphas.items()}

    def l_val():  # fixed quadratic in α; its minimiser clamp(T) is not a discrete cell
        return 0.5 * sum(((a - target[c]) ** 2).sum() for c, a in model.alphas.items())

    reg = ADMM(rho=10.0, every=10)
    reg.setup(st)
    opt = torch.optim.Adam(model.arch_parameters(), lr=0.02)
    for _ in range(300):
        opt.zero_grad()
        (l_val() + reg.penalty(st)).backward()
        opt.step()
        model.activation.after_arch_step(st)
        reg.after_arch_step(st)
    probs = {c: p.detach() for c, p in model.op_probs().items()}
    pi = project(probs, st.space)
    assert all(torch.equal(pi[c], reg.Z[c]) for c in probs)  # Π(a(α)) = Z
    assert max(float((probs[c] - reg.Z[c]).abs().max()) for c in probs) < 0.05
    free = {c: target[c].clamp(0, 1) for c in target}
    assert max(float((free[c] - project(free, st.space)[c]).abs().max()) for c in free) > 0.3
    m = reg.epoch_metrics(st, None, {})
    assert m["admm_feasible"] and m["admm_residual"] < 0.05
    again = ADMM()
    again.load_state_dict(_roundtrip(reg.state_dict()))
    assert again.n == reg.n and all(torch.equal(again.U[c], reg.U[c]) for c in reg.U)


def test_admm_textbook_updates_and_code_variant():
    st = tiny_state()
    reg = ADMM(rho=2.0, every=2)
    reg.setup(st)
    probs = {c: p.detach() for c, p in st.model.op_probs().items()}
    z0 = project(probs, st.space)
    assert all(torch.equal(reg.Z[c], z0[c]) for c in z0)
    want = 2.0 / 2 * sum(float(((probs[c] - z0[c]) ** 2).sum()) for c in probs)
    assert float(reg.penalty(st).detach()) == pytest.approx(want, rel=1e-6)
    reg.after_arch_step(st)
    assert all(torch.equal(reg.Z[c], z0[c]) for c in z0)  # not yet: every 2 α steps
    reg.after_arch_step(st)
    for c in probs:  # U ← U + a(α) − Z with U₀ = 0
        assert torch.allclose(reg.U[c], probs[c] - reg.Z[c])
    code = ADMM(rho=2.0, every=1, squared_norm=False, dual_decay=0.2, project_on_activated=False)
    code.setup(st)
    unsq = 2.0 / 2 * sum(float(torch.linalg.norm(probs[c] - z0[c])) for c in probs)
    assert float(code.penalty(st).detach()) == pytest.approx(unsq, rel=1e-6)
    code.after_arch_step(st)
    for c, a in st.model.alphas.items():  # U ← γ_U·U + α − Z on raw α
        assert torch.allclose(code.U[c], a.detach() - code.Z[c])
    with pytest.raises(AxisParamError):
        ADMM(dual_decay=1.5)
    with pytest.raises(AxisParamError):
        ADMM(variant="zuewma")


def test_admm_darts_prime_variant_is_the_public_code():
    """k8lion/DARTS-PRIME: Z₀ = α₀ (raw, unprojected), unsquared ‖(a(α) − Z + U)⊙M‖,
    Z ← Π(a(α + U)), U ← (U + α − Z)⊙M (γ_U = 1: --zuewma is never passed)."""
    st = tiny_state({"activation": "crb"})
    with torch.no_grad():
        st.model.alphas["normal"][0, :] = -1.0  # pruned on the next step
    st.model.activation.prune(st.model)
    reg = ADMM(rho=2.0, every=1, variant="darts_prime")
    assert (reg.squared, reg.gamma, reg.on_activated, reg.z_init) == (False, 1.0, False, "alpha")
    reg.setup(st)
    alphas = {c: a.detach().clone() for c, a in st.model.alphas.items()}
    assert all(torch.equal(reg.Z[c], alphas[c]) for c in alphas)
    probs = {c: p.detach() for c, p in st.model.op_probs().items()}
    masks = st.model.activation.masks
    want = 2.0 / 2 * sum(float(torch.linalg.norm((probs[c] - alphas[c]) * masks[c]))
                         for c in probs)
    assert float(reg.penalty(st).detach()) == pytest.approx(want, rel=1e-6)
    reg.after_arch_step(st)
    for c, a in alphas.items():
        z = project({c: st.model.activation.probs(a)}, st.space)[c]
        assert torch.equal(reg.Z[c], z)
        assert torch.allclose(reg.U[c], (a - z) * masks[c])
    assert (reg.U["normal"][0] == 0).all()  # pruned entries carry no dual
    assert ADMM(variant="darts_prime", squared_norm=True).squared  # a flag overrides


def test_resource_costs_and_penalty():
    st = tiny_state(regularizer={"name": "resource", "lam": 0.01, "form": "cell"})
    ops = list(st.space.ops)
    params = op_costs(st.model, "params")
    flops = op_costs(st.model, "flops", st.dataset.data[0][:1])
    sep, pool, none = ops.index("sep_conv_3x3"), ops.index("avg_pool_3x3"), ops.index("none")
    cells = {c: sum(cell.reduction == (c == "reduce") for cell in st.model.search_cells())
             for c in params}
    for c in params:
        assert params[c].shape[0] == cells[c]
        assert (params[c][..., sep] > 0).all() and (params[c][..., none] == 0).all()
        assert (flops[c][..., sep] > flops[c][..., pool]).all() and (flops[c][..., pool] > 0).all()
    reg = st.regularizer
    probs = st.model.op_probs()
    want = 0.01 * sum(math.log(float((probs[c] * reg.costs[c].sum(0)).sum().detach()))
                      for c in probs)
    pen = reg.penalty(st)
    assert float(pen.detach()) == pytest.approx(want, rel=1e-4)
    grads = torch.autograd.grad(pen, st.model.arch_parameters())
    for g, c in zip(grads, st.model.alphas):  # the penalty pushes weight off the costly op
        assert (g[:, sep] > 0).all()
    with pytest.raises(AxisParamError):
        Resource(cost="time")
    with pytest.raises(AxisParamError):
        Resource(form="whole")


def test_resource_snas_form_on_the_sample():
    """SNAS's reparametrized log penalty: per cell and edge log(max(1, Σ_k Z_k·cost_k)) of the
    forward pass's Gumbel sample Z, summed over edges, averaged over the cells of a type,
    normal + ratio·reduce; computed here entry by entry."""
    st = tiny_state({"activation": "gumbel", "gradient": "single_level",
                     "regularizer": "resource"}, {"regularizer": {"lam": 0.01, "ratio": 0.5}})
    st.model.train()
    x, _ = st.dataset.data
    st.model(x[:8])  # draws Z
    z = {c: w.detach() for c, w in st.model.last_op_weights.items()}
    assert not torch.allclose(z["normal"], st.model.op_probs()["normal"].detach())  # a sample
    costs = st.regularizer.costs
    want = 0.0
    for c in z:
        per_cell = []
        for cell_cost in costs[c]:
            tot = 0.0
            for e in range(z[c].shape[0]):
                ce = sum(float(z[c][e, k]) * float(cell_cost[e, k]) for k in range(z[c].shape[1]))
                tot += math.log(max(1.0, ce))
            per_cell.append(tot)
        want += (0.5 if c == "reduce" else 1.0) * sum(per_cell) / len(per_cell)
    pen = st.regularizer.penalty(st)
    assert float(pen.detach()) == pytest.approx(0.01 * want, rel=1e-5)
    g = torch.autograd.grad(pen, st.model.arch_parameters())
    assert all(t.abs().sum() > 0 for t in g)  # α gets its gradient through the sample
