"""GDAS's hard Gumbel sample on the activation axis, with UNAS's estimators (REINFORCE, REBAR,
RELAX) for its discrete draw."""

from __future__ import annotations

import torch

from .activation import ACTIVATIONS
from .checks import require
from .estimators import ESTIMATORS, conditional_gumbel, log_prob, one_hot
from .gumbel import _GumbelBase
from .relax_control import RelaxControl
from .score import ScoreDraws


@ACTIVATIONS.register("gumbel_hard")
class GumbelHard(ScoreDraws, _GumbelBase):
    """GDAS (Dong & Yang, CVPR 2019): straight-through one-hot sample, one op run per edge.

    p = softmax((log softmax(α) + G)/τ), k = argmax p, weights h = one_hot(k) − sg(p) + p (value
    one-hot, gradient of p). Only op k of each edge is executed. τ anneals linearly
    τ_e = τ_max − (τ_max − τ_min)·e/(E − 1) (AutoDL-Projects GDAS.py) over E = the search's
    epochs. Evaluation mode uses softmax(α); measurement uses sampled networks
    (:meth:`sample`).

    Two forms of the edge (AutoDL-Projects ``search_cells.py``):

    * ``gdas`` (default; ``forward_gdas``, the form behind the published NAS-Bench-201 result,
      93.61 %): h_k·o_k(x) + Σ_{j≠k} h_j. The added h_j are exactly 0 in value but pass a
      gradient to every p_j, so every α of a sampled edge gets a gradient, even when the
      sampled op is ``none``.
    * ``v1`` (``forward_gdas_v1``): h_k·o_k(x) alone; α reaches the loss only through the
      sampled ops, and an α whose every sampled path is ``none`` gets a zero gradient.

    ``estimator`` (UNAS, Vahdat et al., CVPR 2020; :mod:`raydnas.axes.estimators`): how α
    gets its gradient from the sampled path. ``relaxed`` (default) is GDAS's straight-through
    gradient above. ``reinforce``: the weights are the plain one-hot sample b (no gradient
    through them; τ then plays no part) and α's gradient is (L − c)·∇ log p(b), L the α
    step's loss, c an exponential moving average of past L (``baseline_decay``; c = L at the
    first step): unbiased, where the relaxed gradient is not. ``rebar`` (Tucker et al. 2017):
    the same one-hot sample and score term, with REBAR's control variate instead of a baseline:
    the objective is also evaluated under the relaxed weights σ_λ(z) and σ_λ(z̃) (z = log p + G,
    z̃ its Gumbels conditioned on the sampled b; λ ``rebar_temperature``, η ``rebar_eta``),
    two more forward passes per α step; unbiased, lower variance. ``relax`` (Grathwohl et al.,
    ICLR 2018): REBAR's control variate plus a learned r_ρ (:mod:`raydnas.axes.relax_control`,
    ``relax_hidden`` units, Adam at ``relax_lr``), ρ stepped after each α step to reduce the
    estimator's variance; unbiased for any ρ.

    Args:
        tau0: initial temperature τ_max (GDAS 10).
        tau_min: final temperature (GDAS 0.1).
        anneal_epochs: epochs of the anneal; null = the search's epochs.
        form: ``gdas`` or ``v1`` (above).
        estimator: ``relaxed``, ``reinforce``, ``rebar`` or ``relax``.
        baseline_decay: the moving average's decay for ``reinforce`` (0.9).
        rebar_eta: REBAR's control-variate scale η (1.0).
        rebar_temperature: REBAR's relaxation temperature λ (0.5).
        relax_hidden: width of RELAX's r_ρ (32).
        relax_lr: Adam's learning rate for RELAX's ρ (1e-3).
    """

    FORMS = ("gdas", "v1")
    ESTIMATORS = ESTIMATORS

    def __init__(self, tau0: float = 10.0, tau_min: float = 0.1,
                 anneal_epochs: int | None = None, form: str = "gdas",
                 estimator: str = "relaxed", baseline_decay: float = 0.9,
                 rebar_eta: float = 1.0, rebar_temperature: float = 0.5,
                 relax_hidden: int = 32, relax_lr: float = 1e-3) -> None:
        super().__init__(tau0, tau_min, anneal_epochs)
        require(form in self.FORMS, "form", form, " or ".join(self.FORMS))
        self._init_score(estimator, self.ESTIMATORS, baseline_decay)
        require(isinstance(rebar_eta, (int, float)), "rebar_eta", rebar_eta, "a number")
        require(isinstance(rebar_temperature, (int, float)) and rebar_temperature > 0,
                "rebar_temperature", rebar_temperature, "a number > 0")
        require(isinstance(relax_hidden, int) and not isinstance(relax_hidden, bool)
                and relax_hidden >= 1, "relax_hidden", relax_hidden, "an integer >= 1")
        require(isinstance(relax_lr, (int, float)) and relax_lr > 0, "relax_lr", relax_lr,
                "a number > 0")
        self.relax = RelaxControl(relax_hidden, relax_lr) if estimator == "relax" else None
        self.form = form
        self.eta, self.lam = float(rebar_eta), float(rebar_temperature)
        self._hard = False  # the last weights() call drew a hard sample (training mode)

    def _fraction(self, epoch, total):
        return epoch / (total - 1) if total > 1 else 1.0

    def weights(self, alpha, training):
        self._hard = training
        if not training:
            self._forget_draws()
            return self.probs(alpha)
        if self.score_function:  # the one-hot sample itself; α learns through score_term
            g = self._gumbel(alpha)
            b = (torch.log_softmax(alpha, dim=-1) + g).detach().argmax(dim=-1)
            v = self._uniform(alpha) if self.estimator in ("rebar", "relax") else None
            self._keep_draw(alpha, (g, b, v))  # no graph kept: log p(b) is taken at the step
            return one_hot(b, alpha.shape[-1], alpha.dtype)
        p = self._soft_sample(alpha)
        hard = torch.zeros_like(p).scatter_(-1, p.detach().argmax(dim=-1, keepdim=True), 1.0)
        return hard - p.detach() + p

    def active_ops(self, cell_type, weights, zero_ops):
        if not self._hard:
            return super().active_ops(cell_type, weights, zero_ops)  # softmax(α) in eval mode
        idx = weights.detach().argmax(dim=1).tolist()
        return [[k] if k not in zero_ops else [] for k in idx]

    def _uniform(self, alpha: torch.Tensor) -> torch.Tensor:
        """REBAR's uniforms for the conditional Gumbels (frozen with the noise)."""
        key = ("v", id(alpha))
        if self._frozen is not None and key in self._frozen:
            return self._frozen[key]
        v = torch.rand_like(alpha.detach()).clamp(1e-12, 1 - 1e-12)
        if self._frozen is not None:
            self._frozen[key] = v
        return v

    def score_term(self, loss, alphas, objective):
        """REINFORCE: (L − c)·Σ log p(b); REBAR: [L − η·f(σ(z̃))]·Σ log p(b) + η·f(σ(z)) −
        η·f(σ(z̃)); RELAX: REBAR's with η·f + r_ρ for η·f; over the α of the forward that gave
        ``loss`` (its sample b)."""
        drawn = self._take_draws(alphas)
        if drawn is None:
            return 0.0
        L = float(loss.detach())
        logp = sum(log_prob(alphas[ct], b) for ct, (_, b, _) in drawn.items())
        if self.estimator == "reinforce":
            return self._reinforce(L, logp)
        soft_z = {ct: torch.softmax((torch.log_softmax(alphas[ct], -1) + g) / self.lam, -1)
                  for ct, (g, _, _) in drawn.items()}
        soft_zt = {ct: torch.softmax(conditional_gumbel(alphas[ct], b, v) / self.lam, -1)
                   for ct, (_, b, v) in drawn.items()}
        f_z, f_zt = objective(soft_z), objective(soft_zt)
        rebar = (L - self.eta * f_zt.detach()) * logp + self.eta * (f_z - f_zt)
        if self.relax is None:
            return rebar
        return rebar + self._relax_part(alphas, drawn)

    def _relax_part(self, alphas, drawn):
        """A term whose α-gradient is that of −r(σ(z̃))·log p(b) + r(σ(z)) − r(σ(z̃)) (r_ρ over
        every cell type's relaxed weights at once, the first r(σ(z̃)) constant in α but not in
        ρ). That gradient is taken here on its own graph and kept, with its graph in ρ, for
        :meth:`after_arch_step`: the α step's backward then never frees what ρ's step needs."""
        soft_z = {ct: torch.softmax((torch.log_softmax(alphas[ct], -1) + g) / self.lam, -1)
                  for ct, (g, _, _) in drawn.items()}
        soft_zt = {ct: torch.softmax(conditional_gumbel(alphas[ct], b, v) / self.lam, -1)
                   for ct, (_, b, v) in drawn.items()}
        logp = sum(log_prob(alphas[ct], b) for ct, (_, b, _) in drawn.items())
        r_c = self.relax({ct: w.detach() for ct, w in soft_zt.items()})
        part = -r_c * logp + self.relax(soft_z) - self.relax(soft_zt)
        g_r = self.relax.keep(alphas, part)
        return sum((alphas[ct] * g.detach()).sum() for ct, g in g_r.items())

    def after_arch_step(self, ctx):
        """RELAX: one step of ρ on the squared gradient the α step just used."""
        if self.relax is not None:
            self.relax.step(ctx.model.alphas)

    def state_dict(self):
        return {**super().state_dict(), **self._score_state(),
                **({"relax": self.relax.state_dict()} if self.relax is not None else {})}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self._load_score_state(state)
        if self.relax is not None:
            self.relax.load_state_dict(state.get("relax"))

    def edge_bias(self, weights, active):
        if self.form != "gdas" or not self._hard or self.score_function:
            return None
        # h_j for j ≠ the sampled op: one_hot − sg(p) + p = 0 in value, ∂/∂p_j = 1
        hard = weights.detach().argmax(dim=1, keepdim=True)
        others = torch.ones_like(weights).scatter_(1, hard, 0.0)
        return (weights * others).sum(dim=1)

    @torch.no_grad()
    def sample(self, alpha, generator):
        """A one-hot sampled network (argmax of log softmax(α) + G), as GDAS trains it; its
        search-time validation accuracy is that of such samples (AutoDL-Projects GDAS.py
        ``search_func``: one fresh sample per validation batch)."""
        g = self._seeded_gumbel(alpha, generator)
        k = (torch.log_softmax(alpha.detach(), dim=-1) + g).argmax(dim=-1, keepdim=True)
        return torch.zeros_like(alpha, dtype=alpha.dtype).scatter_(-1, k, 1.0)
