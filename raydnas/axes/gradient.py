"""Gradient axis: how α gets its gradient.

An estimator writes ``.grad`` of every α (and nothing else) from a training batch and, for
bilevel methods, a validation batch. It reads what it needs from the loop's
:class:`~raydnas.axes.base.SearchContext` ``ctx``: ``ctx.model``, ``ctx.arch_loss(x, y)``
(criterion + regularizer penalty), ``ctx.loss(x, y)`` (plain criterion), ``ctx.penalty()``,
``ctx.frozen_noise()``, ``ctx.w_optimizer`` and ``ctx.lr`` (the current weight learning rate).

Estimators that perturb the weights (``unrolled``, ``implicit``) restore every weight and buffer
(BatchNorm statistics included) bit for bit afterwards, never touch the optimizer's state, and
hold a stochastic activation's noise fixed for the whole α step (``activation.frozen_noise``).
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator

import torch

from ..registry import Registry
from .base import AxisChoice, Batch, SearchContext
from .bookkeeping import ModelSizeBook
from .checks import require

GRADIENTS: Registry["ArchGradient"] = Registry("gradient", default="first_order")


class ArchGradient(AxisChoice):
    """Base class: :meth:`arch_grad` is the estimator."""

    #: the estimator reads a validation batch (False: no val split needed)
    needs_val: bool = True
    #: α gets its gradient from the weight step's own backward (single-level): the loop adds
    #: ``ctx.penalty()`` to the weight step's loss and steps α after it; ``arch_grad`` is then
    #: the same gradient computed on its own
    joint: bool = False
    #: the plain estimator (first order): one backward of the α loss, nothing more (an
    #: α-free activation accepts only this, which without α steps does nothing)
    plain: bool = False

    def arch_grad(self, ctx: SearchContext, train_batch: Batch,
                  val_batch: Batch | None) -> None:
        """Write ``.grad`` of every α (``ctx.model.arch_parameters()``), nothing else: the α
        optimizer steps right after. ``val_batch`` is None when ``needs_val`` is False.
        Anything the estimator perturbs (weights, BatchNorm buffers) is restored bit for bit."""
        raise NotImplementedError


def set_arch_grad(alphas: list[torch.Tensor], grads) -> None:
    """Add ``grads`` to the α's ``.grad``. An α that the loss did not use (``None``: e.g. every
    sampled path of a GDAS edge was ``none``) gets a zero gradient, not an error."""
    for a, g in zip(alphas, grads):
        g = torch.zeros_like(a) if g is None else g.detach()
        a.grad = g if a.grad is None else a.grad + g


@contextlib.contextmanager
def exact_restore(model: torch.nn.Module, weights: list[torch.Tensor]) -> Iterator[None]:
    """Weights and buffers are copied back bit for bit when the block exits."""
    saved_w = [p.detach().clone() for p in weights]
    saved_b = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for p, s in zip(weights, saved_w):
                p.copy_(s)
            for b, s in saved_b:
                b.copy_(s)


def sgd_direction(opt: torch.optim.Optimizer, p: torch.Tensor, g: torch.Tensor,
                  buf: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The step direction torch's SGD would take for ``p`` with gradient ``g`` (no clipping).

    d = g + wd·p; with momentum μ: b' = μ·b + (1 − dampening)·d (b' = d on the first step) and
    d = b' (or d + μ·b' with Nesterov). Returns (d, b'). DARTS's virtual step
    w − ξ(μ·m + ∇L + wd·w) is this with dampening 0.
    """
    group = next(gr for gr in opt.param_groups if any(q is p for q in gr["params"]))
    d = g + group["weight_decay"] * p if group["weight_decay"] else g
    mu = group["momentum"]
    if not mu:
        return d, None
    nb = d.clone() if buf is None else mu * buf + (1 - group["dampening"]) * d
    return (d + mu * nb if group["nesterov"] else nb), nb


def _grads(loss, params, **kw):
    return torch.autograd.grad(loss, params, allow_unused=True, **kw)


@GRADIENTS.register("first_order")
class FirstOrder(ArchGradient):
    """DARTS-V1: g_α = ∇_α L_val(w, α) (Liu et al. 2019, §2.3 with ξ = 0).

    The gradient is taken for α only (``torch.autograd.grad``): no weight gradients are built.
    """

    plain = True

    def arch_grad(self, ctx, train_batch, val_batch):
        alphas = ctx.model.arch_parameters()
        loss = ctx.arch_objective(train_batch, val_batch)  # arch_loss(val) unless gen_gap
        set_arch_grad(alphas, _grads(loss, alphas))


