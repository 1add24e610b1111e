"""Gradient estimators for α of a sampled one-hot architecture (UNAS, Vahdat et al., CVPR 2020):
how ∇_α E_{b ~ Cat(softmax α)}[f(b)] is estimated when f is seen only at the sample.

Per edge, b = one_hot(argmax(log p + G)) with p = softmax(α), G ~ Gumbel(0, 1) (the Gumbel-max
sample of Cat(p)).

* ``relaxed``: what GDAS does (:class:`raydnas.axes.gumbel_hard.GumbelHard`): the straight-through
  gradient of the tempered softmax; biased, low variance.
* ``reinforce`` (Williams 1992): ĝ = (f(b) − c)·∇_α log p(b), with c a baseline that does not
  depend on b (a moving average of f); unbiased for any such c.
* ``rebar`` (Tucker et al., NeurIPS 2017), for an f that is also defined on relaxed vectors:
  with z = log p + G, the relaxation σ_λ(z) = softmax(z/λ), and z̃ drawn from the Gumbels
  *conditioned* on the sampled argmax b,
  ĝ = [f(b) − η·f(σ_λ(z̃))]·∇ log p(b) + η·∇f(σ_λ(z)) − η·∇f(σ_λ(z̃)), unbiased for any η
  (E[∇f(σ_λ(z))] = ∇E[f(σ_λ(z))] = E[f(σ_λ(z̃))∇log p(b)] + E[∇f(σ_λ(z̃))]).
  Conditional sample (truncated Gumbels): z̃_b = −log(−log v_b),
  z̃_i = −log(−log v_i / p_i − log v_b) for i ≠ b, v ~ U(0, 1).
* ``relax`` (Grathwohl et al., ICLR 2018): REBAR with a learned control variate
  c(w) = η·f(w) + r_ρ(w) in place of η·f(w) (w = σ_λ(z) or σ_λ(z̃)):
  ĝ = [f(b) − c(σ_λ(z̃))]·∇ log p(b) + ∇c(σ_λ(z)) − ∇c(σ_λ(z̃)), unbiased for any r_ρ (the
  same identity). ρ is trained to minimize the estimator's variance: E[ĝ] does not depend on
  ρ, so ∇_ρ Var(ĝ) = ∇_ρ E[ĝ²], taken through the r_ρ terms of ĝ (:func:`variance_loss`).

Each function returns a **surrogate**: a scalar whose gradient (autograd) is the estimator;
its value is not the objective. ``tests/test_estimators.py`` checks each against the exact
gradient Σ_k f(e_k)·∇p_k computed by enumeration, over many draws.
"""

from __future__ import annotations

from typing import Callable

import torch

ESTIMATORS = ("relaxed", "reinforce", "rebar", "relax")


def gumbel_max(alpha: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(z = log p + G, b = argmax z) per row of ``alpha``; G = −log(−log u), u uniforms."""
    z = torch.log_softmax(alpha, dim=-1) - torch.log(-torch.log(u))
    return z, z.detach().argmax(dim=-1)


def log_prob(alpha: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log p(b) = Σ over the rows (edges) of log softmax(α)[b_row]; leading dims (draws) kept."""
    return torch.log_softmax(alpha, dim=-1).gather(-1, b.unsqueeze(-1)).squeeze(-1).sum(-1)


def one_hot(b: torch.Tensor, k: int, dtype=torch.float32) -> torch.Tensor:
    """The one-hot rows of indices ``b`` over ``k`` ops."""
    return torch.nn.functional.one_hot(b, k).to(dtype)


def conditional_gumbel(alpha: torch.Tensor, b: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """z̃ ~ (log p + G | argmax = b), reparameterized in α through p (module docstring)."""
    p = torch.softmax(alpha, dim=-1)
    vb = v.gather(-1, b.unsqueeze(-1))
    top = -torch.log(-torch.log(vb))
    others = -torch.log(-torch.log(v) / p - torch.log(vb))
    mask = one_hot(b, alpha.shape[-1], alpha.dtype).bool()
    return torch.where(mask, top.expand_as(others), others)


def reinforce_surrogate(alpha: torch.Tensor, b: torch.Tensor, f_b: torch.Tensor | float,
                        baseline: float = 0.0) -> torch.Tensor:
    """Σ over draws of (f(b) − c)·log p(b), f(b) and c held constant: its gradient is
    REINFORCE's (``alpha`` [..., rows, ops], ``b`` [..., rows], ``f_b`` [...] or a number)."""
    f = f_b.detach() if isinstance(f_b, torch.Tensor) else torch.tensor(float(f_b))
    return ((f - baseline) * log_prob(alpha, b)).sum()


def rebar_surrogate(alpha: torch.Tensor, f: Callable[[torch.Tensor], torch.Tensor],
                    u: torch.Tensor, v: torch.Tensor, eta: float = 1.0, lam: float = 0.5,
                    r: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """REBAR's surrogate, summed over draws (uniforms ``u`` for the samples, ``v`` for the
    conditionals): f takes [..., rows, ops] one-hot or relaxed matrices to one value per
    draw [...]. With ``r`` (same signature): RELAX's, control variate η·f + r."""
    z, b = gumbel_max(alpha, u)
    zt = conditional_gumbel(alpha, b, v)
    hard = one_hot(b, alpha.shape[-1], alpha.dtype)

    def c(w: torch.Tensor) -> torch.Tensor:
        return eta * f(w) + (r(w) if r is not None else 0.0)

    c_t = c(torch.softmax(zt / lam, dim=-1))
    score = (f(hard).detach() - c_t.detach()) * log_prob(alpha, b)
    return (score + c(torch.softmax(z / lam, dim=-1)) - c_t).sum()


def variance_loss(g_total: torch.Tensor, g_r: torch.Tensor) -> torch.Tensor:
    """Σ ĝ², differentiable in ρ through ``g_r`` (the r_ρ part of ĝ, built with a graph);
    ``g_total``: the whole estimate (any ρ-free term added to it shifts E[ĝ²] by a constant
    in ρ, as E[ĝ] does not depend on ρ)."""
    return ((g_total.detach() - g_r.detach() + g_r) ** 2).sum()
