"""REINFORCE for the continuous sampled activations (``gumbel`` and ``dirichlet`` with
``estimator: reinforce``, :mod:`raydnas.axes.score`): the estimate through each activation's own
draw and density is unbiased against an exact gradient (the Concrete by quadrature with scipy,
the Dirichlet by its closed-form moments, differentiated by autograd), and on a real supernet
α's gradient is the written-out (L − c)·∇ log q(w)."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import batches, tiny_cfg, tiny_state
from scipy import integrate
from torch.distributions.relaxed_categorical import ExpRelaxedCategorical

from raydnas.axes.dirichlet import Dirichlet
from raydnas.axes.gradient import FirstOrder
from raydnas.axes.gumbel import Gumbel
from raydnas.errors import ConfigError


def _estimates(act, alpha, f, n, seed):
    """Per-draw REINFORCE estimates (baseline 0) of ∇_α E[f(w)]: one draw per row of a
    repeated α, through the activation's own sampler and density."""
    torch.manual_seed(seed)
    a = alpha.detach().expand(n, *alpha.shape).clone().requires_grad_(True)
    w = act.weights(a, True)
    assert not w.requires_grad  # the draw itself: no pathwise gradient
    draw = act._drawn[id(a)]
    logq = act.log_density(a, draw).sum(-1)  # per draw
    (g,) = torch.autograd.grad((f(w).detach() * logq).sum(), a)
    return g


def _within(g, exact, k=4.0):
    mean, se = g.mean(0), g.std(0) / g.shape[0] ** 0.5
    return bool((abs(mean - exact) <= k * se + 1e-9).all()), mean, se


def test_concrete_reinforce_is_unbiased_against_quadrature():
    """Two ops: w₀ = σ((Δ + L)/τ), Δ = α₀ − α₁, L ~ Logistic(0, 1), so E f = ∫ f p(l) dl and
    ∂E/∂α₀ = −∂E/∂α₁ = E'(Δ), by quadrature and a central difference."""
    tau = 0.7
    act = Gumbel(tau0=tau, tau_min=tau, estimator="reinforce")
    alpha = torch.tensor([[0.4, -0.3]], dtype=torch.float64)

    def f(w):  # [..., 1 edge, 2 ops] -> one value per draw
        return 2.0 * w[..., 0, 0] ** 2 - w[..., 0, 1] + 3.0 * w[..., 0, 0] * w[..., 0, 1]

    def expect(delta):
        def integrand(x):
            w0 = 1.0 / (1.0 + math.exp(-(delta + x) / tau))
            return (2 * w0 ** 2 - (1 - w0) + 3 * w0 * (1 - w0)) * math.exp(-x) / (
                1 + math.exp(-x)) ** 2
        return integrate.quad(integrand, -60, 60, epsabs=1e-12, epsrel=1e-12, limit=200)[0]

    d, h = float(alpha[0, 0] - alpha[0, 1]), 1e-4
    dE = (expect(d + h) - expect(d - h)) / (2 * h)
    exact = torch.tensor([[dE, -dE]], dtype=torch.float64)
    g = torch.cat([_estimates(act, alpha, f, 5000, s) for s in range(8)])
    ok, mean, se = _within(g, exact)
    assert ok, (mean, exact, se)
    assert float(se.max()) < 0.05  # tight enough that a wrong density would show


def test_dirichlet_reinforce_is_unbiased_against_the_closed_form_moments():
    """E[w_i] = β_i/S, E[w₀w₁] = β₀β₁/(S(S + 1)), S = Σβ, β = elu(α) + 1."""
    act = Dirichlet(estimator="reinforce")
    alpha = torch.tensor([[0.3, -0.4, 0.8], [0.0, 0.5, -0.2]], dtype=torch.float64)
    c = torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.0, 1.2]], dtype=torch.float64)

    def f(w):
        return (c * w).sum((-1, -2)) + 4.0 * w[..., 0, 0] * w[..., 0, 1]

    a = alpha.clone().requires_grad_(True)
    beta = torch.nn.functional.elu(a) + 1
    s = beta.sum(-1)
    mean_w = beta / s.unsqueeze(-1)
    exact_e = (c * mean_w).sum() + 4.0 * beta[0, 0] * beta[0, 1] / (s[0] * (s[0] + 1))
    (exact,) = torch.autograd.grad(exact_e, a)
    g = torch.cat([_estimates(act, alpha, f, 5000, s) for s in range(8)])
    ok, mean, se = _within(g, exact)
    assert ok, (mean, exact, se)
    assert float(se.max()) < 0.05