@GRADIENTS.register("unrolled")
class Unrolled(ArchGradient):
    """DARTS-V2 second order (Liu et al. 2019, Eq. 7–8; quark0/darts ``architect.py``).

    w′ = w − ξ·(μ·m + ∇_w L_train(w, α) + wd·w), the step the weight optimizer would take (its
    momentum buffer m and weight decay; no clipping), ξ = the current weight learning rate;
    g_α = ∇_α L_val(w′, α) − ξ·[∇_α L_train(w⁺, α) − ∇_α L_train(w⁻, α)] / (2ε), with
    w^± = w ± ε·v, v = ∇_{w′} L_val(w′, α), ε = r/‖v‖₂. The same training batch serves the
    virtual step and both finite differences; the perturbation is applied to the current w.
    Weights, BatchNorm buffers and the optimizer state are exactly as before afterwards.

    Args:
        r: finite-difference radius r of ε = r/‖v‖ (DARTS 0.01).
    """

    def __init__(self, r: float = 0.01) -> None:
        require(isinstance(r, (int, float)) and r > 0, "r", r, "a number > 0")
        self.r = float(r)

    def arch_grad(self, ctx, train_batch, val_batch):
        model = ctx.model
        alphas, weights = model.arch_parameters(), model.weight_parameters()
        xi, opt = ctx.lr, ctx.w_optimizer
        na = len(alphas)
        with ctx.frozen_noise(), exact_restore(model, weights):
            w0 = [p.detach().clone() for p in weights]
            gw = _grads(ctx.loss(*train_batch), weights)
            with torch.no_grad():
                for p, g in zip(weights, gw):
                    if g is not None:  # torch's SGD leaves gradient-less weights alone
                        buf = opt.state.get(p, {}).get("momentum_buffer")
                        p.sub_(xi * sgd_direction(opt, p, g, buf)[0])
            out = _grads(ctx.arch_loss(*val_batch), alphas + weights)
            g_val, v = out[:na], out[na:]
            norm = math.sqrt(sum(float(x.pow(2).sum()) for x in v if x is not None))
            if norm > 0 and xi > 0:
                eps = self.r / norm
                fd = []
                for sign in (1.0, -1.0):
                    with torch.no_grad():
                        for p, p0, vi in zip(weights, w0, v):
                            p.copy_(p0 if vi is None else p0 + sign * eps * vi)
                    fd.append(_grads(ctx.loss(*train_batch), alphas))
                g_val = [gv - xi * _sub(gp, gm) / (2 * eps) if gv is not None else None
                         for gv, gp, gm in zip(g_val, *fd)]
        set_arch_grad(alphas, g_val)


def _sub(a, b):
    if a is None:
        return -b if b is not None else 0.0
    return a - b if b is not None else a


@GRADIENTS.register("implicit")
class Implicit(ArchGradient):
    """iDARTS (Zhang et al., ICML 2021): implicit-function hypergradient with a Neumann series.

    g_α = ∇_α L_val(w, α) − γ·∇²_{αw} L_train(w, α)·p,  p = Σ_{j=0..K} v_j,
    v_0 = ∇_w L_val(w, α),  v_{j+1} = v_j − γ·∇²_{ww} L_train(w, α)·v_j,
    i.e. H⁻¹ ≈ γ Σ_j (I − γH)^j. Both the Hessian-vector products and the mixed product
    ∇²_{αw}L_train·p are exact (double backprop through one graph of ∇_w L_train on one
    training batch) — no finite difference, so no perturbation is left in the weights.

    **The T inner steps.** In iDARTS every α step follows T weight steps on training batches
    (NB201 notebook T = 4; NAS-Bench-1Shot1 code T = 5). Here those are the search loop's own,
    real weight steps: pair this estimator with ``schedule: {name: interval, every: T}`` (as
    ``configs/idarts.yaml`` does) and α steps at the weights reached after T real steps.
    ``inner_steps`` adds optional *virtual* steps (the optimizer's rule, on the current training
    batch, undone afterwards), for a look-ahead variant; the iDARTS default is 0 extra.

    Args:
        K: Neumann recursions, terms v_0..v_K (iDARTS code K = 2).
        gamma: Neumann step γ; null = the current weight learning rate (iDARTS ``eta``).
        inner_steps: virtual weight steps before the hypergradient (default 0, see above).
    """

    def __init__(self, K: int = 2, gamma: float | None = None, inner_steps: int = 0) -> None:
        require(isinstance(K, int) and not isinstance(K, bool) and K >= 0, "K", K,
                "an integer >= 0")
        require(gamma is None or (isinstance(gamma, (int, float)) and gamma > 0), "gamma", gamma,
                "null (the weight learning rate) or a number > 0")
        require(isinstance(inner_steps, int) and inner_steps >= 0, "inner_steps", inner_steps,
                "an integer >= 0")
        self.K, self.gamma, self.inner_steps = K, gamma, inner_steps

    def arch_grad(self, ctx, train_batch, val_batch):
        model = ctx.model
        alphas, weights = model.arch_parameters(), model.weight_parameters()
        gamma = self.gamma if self.gamma is not None else ctx.lr
        na = len(alphas)
        with ctx.frozen_noise(), exact_restore(model, weights):
            bufs = {}
            for _ in range(self.inner_steps):
                gw = _grads(ctx.loss(*train_batch), weights)
                with torch.no_grad():
                    for p, g in zip(weights, gw):
                        if g is None:
                            continue
                        b = bufs.get(p, ctx.w_optimizer.state.get(p, {}).get("momentum_buffer"))
                        d, bufs[p] = sgd_direction(ctx.w_optimizer, p, g, b)
                        p.sub_(ctx.lr * d)
            out = _grads(ctx.arch_loss(*val_batch), alphas + weights)
            g_val, v = out[:na], out[na:]
            gw = _grads(ctx.loss(*train_batch), weights, create_graph=True)
            idx = [i for i, g in enumerate(gw) if g is not None and g.requires_grad]
            gw_u = [gw[i] for i in idx]
            w_u = [weights[i] for i in idx]
            vj = [v[i] if v[i] is not None else torch.zeros_like(weights[i]) for i in idx]
            p = [x.clone() for x in vj]
            for _ in range(self.K):
                hv = _grads(gw_u, w_u, grad_outputs=vj, retain_graph=True)
                vj = [x - gamma * h if h is not None else x for x, h in zip(vj, hv)]
                p = [a + b for a, b in zip(p, vj)]
            cross = _grads(gw_u, alphas, grad_outputs=p) if gw_u else [None] * na
            g = [gv - gamma * c if c is not None else gv for gv, c in zip(g_val, cross)]
        set_arch_grad(alphas, g)


