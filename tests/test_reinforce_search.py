"""GDAS's activation with UNAS's REINFORCE estimator (``gumbel_hard: {estimator: reinforce}``)
in a real supernet on the embedded digits: α's gradient is (L − c)·∇ log p(b) for the sampled
path b, written out here; its baseline resumes exactly; what cannot carry it is refused."""

from __future__ import annotations

import pytest
import torch
from helpers import batches, tiny_cfg, tiny_state

from raydnas.axes.estimators import log_prob
from raydnas.axes.gradient import FirstOrder
from raydnas.errors import ConfigError

REINFORCE = {"activation": {"estimator": "reinforce", "baseline_decay": 0.5}}


def test_reinforce_alpha_gradient_is_the_written_out_score_function():
    st = tiny_state({"activation": "gumbel_hard"}, REINFORCE)
    act = st.model.activation
    tr, va = batches(st)
    st.model.train()
    for step in range(3):
        c = act._baseline
        for a in st.model.arch_parameters():
            a.grad = None
        with st.frozen_noise():  # one Gumbel draw per α for the step and the reference below
            FirstOrder().arch_grad(st, tr, va)
            got = [a.grad.clone() for a in st.model.arch_parameters()]
            alphas = st.model.arch_parameters()
            bs = [(torch.log_softmax(a, -1) + act._frozen[id(a)]).argmax(-1) for a in alphas]
            with torch.no_grad():
                L = float(st.loss(*va))
        c = L if c is None else c
        logp = sum(log_prob(a, b) for a, b in zip(alphas, bs))
        want = torch.autograd.grad((L - c) * logp, alphas)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-7)
        assert act._baseline == pytest.approx(0.5 * c + 0.5 * L)
        with torch.no_grad():  # a step so that the next one differs
            for a in alphas:
                a -= 0.5 * a.grad
    assert any(g.abs().sum() > 0 for g in got)


def test_the_sampled_path_is_one_hot_and_only_its_op_runs():
    st = tiny_state({"activation": "gumbel_hard"}, REINFORCE)
    a = st.model.arch_parameters()[0]
    w = st.model.activation.weights(a, True)
    assert torch.equal(w.sum(-1), torch.ones(w.shape[0])) and not w.requires_grad
    assert st.model.activation.edge_bias(w, None) is None
    assert all(len(x) <= 1 for x in st.model.activation.active_ops("normal", w, frozenset()))


def test_the_baseline_is_saved_and_restored():
    st = tiny_state({"activation": "gumbel_hard"}, REINFORCE)
    tr, va = batches(st)
    st.model.train()
    FirstOrder().arch_grad(st, tr, va)
    state = st.model.activation.state_dict()
    assert isinstance(state["baseline"], float)
    other = tiny_state({"activation": "gumbel_hard"}, REINFORCE)
    other.model.activation.load_state_dict(state)
    assert other.model.activation._baseline == state["baseline"]


@pytest.mark.parametrize("method,params,key,allowed", [
    ({"activation": "gumbel_hard"}, {"activation": {"estimator": "relax_v2"}},
     "activation.estimator", "relaxed, reinforce, rebar, relax"),
    ({"activation": "gumbel_hard"}, {"activation": {"estimator": "relax", "relax_hidden": 0}},
     "activation.relax_hidden", "an integer >= 1"),
    ({"activation": "gumbel_hard"}, {"activation": {"estimator": "relax", "relax_lr": -1}},
     "activation.relax_lr", "a number > 0"),
    ({"activation": "gumbel_hard", "gradient": "unrolled"},
     {"activation": {"estimator": "relax"}}, "", "use gradient first_order"),
    ({"activation": "gumbel_hard"}, {"activation": {"estimator": "rebar",
                                                    "rebar_temperature": 0}},
     "activation.rebar_temperature", "a number > 0"),
    ({"activation": "gumbel_hard", "gradient": "unrolled"}, REINFORCE, "",
     "use gradient first_order"),
    ({"activation": "gumbel_hard", "gradient": "single_level"}, REINFORCE, "",
     "use gradient first_order"),
    ({"activation": "softmax"}, {"activation": {"estimator": "reinforce"}}, "estimator",
     ""),
    ({"activation": "gumbel_hard", "regularizer": "resource"}, REINFORCE, "",
     "use form: cell or a target"),
])
def test_an_estimator_that_cannot_act_is_refused_in_one_line(method, params, key, allowed):
    with pytest.raises(ConfigError) as e:
        tiny_cfg(method, params)
    msg = str(e.value)
    assert "\n" not in msg and key in msg and allowed in msg, msg