def test_the_score_needs_the_density_not_the_pathwise_gradient():
    """The same draws scored with a wrong τ in the Concrete density give a biased mean: the
    test above can fail."""
    act = Gumbel(tau0=0.7, tau_min=0.7, estimator="reinforce")
    alpha = torch.tensor([[0.4, -0.3]], dtype=torch.float64)
    torch.manual_seed(0)
    n = 40000
    a = alpha.expand(n, 1, 2).clone().requires_grad_(True)
    w = act.weights(a, True)
    log_z, _ = act._drawn[id(a)]
    f = 2.0 * w[..., 0, 0] ** 2 - w[..., 0, 1] + 3.0 * w[..., 0, 0] * w[..., 0, 1]
    right = torch.autograd.grad((f.detach() * act.log_density(a, (log_z, 0.7)).sum(-1)).sum(),
                                a)[0]
    wrong = torch.autograd.grad((f.detach() * act.log_density(a, (log_z, 2.0)).sum(-1)).sum(),
                                a)[0]
    diff = (right - wrong).mean(0)
    se = (right - wrong).std(0) / n ** 0.5
    assert float(abs(diff).max()) > 6 * float(se.max())


@pytest.mark.parametrize("name", ["gumbel", "dirichlet"])
def test_on_the_supernet_alpha_gets_the_written_out_score_gradient(name):
    params = {"activation": {"estimator": "reinforce", "baseline_decay": 0.5}}
    st = tiny_state({"activation": name}, params)
    act = st.model.activation
    tr, va = batches(st)
    st.model.train()
    alphas = dict(st.model.alphas)
    for step in range(2):
        c = act._baseline
        for a in alphas.values():
            a.grad = None
        with st.frozen_noise():
            FirstOrder().arch_grad(st, tr, va)
            got = [a.grad.clone() for a in alphas.values()]
            frozen = {ct: act._frozen[id(a)] for ct, a in alphas.items()}
            with torch.no_grad():
                L = float(st.loss(*va))
        if name == "gumbel":  # the frozen Gumbels G: log Z = log softmax((log p + G)/τ)
            draws = {ct: (torch.log_softmax((torch.log_softmax(a, -1) + frozen[ct]) / act.tau,
                                            -1).detach(), act.tau) for ct, a in alphas.items()}
            logq = sum(ExpRelaxedCategorical(torch.tensor(act.tau), logits=a)
                       .log_prob(draws[ct][0]).sum() for ct, a in alphas.items())
        else:  # the frozen draw w itself
            logq = sum(torch.distributions.Dirichlet(torch.nn.functional.elu(a) + 1)
                       .log_prob(frozen[ct]).sum() for ct, a in alphas.items())
        c = L if c is None else c
        want = torch.autograd.grad((L - c) * logq, list(alphas.values()))
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-7)
        assert act._baseline == pytest.approx(0.5 * c + 0.5 * L)
        with torch.no_grad():
            for a in alphas.values():
                a -= 0.5 * a.grad
    assert any(float(g.abs().sum()) > 0 for g in got)
    # the baseline resumes
    other = tiny_state({"activation": name}, params)
    other.model.activation.load_state_dict(act.state_dict())
    assert other.model.activation._baseline == act._baseline


@pytest.mark.parametrize("name,params,key,allowed", [
    ("gumbel", {"estimator": "rebar"}, "activation.estimator", "relaxed, reinforce"),
    ("dirichlet", {"estimator": "relax"}, "activation.estimator", "relaxed, reinforce"),
    ("dirichlet", {"estimator": "reinforce", "baseline_decay": 1.0},
     "activation.baseline_decay", "[0, 1)"),
])
def test_what_a_continuous_activation_cannot_estimate_is_one_line(name, params, key, allowed):
    with pytest.raises(ConfigError) as e:
        tiny_cfg({"activation": name}, {"activation": params})
    msg = str(e.value)
    assert "\n" not in msg and key in msg and allowed in msg, msg