class _SizeBookMixin:
    """Adds MiLeNAS's per-epoch model-size bookkeeping (see :mod:`.bookkeeping`)."""

    book: ModelSizeBook | None

    def epoch_metrics(self, ctx, genotype, metrics):
        return self.book.update(metrics["epoch"], metrics["val_acc"], genotype) if self.book \
            else {}

    def stop(self, ctx, genotype, metrics):
        return self.book.stop(genotype) if self.book else None

    def state_dict(self):
        return {"book": self.book.state_dict()} if self.book else {}

    def load_state_dict(self, state):
        if self.book and "book" in state:
            self.book.load_state_dict(state["book"])


@GRADIENTS.register("mixed_level")
class MixedLevel(_SizeBookMixin, ArchGradient):
    """MiLeNAS (He et al., CVPR 2020), first order: g_α = ∇_α L_train + λ·∇_α L_val (Eq. 6).

    λ multiplies the validation term as in the paper's Eq. 6 (the public code weights the train
    term; both agree at the published λ = 1). The regularizer penalty, if any, is added once.
    Every epoch the conv ops of the derived cells are counted and the best validation accuracy
    per count is kept with its epoch and genotype (MiLeNAS §3.3 "model size based search").

    Args:
        lam: λ (MiLeNAS λ = 1 for all CIFAR-10 searches, §4.3; 0.1 and 999 also studied).
        size_book: keep the per-size bookkeeping (metrics ``conv_ops_*``, ``size_best``).
        early_stop_at: stop the search when the derived cells reach these conv counts, one per
            cell type in space order, e.g. ``[6, 0]`` (MiLeNAS, CIFAR-10 / DARTS space), or a list
            of such lists; null = never.
    """

    def __init__(self, lam: float = 1.0, size_book: bool = True,
                 early_stop_at: list | None = None) -> None:
        require(isinstance(lam, (int, float)) and not isinstance(lam, bool) and lam >= 0,
                "lam", lam, "a number >= 0")
        require(isinstance(size_book, bool), "size_book", size_book, "true or false")
        require(early_stop_at is None or size_book, "early_stop_at", early_stop_at,
                "null when size_book is false")
        self.lam = float(lam)
        self.book = ModelSizeBook(early_stop_at) if size_book else None

    def arch_grad(self, ctx, train_batch, val_batch):
        alphas = ctx.model.arch_parameters()
        loss = ctx.loss(*train_batch) + self.lam * ctx.loss(*val_batch) \
            + ctx.penalty()
        set_arch_grad(alphas, _grads(loss, alphas))


@GRADIENTS.register("single_level")
class SingleLevel(ArchGradient):
    """SNAS (Xie et al., ICLR 2019): α and w from the training loss in one backward pass.

    The search loop runs the weight step's backward with α requiring grad (``joint``) and adds
    the regularizer penalty (e.g. SNAS's resource term) to that loss; no validation split is
    used. ``arch_grad`` (not used by the loop) computes the same α gradient on its own.
    """

    needs_val = False
    joint = True

    def arch_grad(self, ctx, train_batch, val_batch=None):
        alphas = ctx.model.arch_parameters()
        set_arch_grad(alphas, _grads(ctx.arch_loss(*train_batch), alphas))