def test_rebar_alpha_gradient_is_the_written_out_estimator():
    """REBAR on the supernet: [L(b) − η·f(σ(z̃))]·∇log p(b) + η·∇f(σ(z)) − η·∇f(σ(z̃)), with f
    the val loss under explicit op weights, rebuilt here from the step's noise."""
    from raydnas.axes.estimators import conditional_gumbel, one_hot

    st = tiny_state({"activation": "gumbel_hard"},
                    {"activation": {"estimator": "rebar", "rebar_eta": 0.7,
                                    "rebar_temperature": 0.5}})
    act = st.model.activation
    tr, va = batches(st)
    st.model.train()
    with st.frozen_noise():
        FirstOrder().arch_grad(st, tr, va)
        alphas = dict(st.model.alphas)
        got = [a.grad.clone() for a in alphas.values()]
        g = {ct: act._frozen[id(a)] for ct, a in alphas.items()}
        v = {ct: act._frozen[("v", id(a))] for ct, a in alphas.items()}
    b = {ct: (torch.log_softmax(a, -1) + g[ct]).argmax(-1) for ct, a in alphas.items()}
    x, y = va

    def f(w):
        return st.criterion(st.model(x, op_weights=w, run_zero_weights=True), y)

    with torch.no_grad():
        L = float(f({ct: one_hot(b[ct], a.shape[-1]) for ct, a in alphas.items()}))
    z = {ct: torch.softmax((torch.log_softmax(a, -1) + g[ct]) / 0.5, -1)
         for ct, a in alphas.items()}
    zt = {ct: torch.softmax(conditional_gumbel(a, b[ct], v[ct]) / 0.5, -1)
          for ct, a in alphas.items()}
    logp = sum(log_prob(a, b[ct]) for ct, a in alphas.items())
    f_zt = f(zt)
    sur = (L - 0.7 * f_zt.detach()) * logp + 0.7 * (f(z) - f_zt)
    want = torch.autograd.grad(sur, list(alphas.values()))
    for gg, w in zip(got, want):
        torch.testing.assert_close(gg, w, rtol=1e-4, atol=1e-6)
    assert any(gg.abs().sum() > 0 for gg in got)


def test_a_hessian_measure_with_a_score_function_estimator_is_refused():
    with pytest.raises(ConfigError) as e:
        tiny_cfg({"activation": "gumbel_hard"}, REINFORCE, measure={"hessian_every": 1})
    assert "measure.hessian_every" in str(e.value) and "\n" not in str(e.value)


def test_a_measurement_forward_drops_the_draw_and_the_model_still_copies():
    """An eval-mode forward (measurement) leaves no draw for a later α step, and nothing with
    a graph is kept between steps (the supernet deep-copies, as measurement does)."""
    import copy

    st = tiny_state({"activation": "gumbel_hard"}, REINFORCE)
    tr, va = batches(st)
    st.model.train()
    st.loss(*va)  # a training-mode forward with α requiring grad
    assert st.model.activation._drawn
    copy.deepcopy(st.model)
    st.model.eval()
    st.loss(*va)
    assert not st.model.activation._drawn
    assert st.model.activation.score_term(torch.tensor(1.0), dict(st.model.alphas),
                                          None) == 0.0


