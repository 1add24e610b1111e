"""Architecture gradients checked against exact references on tiny CPU problems (float64)."""

from __future__ import annotations

import contextlib

import pytest
import torch
from helpers import FixedVal, batches, tiny_state
from torch import nn
from torch.func import functional_call

from raydnas.axes.gradient import Implicit, MixedLevel
from raydnas.search.run import train_step

D = torch.float64


def _flat(ts):
    return torch.cat([t.reshape(-1) for t in ts])


def _cos(a, b):
    return float(torch.nn.functional.cosine_similarity(_flat(a), _flat(b), dim=0))


def _snapshot(st):
    return ([p.detach().clone() for p in st.model.parameters()],
            [b.detach().clone() for b in st.model.buffers()],
            {id(p): {k: v.clone() for k, v in s.items() if torch.is_tensor(v)}
             for p, s in st.w_optimizer.state.items()})


def _assert_same(st, snap):
    ps, bs, opt = snap
    assert all(torch.equal(a, b) for a, b in zip(ps, st.model.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(bs, st.model.buffers()))
    for p, s in st.w_optimizer.state.items():
        assert all(torch.equal(v, opt[id(p)][k]) for k, v in s.items() if torch.is_tensor(v))


def test_unrolled_matches_autograd_through_the_virtual_step():
    """On this tiny supernet (BatchNorm over 8 images of 2x2 maps after two reductions) the
    loss is so curved that DARTS's radius r = 0.01 is far outside the finite difference's linear
    range; r = 1e-5 (float64) checks the estimator's math, and the FD error vanishes as r → 0."""
    torch.set_num_threads(1)
    st = tiny_state({"gradient": "unrolled"}, {"gradient": {"r": 1e-5}}, dtype=D,
                    optim={"w_lr": 0.1})
    train, val = batches(st, dtype=D)
    train_step(st, train, FixedVal(val))  # momentum buffers now exist
    model, opt = st.model, st.w_optimizer
    alphas = model.arch_parameters()
    names = [n for n, _ in model.named_weight_parameters()]
    weights = model.weight_parameters()
    group = opt.param_groups[0]
    mu, wd, xi = group["momentum"], group["weight_decay"], st.lr
    snap = _snapshot(st)

    # exact: ∇α L_val(w − ξ(μ·m + ∇w L_train(w, α) + wd·w), α) by autograd through the step
    g = torch.autograd.grad(st.loss(*train), weights, create_graph=True, allow_unused=True)
    w1 = {}
    for n, p, gi in zip(names, weights, g):
        if gi is None:
            w1[n] = p
        else:
            buf = opt.state[p]["momentum_buffer"]
            w1[n] = p - xi * (mu * buf + gi + wd * p)
    crit = nn.CrossEntropyLoss()
    exact = torch.autograd.grad(crit(functional_call(model, w1, (val[0],)), val[1]), alphas)
    w1d = {n: t.detach() for n, t in w1.items()}
    first = torch.autograd.grad(crit(functional_call(model, w1d, (val[0],)), val[1]), alphas)
    for p, s in zip(model.parameters(), snap[0]):
        p.data.copy_(s)
    for b, s in zip(model.buffers(), snap[1]):
        b.data.copy_(s)

    st.a_optimizer.zero_grad(set_to_none=True)
    st.gradient.arch_grad(st, train, val)
    est = [a.grad for a in alphas]
    cos_total = _cos(est, exact)
    cos_second = _cos([e - f for e, f in zip(est, first)], [e - f for e, f in zip(exact, first)])
    print(f"unrolled cosine: total {cos_total:.9f}, second-order term {cos_second:.9f}")
    assert cos_total >= 0.99
    assert cos_second >= 0.99
    # weights, BN buffers and the optimizer state are restored exactly
    _assert_same(st, snap)


class _Mix(nn.Module):
    """A supernet-shaped convex problem: logits = Σ_k softmax(α)_k · x W_k (3 linear ops)."""

    def __init__(self, d=4, c=3, ops=3):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.alphas = nn.ParameterDict({"normal": nn.Parameter(0.5 * torch.randn(1, ops, generator=g, dtype=D))})
        self.W = nn.Parameter(0.3 * torch.randn(ops, d, c, generator=g, dtype=D))

    def arch_parameters(self):
        return list(self.alphas.values())

    def weight_parameters(self):
        return [self.W]

    def forward(self, x):
        a = torch.softmax(self.alphas["normal"][0], -1)
        return torch.einsum("k,nd,kdc->nc", a, x, self.W)


class _Problem:
    """What an estimator reads from a search state, for the convex problem (μ‖W‖²/2 in L)."""

    def __init__(self, mu=0.5):
        from raydnas.axes.activation import Softmax
        from raydnas.axes.regularizer import NoRegularizer

        self.model, self.mu = _Mix(), mu
        self.activation, self.regularizer = Softmax(), NoRegularizer()
        self.w_optimizer = torch.optim.SGD(self.model.weight_parameters(), lr=0.1)
        self.lr = 0.1

    def loss(self, x, y):
        return nn.functional.cross_entropy(self.model(x), y) + self.mu / 2 * self.model.W.pow(2).sum()

    arch_loss = loss

    def penalty(self):
        return self.regularizer.penalty(self)

    def frozen_noise(self):
        return self.activation.frozen_noise()


def _exact_implicit(pb, train, val):
    m = pb.model
    alpha = m.alphas["normal"]
    shape = m.W.shape

    def l_tr(wf, a):
        with _swap(m, wf.view(shape), a):
            return pb.loss(*train)

    def l_val(wf, a):
        with _swap(m, wf.view(shape), a):
            return pb.loss(*val)

    wf, a = m.W.detach().reshape(-1), alpha.detach()
    H = torch.autograd.functional.hessian(lambda w: l_tr(w, a), wf)
    cross = torch.autograd.functional.jacobian(
        lambda aa: torch.autograd.functional.jacobian(lambda w: l_tr(w, aa), wf, create_graph=True), a)
    gw_val, ga_val = torch.autograd.functional.jacobian(l_val, (wf, a))
    cross = cross.reshape(wf.numel(), -1)  # d(∇w L_tr)/dα
    g = ga_val.reshape(-1) - cross.T @ torch.linalg.solve(H, gw_val)
    return g, torch.linalg.eigvalsh(H)


@contextlib.contextmanager
def _swap(m, W, a):
    oldW, olda = m.W, m.alphas["normal"]
    del m.W
    m.W = W
    m.alphas._parameters["normal"] = a
    try:
        yield
    finally:
        del m.W
        m.W = oldW
        m.alphas._parameters["normal"] = olda


def test_implicit_approaches_the_exact_implicit_gradient():
    torch.set_num_threads(1)
    pb = _Problem(mu=0.03)  # ill-conditioned enough that the series needs its terms
    g = torch.Generator().manual_seed(1)
    train = (torch.randn(32, 4, generator=g, dtype=D), torch.randint(0, 3, (32,), generator=g))
    val = (torch.randn(32, 4, generator=g, dtype=D), torch.randint(0, 3, (32,), generator=g))
    exact, eig = _exact_implicit(pb, train, val)
    assert eig.min() > 0  # strongly convex: the implicit gradient exists
    gamma = 1.0 / float(eig.max())
    cos = {}
    for K in (0, 1, 2, 5, 10, 20, 40):
        pb.model.alphas["normal"].grad = None
        w0 = pb.model.W.detach().clone()
        Implicit(K=K, gamma=gamma).arch_grad(pb, train, val)
        assert torch.equal(pb.model.W, w0)  # weights untouched
        cos[K] = _cos([pb.model.alphas["normal"].grad.reshape(-1)], [exact])
    print("implicit cosine by K: " + ", ".join(f"K={k}: {c:.4f}" for k, c in cos.items()))
    ks = sorted(cos)
    assert all(cos[b] >= cos[a] - 1e-9 for a, b in zip(ks, ks[1:])), cos
    assert cos[20] >= 0.95 and cos[20] > cos[0] + 0.5


def test_implicit_restores_the_supernet_exactly():
    torch.set_num_threads(1)
    st = tiny_state({"gradient": "implicit"}, params={"gradient": {"inner_steps": 2}}, dtype=D)
    train, val = batches(st, dtype=D)
    train_step(st, train, FixedVal(val))
    snap = _snapshot(st)
    st.a_optimizer.zero_grad(set_to_none=True)
    st.gradient.arch_grad(st, train, val)
    assert all(a.grad is not None and torch.isfinite(a.grad).all()
               for a in st.model.arch_parameters())
    _assert_same(st, snap)


@pytest.mark.parametrize("lam", [1.0, 0.3])
def test_mixed_level_is_the_sum_of_the_two_gradients(lam):
    torch.set_num_threads(1)
    st = tiny_state({"gradient": "mixed_level"}, params={"gradient": {"lam": lam}}, dtype=D)
    train, val = batches(st, dtype=D)
    alphas = st.model.arch_parameters()
    g_tr = torch.autograd.grad(st.loss(*train), alphas)
    g_val = torch.autograd.grad(st.loss(*val), alphas)
    st.a_optimizer.zero_grad(set_to_none=True)
    st.gradient.arch_grad(st, train, val)
    for a, gt, gv in zip(alphas, g_tr, g_val):
        torch.testing.assert_close(a.grad, gt + lam * gv, rtol=1e-10, atol=1e-12)


def test_single_level_takes_alpha_gradient_from_the_training_loss():
    torch.set_num_threads(1)
    st = tiny_state({"gradient": "single_level"}, dtype=D)
    train, _ = batches(st, dtype=D)
    alphas = st.model.arch_parameters()
    ref = torch.autograd.grad(st.loss(*train), alphas)
    train_step(st, train, None)  # no validation batches at all
    assert st.alpha_steps == 1
    for a, r in zip(alphas, ref):
        torch.testing.assert_close(a.grad, r, rtol=1e-10, atol=1e-12)


def test_gradient_hyperparameters_are_checked():
    from raydnas.axes.checks import AxisParamError

    for bad in ({"K": -1}, {"gamma": 0}, {"inner_steps": 1.5}):
        with pytest.raises(AxisParamError):
            Implicit(**bad)
    with pytest.raises(AxisParamError):
        MixedLevel(lam=-1)
    with pytest.raises(AxisParamError):
        MixedLevel(early_stop_at=[6, "x"])
