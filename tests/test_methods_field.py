"""The methods the field compares against: DrNAS, FairDARTS, SDARTS, DARTS- and RobustDARTS's
Hessian signal, each checked in float64 against an explicit reference (closed forms, autograd of
an independent formula, an explicit Hessian, the inverse CDF of the Beta distribution)."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import FixedVal, batches, read_final, tiny_config, tiny_state

from raydnas.axes.checks import AxisParamError
from raydnas.axes.dirichlet import pathwise_sample
from raydnas.axes.penalties import DirichletKL, ZeroOne
from raydnas.axes.smoothing import AdversarialSmoothing, RandomSmoothing, clip
from raydnas.config.experiment import from_dict
from raydnas.errors import ConfigError
from raydnas.search.hessian import dominant_eigenvalue, eigenvalue_stop
from raydnas.search.run import run_search, train_step


def _random_alphas(st, scale=1.0):
    with torch.no_grad():
        for a in st.model.arch_parameters():
            a.copy_(scale * torch.randn_like(a))


# -- FairDARTS --------------------------------------------------------------------------------
def test_zero_one_loss_is_minus_w_mean_squared_distance_from_half_with_its_exact_gradient():
    st = tiny_state({"activation": "sigmoid"}, dtype=torch.float64)
    _random_alphas(st)
    alphas = st.model.arch_parameters()
    n = sum(a.numel() for a in alphas)
    s = [torch.sigmoid(a.detach()) for a in alphas]
    want = -10.0 * sum(float(((x - 0.5) ** 2).sum()) for x in s) / n
    pen = ZeroOne().penalty(st)
    assert float(pen.detach()) == pytest.approx(want, rel=1e-12)
    for g, x in zip(torch.autograd.grad(pen, alphas), s):
        # d/dα of −w/N·(σ − ½)² = −w/N·2(σ − ½)·σ(1 − σ)
        torch.testing.assert_close(g, -10.0 / n * 2 * (x - 0.5) * x * (1 - x),
                                   rtol=1e-12, atol=1e-15)
    l1 = ZeroOne(weight=2.0, norm="l1").penalty(st)
    assert float(l1.detach()) == pytest.approx(
        -2.0 * sum(float((x - 0.5).abs().sum()) for x in s) / n, rel=1e-12)
    with pytest.raises(AxisParamError, match="norm"):
        ZeroOne(norm="l3")


# -- DrNAS ------------------------------------------------------------------------------------
def _kl_dirichlet(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """KL(Dir(a) ‖ Dir(b)) per row, the closed form written out."""
    a0, b0 = a.sum(-1), b.sum(-1)
    return (torch.lgamma(a0) - torch.lgamma(a).sum(-1) - torch.lgamma(b0)
            + torch.lgamma(b).sum(-1)
            + ((a - b) * (torch.digamma(a) - torch.digamma(a0).unsqueeze(-1))).sum(-1))


def test_dirichlet_kl_is_the_summed_closed_form_with_the_elu_concentration():
    st = tiny_state({"activation": "dirichlet", "regularizer": "dirichlet_kl"},
                    dtype=torch.float64)
    _random_alphas(st)
    alphas = st.model.arch_parameters()
    reg = DirichletKL(scale=1e-3, prior=1.0)
    pen = reg.penalty(st)

    def explicit(*als):
        return 1e-3 * sum(_kl_dirichlet(torch.nn.functional.elu(a) + 1,
                                        torch.ones_like(a)).sum() for a in als)

    want = explicit(*[a.detach() for a in alphas])
    assert float(pen.detach()) == pytest.approx(float(want), rel=1e-10)
    als = [a.detach().clone().requires_grad_(True) for a in alphas]
    for g, r in zip(torch.autograd.grad(pen, alphas),
                    torch.autograd.grad(explicit(*als), als)):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-14)


def test_dirichlet_mean_is_the_concentration_normalised_and_its_argmax_is_softmaxs():
    st = tiny_state({"activation": "dirichlet"}, dtype=torch.float64)
    _random_alphas(st)
    act = st.model.activation
    for a in st.model.arch_parameters():
        a = a.detach()
        c = torch.where(a > 0, a + 1, torch.exp(a))  # elu(α) + 1
        torch.testing.assert_close(act.probs(a), c / c.sum(-1, keepdim=True))
        assert torch.equal(act.probs(a).argmax(-1), torch.softmax(a, -1).argmax(-1))


def test_dirichlet_pathwise_gradient_is_the_implicit_derivative_of_the_beta_inverse_cdf():
    """With two ops Dir(a, b)'s first coordinate is Beta(a, b): holding u = I_x(a, b) fixed,
    x(a) = I⁻¹_u(a, b) and the implicit-reparametrization gradient is dx/da (by a central
    difference of scipy's inverse regularized incomplete beta, float64). torch's
    ``_dirichlet_grad`` evaluates that derivative with a series/rational approximation, good
    to ~1e-3 relative, hence the tolerance."""
    from scipy.special import betainc, betaincinv

    torch.manual_seed(3)
    for a, b in [(1.3, 2.1), (0.6, 0.9), (4.0, 1.5)]:
        conc = torch.tensor([[a, b]], dtype=torch.float64, requires_grad=True)
        x = pathwise_sample(conc)
        ga, gb = torch.autograd.grad(x[0, 0], conc)[0][0].tolist()
        u = betainc(a, b, float(x[0, 0].detach()))
        h = 1e-6
        da = (betaincinv(a + h, b, u) - betaincinv(a - h, b, u)) / (2 * h)
        db = (betaincinv(a, b + h, u) - betaincinv(a, b - h, u)) / (2 * h)
        assert ga == pytest.approx(da, rel=2e-3, abs=1e-6)
        assert gb == pytest.approx(db, rel=2e-3, abs=1e-6)
        assert ga * da > 0 and gb * db > 0


def test_dirichlet_frozen_noise_reuses_one_draw_and_the_weight_step_samples():
    st = tiny_state({"activation": "dirichlet"})
    act, a = st.model.activation, st.model.alphas["normal"]
    with act.frozen_noise():
        w1, w2 = act.weights(a, True), act.weights(a, True)
    assert torch.equal(w1, w2) and torch.allclose(w1.sum(-1), torch.ones(w1.shape[0]))
    assert not torch.equal(act.weights(a, True), act.weights(a, True))
    g = torch.Generator().manual_seed(0)
    s1 = act.sample(a, g)
    assert torch.equal(s1, act.sample(a, torch.Generator().manual_seed(0)))


# -- SDARTS -----------------------------------------------------------------------------------
def test_sdarts_clip_is_clamp_then_renormalise_with_the_argmax_for_dead_edges():
    w = torch.tensor([[0.5, -0.2, 0.9], [-0.1, -0.3, -0.05], [1.4, 0.2, 0.0]],
                     dtype=torch.float64)
    want = torch.tensor([[0.5 / 1.4, 0.0, 0.9 / 1.4], [0.0, 0.0, 1.0], [1 / 1.2, 0.2 / 1.2, 0.0]],
                        dtype=torch.float64)
    torch.testing.assert_close(clip(w), want)


def test_sdarts_rs_trains_the_weights_under_clipped_uniform_noise_on_softmax():
    st = tiny_state({"regularizer": "sdarts_rs"}, dtype=torch.float64)
    _random_alphas(st)
    reg = st.parts["regularizer"]
    assert isinstance(reg, RandomSmoothing)
    st.epoch, st.epochs = 4, 10
    eps = 0.03 + (0.3 - 0.03) * 4 / 10
    assert reg.epsilon(4, 10) == pytest.approx(eps)
    train, _ = batches(st, dtype=torch.float64)
    torch.manual_seed(5)
    got = reg.weight_step_weights(st, None, train)
    torch.manual_seed(5)
    for c, a in st.model.alphas.items():
        p = torch.softmax(a.detach(), -1)
        want = clip(p + torch.empty_like(p).uniform_(-eps, eps))
        torch.testing.assert_close(got[c], want, rtol=0, atol=0)
        assert not got[c].requires_grad


def test_sdarts_weight_step_uses_the_perturbed_weights_and_leaves_alpha_alone():
    st = tiny_state({"regularizer": "sdarts_rs"}, dtype=torch.float64)
    ref = tiny_state({"regularizer": "none"}, dtype=torch.float64)
    ref.model.load_state_dict(st.model.state_dict())
    train, val = batches(st, dtype=torch.float64)
    alphas0 = [a.detach().clone() for a in st.model.arch_parameters()]
    st.parts["schedule"].wants_step = lambda ctx: False  # weight steps only
    torch.manual_seed(11)
    train_step(st, train, FixedVal(val))
    assert all(torch.equal(a, b) for a, b in zip(st.model.arch_parameters(), alphas0))
    # the same step by hand: forward under clip(softmax(α) + U) with the same draw
    torch.manual_seed(11)
    eps = st.parts["regularizer"].epsilon(0, st.epochs)
    probs = {c: torch.softmax(a.detach(), -1) for c, a in ref.model.alphas.items()}
    pert = {c: clip(p + torch.empty_like(p).uniform_(-eps, eps)) for c, p in probs.items()}
    loss = torch.nn.functional.cross_entropy(ref.model(train[0], op_weights=pert), train[1])
    loss.backward()
    torch.nn.utils.clip_grad_norm_(ref.weights, ref.cfg.optim.w_grad_clip)
    ref.w_optimizer.step()
    for p, q in zip(st.model.weight_parameters(), ref.model.weight_parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)


def test_sdarts_adv_finds_a_perturbation_in_the_ball_that_raises_the_training_loss():
    st = tiny_state({"regularizer": "sdarts_adv"}, dtype=torch.float64)
    _random_alphas(st, 0.5)
    reg = st.parts["regularizer"]
    assert isinstance(reg, AdversarialSmoothing) and reg.steps == 7
    train, _ = batches(st, n=32, dtype=torch.float64)
    probs = {c: p.detach() for c, p in st.model.op_probs().items()}
    buffers = [b.clone() for b in st.model.buffers()]
    torch.manual_seed(0)
    adv = reg.perturb(st, probs, train, 0.2)
    assert all(torch.equal(b, c) for b, c in zip(buffers, st.model.buffers()))  # eval mode
    assert st.model.training
    st.model.eval()
    with torch.no_grad():
        def loss(w):
            return float(torch.nn.functional.cross_entropy(st.model(train[0], op_weights=w),
                                                           train[1]))
        assert loss(adv) >= loss(probs)
        for c in probs:
            torch.testing.assert_close(adv[c].sum(-1), torch.ones(adv[c].shape[0],
                                                                  dtype=torch.float64))
            assert float((adv[c] >= 0).all()) and float((adv[c] - probs[c]).abs().max()) < 0.45


# -- DARTS- -----------------------------------------------------------------------------------
def test_aux_skip_adds_beta_times_the_identity_on_every_edge_and_decays_linearly():
    st = tiny_state(model={"channels": 4, "cells": 3, "aux_skip_beta": 1.0}, dtype=torch.float64)
    assert st.cfg.model.aux_beta(0, 10) == 1.0 and st.cfg.model.aux_beta(9, 10) == pytest.approx(0.1)
    assert st.cfg.model.aux_beta(12, 10) == 0.0
    cell = next(c for c in st.model.search_cells() if not c.reduction)
    sp = cell.space
    C = cell.C
    s0, s1 = torch.randn(2, C, 5, 5, dtype=torch.float64), torch.randn(2, C, 5, 5,
                                                                       dtype=torch.float64)
    w = torch.zeros(sp.num_edges, len(sp.ops), dtype=torch.float64)
    none = [[] for _ in range(sp.num_edges)]  # every candidate off: edges carry the aux alone
    pre, cell.pre = cell.pre, None  # compare on the cell's own states
    beta = 0.37
    out = cell([s0, s1], w, none, None, beta)
    cell.pre = pre
    states = [s0, s1]
    for j in range(sp.nodes):
        states.append(beta * sum(states[: sp.inputs + j]))
    want = torch.cat(states[sp.inputs:], dim=1) if sp.output == "concat" else states[-1]
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)
    # a derived (masked) forward has no auxiliary skip
    x = batches(st, dtype=torch.float64)[0][0]
    masks = {c: torch.zeros_like(a).scatter_(1, torch.full((a.shape[0], 1), 3), 1.0)
             for c, a in st.model.alphas.items()}
    st.model.aux_beta = 0.0
    a0 = st.model(x, op_weights=masks)
    st.model.aux_beta = 0.8
    torch.testing.assert_close(st.model(x, op_weights=masks), a0, rtol=0, atol=0)
    assert not torch.allclose(st.model(x), a0)


# -- RobustDARTS ------------------------------------------------------------------------------
@pytest.mark.slow  # a whole search or a CLI subprocess: the full lane
def test_power_iteration_finds_the_explicit_hessians_dominant_eigenvalue():
    st = tiny_state(dtype=torch.float64)
    _random_alphas(st, 0.5)
    st.model.train()
    train, _ = batches(st, n=16, dtype=torch.float64)
    alphas = st.model.arch_parameters()
    shapes = [a.shape for a in alphas]
    sizes = [a.numel() for a in alphas]

    flat = torch.cat([a.detach().reshape(-1) for a in alphas])
    # explicit Hessian through a functional call on the same batch
    from torch.func import functional_call

    params = dict(st.model.named_parameters())
    buffers = dict(st.model.named_buffers())

    def f(flat):
        ps = dict(params)
        for (c, _), p, sh in zip(st.model.alphas.items(), torch.split(flat, sizes), shapes):
            ps[f"alphas.{c}"] = p.reshape(sh)
        bs = {k: v.clone() for k, v in buffers.items()}
        return torch.nn.functional.cross_entropy(
            functional_call(st.model, {**ps, **bs}, (train[0],)), train[1])

    H = torch.autograd.functional.hessian(f, flat)
    ev = torch.linalg.eigvalsh((H + H.T) / 2)
    want = float(ev[ev.abs().argmax()])
    got = dominant_eigenvalue(lambda: torch.nn.functional.cross_entropy(st.model(train[0]),
                                                                        train[1]),
                              alphas, iters=500, tol=1e-12,
                              generator=torch.Generator().manual_seed(0))
    assert got == pytest.approx(want, rel=1e-6)


def _es_reference(values, every, window, delta, factor, start):
    """RobustDARTS's EVLocalAvg, written out: averages appended from the ⌈w/2⌉-th value."""
    evs, la, la_epoch = [], [], []
    for epoch, v in values:
        evs.append(v)
        if len(evs) >= math.ceil(window / 2):
            la.append(sum(evs[-window:]) / len(evs[-window:]))
            la_epoch.append(epoch - every * (window // 2))
    if not la or la_epoch[-1] - every * delta < start or len(la) < delta + 1:
        return None
    return la[-1] / la[-1 - delta] > factor, la_epoch[-1] - every * delta


def test_darts_es_rule_matches_the_local_average_reference_on_random_sequences():
    g = torch.Generator().manual_seed(0)
    fired = 0
    for trial in range(200):
        n = int(torch.randint(3, 30, (1,), generator=g))
        growth = float(torch.rand(1, generator=g)) * 0.3
        vals = [(2 * i, math.exp(growth * i) * (1 + 0.2 * float(torch.rand(1, generator=g))))
                for i in range(n)]
        ref = _es_reference(vals, 2, 5, 4, 1.3, 10)
        got = eigenvalue_stop(vals, 2, 5, 4, 1.3, 10)
        if ref is None or not ref[0]:
            assert got is None, (trial, vals)
        else:
            fired += 1
            assert got is not None and got[1] == ref[1]
    assert fired > 10


@pytest.mark.slow  # a whole search or a CLI subprocess: the full lane
def test_search_with_darts_minus_and_the_hessian_signal_records_both_and_stops_early(tmp_path):
    cfg = tiny_config(epochs=4, model={"channels": 4, "aux_skip_beta": 1.0},
                      measure={"hessian_every": 1, "hessian_iters": 5, "tune_epochs": 0},
                      stop={"hessian_factor": 1.0000001, "hessian_window": 1,
                            "hessian_delta": 1, "hessian_start_epoch": 0},
                      log={"tensorboard": False, "print_every": 0})
    m = run_search(cfg, tmp_path / "r", log=lambda s: None)
    hist = [line for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert all("hessian_eigenvalue" in h and "aux_skip_beta" in h for h in hist)
    import json

    h = [json.loads(x) for x in hist]
    assert [x["aux_skip_beta"] for x in h] == pytest.approx([1 - e / 4 for e in range(len(h))])
    ev = [x["hessian_eigenvalue"] for x in h]
    assert all(math.isfinite(v) for v in ev)
    if m.get("early_stop"):  # the eigenvalue rose: stopped with the code's rolled-back cell
        assert len(h) < 4 and m["early_stop_genotype_epoch"] == m["epoch"] - 1
        assert m["stopped_reason"] == "hessian" and m["genotype"] == m["early_stop_genotype"]
        assert m["genotype_at_stop"] == h[-1]["genotype_at_stop"]
        fin = read_final(tmp_path / "r")
        assert fin["early_stop"] == m["early_stop"] and fin["genotype"]["darts"] == m["genotype"]
    else:  # it never rose by the factor: every epoch ran
        assert len(h) == 4 and all(b <= a * 1.0000001 for a, b in zip(ev[:3], ev[1:3]))


@pytest.mark.parametrize("over,key,allowed", [
    ({"gradient": "single_level", "regularizer": "sdarts_rs"}, "method", "bilevel gradient"),
    ({"regularizer": "dirichlet_kl"}, "method", "use dirichlet"),
    ({"activation": "sigmoid", "regularizer": "sdarts_adv"}, "method", "do not sum to 1"),
    ({"stop": {"hessian_factor": 1.3}}, "stop.hessian_factor", "measure.hessian_every"),
    ({"model": {"aux_skip_decay": "cosine"}}, "model.aux_skip_decay", "linear or constant"),
])
def test_incompatible_field_methods_are_one_line_errors(over, key, allowed):
    raw = {"space": "tiny", "data": {"dataset": "digits"}, **over}
    with pytest.raises(ConfigError) as e:
        from_dict(raw, "study.yaml")
    msg = str(e.value)
    assert "\n" not in msg and "study.yaml" in msg and key in msg and allowed in msg


# -- PC-DARTS ---------------------------------------------------------------------------------
def test_channel_shuffle_is_the_group_transpose_permutation():
    from raydnas.model.mixed import channel_shuffle

    x = torch.randn(2, 12, 3, 3)
    K = 4
    out = channel_shuffle(x, K)
    for j in range(12):  # out channel i·K + g is in channel g·(C/K) + i
        i, g = divmod(j, K)
        assert torch.equal(out[:, j], x[:, g * (12 // K) + i])


@pytest.mark.parametrize("stride", [1, 2])
def test_partial_channel_mixed_op_is_ops_on_the_first_quarter_then_shuffle(stride):
    from raydnas.model.mixed import MixedOp

    torch.manual_seed(0)
    ops = ["none", "skip_connect", "avg_pool_3x3", "sep_conv_3x3"]
    m = MixedOp(ops, 8, 8, stride, True, partial=4).double()
    x = torch.randn(3, 8, 6, 6, dtype=torch.float64)
    w = torch.softmax(torch.randn(4, dtype=torch.float64), 0)
    got = m(x, w, [1, 2, 3])
    xp, rest = x[:, :2], x[:, 2:]
    ysum = sum(w[k] * m.candidate(k)(xp) for k in (1, 2, 3))
    if stride == 2:
        rest = torch.nn.functional.max_pool2d(rest, 2, 2)
    want = torch.cat([ysum, rest], 1)
    n, c, h, ww = want.shape
    want = want.reshape(n, 4, c // 4, h, ww).transpose(1, 2).reshape(n, c, h, ww)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_edge_normalization_scales_each_edge_by_its_nodes_softmax_and_steers_derivation():
    st = tiny_state(model={"channels": 8, "cells": 3, "partial_channels": 2, "edge_norm": True},
                    measure={"tune_epochs": 0}, dtype=torch.float64)
    model, sp = st.model, st.space
    betas = list(model.edge_betas.values())
    assert betas and all(any(b is p for p in model.arch_parameters()) for b in betas)
    assert not any(b is p for b in betas for p in model.weight_parameters())
    with torch.no_grad():
        for b in betas:
            b.copy_(torch.randn_like(b))
    ew = model.edge_weights()
    for ct, b in model.edge_betas.items():
        e0, want = 0, []
        for j in range(sp.nodes):
            n_in = sp.inputs + j
            z = torch.exp(b.detach()[e0:e0 + n_in])
            want.append(z / z.sum())
            e0 += n_in
        torch.testing.assert_close(ew[ct].detach(), torch.cat(want), rtol=1e-12, atol=0)
        torch.testing.assert_close(model.derive_weights()[ct].detach(),
                                   model.op_probs()[ct].detach() * torch.cat(want)[:, None])
    # the α loss reaches β; the α optimizer steps it
    train, val = batches(st, dtype=torch.float64)
    before = [b.detach().clone() for b in betas]
    train_step(st, train, FixedVal(val))
    assert all(not torch.equal(b, c) for b, c in zip(betas, before))
    # a node's edge with a much larger β wins the top-2 ranking over equal op weights
    from raydnas.model.genotype import derive

    with torch.no_grad():
        for a in model.alphas.values():
            a.zero_()
        for b in betas:
            b.zero_()
            b[sp.inputs + 2] = 5.0  # node 1's edge from node 0 (edges: 0→n0, 1→n0, 0→n1, ...)
    g, _ = derive({c: w.detach() for c, w in model.derive_weights().items()}, sp)
    assert all(any(i == 2 for _, i in nodes[1]) for nodes in g.cells.values())


@pytest.mark.parametrize("model,extra,key,allowed", [
    ({"channels": 8, "partial_channels": 3}, {"measure": {"tune_epochs": 0}},
     "model.partial_channels", "multiple of 6"),
    ({"channels": 8, "partial_channels": 4}, {}, "measure.tune_epochs", "cannot inherit"),
    ({"channels": 8, "partial_channels": 2}, {"measure": {"tune_epochs": 0},
                                              "speed": {"fuse": True}}, "speed.fuse", "false"),
])
def test_partial_channels_that_cannot_run_are_one_line_errors(model, extra, key, allowed):
    raw = {"space": "tiny", "data": {"dataset": "digits"}, "model": model, **extra}
    with pytest.raises(ConfigError) as e:
        from_dict(raw, "pc.yaml")
    msg = str(e.value)
    assert "\n" not in msg and "pc.yaml" in msg and key in msg and allowed in msg


# -- selection: FairDARTS threshold, DARTS-PT --------------------------------------------------
def _loop_for(st, tmp_path):
    """The real batches and measurer of a search on ``st`` (as run_search builds them)."""
    from raydnas.data.datasets import Batches, Cycle, load_or_make_split
    from raydnas.search.epoch import Loop
    from raydnas.search.measure import Measurer, bn_indices

    split = load_or_make_split(tmp_path / "split.json", len(st.dataset), 0.5, 0)
    tr = Batches(st.dataset, split["train"][:128], 32, 0, True)
    va = Batches(st.dataset, split["val"][:128], 32, 1, True)
    meas = Measurer(st.dataset, bn_indices(split["train"], 64, 0), va, 32, st.device, 2, 0)
    return Loop(tr, va, Cycle(va), meas, tr)


def test_threshold_selection_drops_chosen_ops_below_the_threshold(tmp_path):
    from raydnas.model.genotype import derive
    from raydnas.search.selection import SELECTIONS

    st = tiny_state({"activation": "sigmoid"}, select={"name": "threshold", "threshold": 0.6})
    _random_alphas(st, 2.0)
    probs = {c: p.detach() for c, p in st.model.op_probs().items()}
    g0, m0 = derive(probs, st.space)
    g, masks, extra = SELECTIONS.get("threshold")(st.cfg.select).select(st, None, probs)
    dropped = 0
    for ct in g0.cells:
        e0 = 0
        for j, (node0, node) in enumerate(zip(g0.cells[ct], g.cells[ct])):
            for (op0, i0), (op, i) in zip(node0, node):
                w = float(probs[ct][e0 + i0, st.space.ops.index(op0)])
                assert i == i0
                if w < 0.6:
                    assert op == "none" and float(masks[ct][e0 + i0].sum()) == 0
                    dropped += 1
                else:
                    assert op == op0 and torch.equal(masks[ct][e0 + i0], m0[ct][e0 + i0])
            e0 += st.space.inputs + j
    assert extra["select_dropped_ops"] == dropped > 0


def test_pt_fixes_the_op_whose_removal_costs_most_accuracy_and_keeps_the_top_k_edges(tmp_path):
    from raydnas.search.measure import copy_model
    from raydnas.search.selection import Perturbation

    st = tiny_state(select={"name": "pt", "pt_tune_epochs": 0})
    _random_alphas(st, 1.0)
    loop = _loop_for(st, tmp_path)
    sel = Perturbation(st.cfg.select)
    E, nops = st.space.num_edges, len(st.space.ops)
    cts = list(st.model.alphas)
    decided = {c: torch.zeros(E, dtype=torch.bool) for c in cts}
    onehot = {c: torch.zeros(E, nops) for c in cts}
    removed = {c: torch.zeros(E, dtype=torch.bool) for c in cts}
    allowed = [k for k, o in enumerate(st.space.ops) if o not in st.space.exclude]
    probs = {c: p.detach().float().clone() for c, p in st.model.op_probs().items()}
    # the reference: accuracy with each allowed op of edge 3 (normal) zeroed, all else a(α)
    net = copy_model(st.model)
    accs = []
    for k in allowed:
        w = {c: v.clone() for c, v in probs.items()}
        w["normal"][3, k] = 0.0
        accs.append(loop.measurer.measure(net, w)[1])
    sel._decide_op(st, loop, "normal", 3, allowed, decided, onehot, removed)
    want = allowed[min(range(len(allowed)), key=lambda i: (accs[i], i))]
    assert decided["normal"][3] and onehot["normal"][3].argmax() == want
    assert onehot["normal"][3].sum() == 1
    # node 1 of the tiny cell has 3 inputs (edges 2, 3, 4): keep the 2 whose removal hurts most
    base = sel._weights(st, decided, onehot, removed)
    drop = []
    for e in (2, 3, 4):
        w = {c: v.clone() for c, v in base.items()}
        w["normal"][e] = 0.0
        drop.append((loop.measurer.measure(net, w)[1], e))
    sel._decide_node(st, loop, "normal", 1, decided, onehot, removed)
    assert removed["normal"].nonzero().flatten().tolist() == [max(drop)[1]]
    # with the projection on, decided rows are constants of the forward: no α gradient there
    st.model.projection = sel._projection(decided, onehot, removed)
    x, y = batches(st)[0]
    torch.nn.functional.cross_entropy(st.model(x), y).backward()
    g = st.model.alphas["normal"].grad
    assert float(g[3].abs().sum()) == 0 and float(g[0].abs().sum()) > 0
    st.model.projection = None


@pytest.mark.slow  # a whole search or a CLI subprocess: the full lane
def test_a_search_with_pt_selection_records_the_selected_cell_and_its_own_accuracy(tmp_path):
    cfg = tiny_config(epochs=1, select={"name": "pt", "pt_tune_epochs": 0},
                      measure={"tune_epochs": 0}, log={"tensorboard": False, "print_every": 0})
    m = run_search(cfg, tmp_path / "r", log=lambda s: None)
    assert m["selected_by"] == "pt" and m["genotype_argmax"] and m["select_tune_epochs"] == 0
    fin = read_final(tmp_path / "r")
    assert fin["genotype"]["darts"] == m["genotype"]
    from raydnas.model.genotype import parse_genotype

    g = parse_genotype(m["genotype"])
    assert all(len(node) == 2 for nodes in g.cells.values() for node in nodes)
    assert 0 <= m["discrete_val_acc"] <= 1 and m["select_scores"] > 0


def test_sdarts_runs_ops_whose_perturbed_weight_is_zero_so_they_keep_a_gradient():
    """clip can set an entry to exactly 0; SmoothDARTS still runs that op, so the PGD step
    sees ∂L/∂a_k ≠ 0 and the op's module trains (weight decay and momentum included)."""
    st = tiny_state({"regularizer": "sdarts_rs"}, dtype=torch.float64)
    train, _ = batches(st, dtype=torch.float64)
    w = {c: p.detach().clone() for c, p in st.model.op_probs().items()}
    w["normal"][0] = torch.tensor([0.0, 0.0, 0.5, 0.5], dtype=torch.float64)  # skip at 0
    leaves = {c: v.clone().requires_grad_(True) for c, v in w.items()}
    loss = torch.nn.functional.cross_entropy(
        st.model(train[0], op_weights=leaves, run_zero_weights=True), train[1])
    g = torch.autograd.grad(loss, [leaves["normal"]])[0]
    assert float(g[0, 1].abs()) > 0  # skip_connect's weight, 0, still gets its gradient
    assert float(g[0, 0].abs()) == 0  # none is never run
    skipped = torch.nn.functional.cross_entropy(st.model(train[0], op_weights=leaves), train[1])
    assert float(torch.autograd.grad(skipped, [leaves["normal"]])[0][0, 1]) == 0