def test_relax_alpha_gradient_and_its_control_step_are_the_written_out_ones():
    """RELAX on the supernet: REBAR's estimate plus −r(σ(z̃))·∇log p(b) + ∇r(σ(z)) − ∇r(σ(z̃))
    for α, and ρ's gradient ∇_ρ Σ ĝ² (read back from Adam's first moment), both rebuilt
    here by autograd from the step's noise; ρ's state resumes."""
    import copy

    from raydnas.axes.estimators import conditional_gumbel, one_hot
    from raydnas.search.state import _arch_update

    params = {"activation": {"estimator": "relax", "rebar_eta": 0.7, "rebar_temperature": 0.5,
                             "relax_hidden": 6, "relax_lr": 1e-3}}
    st = tiny_state({"activation": "gumbel_hard"}, params)
    act = st.model.activation
    alphas = dict(st.model.alphas)
    act.relax.build({ct: a.detach() for ct, a in alphas.items()})
    net = act.relax.net
    with torch.no_grad():  # r_ρ ≠ 0, so its terms show
        w = net[2].weight
        w.copy_(torch.linspace(-1.0, 1.0, w.numel()).view_as(w))
    rnet = copy.deepcopy(net)  # ρ as the step found it
    a0 = {ct: a.detach().clone().requires_grad_(True) for ct, a in alphas.items()}
    tr, va = batches(st)
    st.model.train()
    with st.frozen_noise():
        FirstOrder().arch_grad(st, tr, va)
        got = [a.grad.clone() for a in alphas.values()]
        g = {ct: act._frozen[id(a)] for ct, a in alphas.items()}
        v = {ct: act._frozen[("v", id(a))] for ct, a in alphas.items()}
        assert act.relax._g_r is not None  # kept with its graph until ρ's step ...
        copy.deepcopy(st.model)  # ... which a measurement's deep copy leaves behind
        _arch_update(st)  # the α step, then ρ's (after_arch_step)
    b = {ct: (torch.log_softmax(a, -1) + g[ct]).argmax(-1) for ct, a in a0.items()}
    x, y = va

    def f(w):
        return st.criterion(st.model(x, op_weights=w, run_zero_weights=True), y)

    def r(w):
        return rnet(torch.cat([w[ct].reshape(-1) for ct in sorted(w)])).squeeze(-1)

    with torch.no_grad():
        L = float(f({ct: one_hot(b[ct], a.shape[-1]) for ct, a in a0.items()}))
    z = {ct: torch.softmax((torch.log_softmax(a, -1) + g[ct]) / 0.5, -1) for ct, a in a0.items()}
    zt = {ct: torch.softmax(conditional_gumbel(a, b[ct], v[ct]) / 0.5, -1)
          for ct, a in a0.items()}
    logp = sum(log_prob(a, b[ct]) for ct, a in a0.items())
    f_zt = f(zt)
    r_c = r({ct: t.detach() for ct, t in zt.items()})  # constant in α, not in ρ
    sur = ((L - 0.7 * f_zt.detach() - r_c) * logp + 0.7 * (f(z) - f_zt) + r(z) - r(zt))
    want = torch.autograd.grad(sur, list(a0.values()), create_graph=True)
    for gg, ww in zip(got, want):
        torch.testing.assert_close(gg, ww.detach(), rtol=1e-4, atol=1e-6)
    rho_grad = torch.autograd.grad(sum((ww ** 2).sum() for ww in want), list(rnet.parameters()))
    adam = act.relax.optimizer
    for p, rg in zip(net.parameters(), rho_grad):
        m = adam.state[p]["exp_avg"] / (1 - adam.param_groups[0]["betas"][0])  # first step: g
        torch.testing.assert_close(m, rg, rtol=1e-4, atol=1e-7)
    assert any(float(rg.abs().sum()) > 0 for rg in rho_grad)
    # ρ and Adam's state resume; a deep copy (measurement) leaves the graph behind
    state = act.state_dict()
    other = tiny_state({"activation": "gumbel_hard"}, params)
    other.model.activation.load_state_dict(copy.deepcopy(state))
    other.model.activation.relax.build({ct: a.detach() for ct, a in alphas.items()})
    for p, q in zip(net.parameters(), other.model.activation.relax.net.parameters()):
        assert torch.equal(p, q)
    assert other.model.activation.relax.optimizer.state_dict()["state"][0]["step"] == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: the stream checked")
def test_relax_and_dirichlet_seed_the_cpu_stream_alone():
    """Building RELAX's r_ρ and drawing a seeded Dirichlet measurement sample leave the GPU's
    random stream where it was (reseeding it would repeat every seed's GPU noise)."""
    from raydnas.axes.dirichlet import Dirichlet
    from raydnas.axes.relax_control import RelaxControl

    torch.cuda.manual_seed(123)
    before = torch.cuda.get_rng_state()
    RelaxControl(4).build({"normal": torch.zeros(3, 2, device="cuda")})
    Dirichlet().sample(torch.zeros(3, 2, device="cuda"), torch.Generator().manual_seed(1))
    assert torch.equal(torch.cuda.get_rng_state(), before)


def test_the_unas_study_config_runs_each_estimator_on_the_unas_preset():
    """configs/unas_study.yaml: four methods, each configs/unas.yaml with one estimator."""
    from pathlib import Path

    from raydnas.config.experiment import create_axis, load_config
    from raydnas.sweep import parse_study

    root = Path(__file__).resolve().parents[1]
    study = parse_study(load_config(root / "configs" / "unas_study.yaml"), storage="/tmp/x",
                        name="u")
    base = load_config(root / "configs" / "unas.yaml")
    got = {}
    for m in study.methods:
        cfg = study.trial_config(m, 0)
        got[m.name] = create_axis("activation", cfg.activation).estimator
        assert cfg.objective == base.objective and cfg.gradient == base.gradient
    assert got == {"relaxed": "relaxed", "reinforce": "reinforce", "rebar": "rebar",
                   "relax": "relax"}
