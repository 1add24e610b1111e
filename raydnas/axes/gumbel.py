"""The Gumbel relaxations of the activation axis: SNAS's soft sample and GDAS's hard one."""

from __future__ import annotations

import torch

from .activation import ACTIVATIONS, Stochastic
from .base import SearchContext
from .checks import require
from .estimators import ESTIMATORS, conditional_gumbel, log_prob, one_hot
from .relax_control import RelaxControl


class _GumbelBase(Stochastic):
    """Shared by the Gumbel relaxations: linear temperature anneal and frozen noise."""

    def __init__(self, tau0: float, tau_min: float, anneal_epochs: int | None) -> None:
        require(isinstance(tau0, (int, float)) and tau0 > 0, "tau0", tau0, "a number > 0")
        require(isinstance(tau_min, (int, float)) and 0 < tau_min <= tau0, "tau_min", tau_min,
                f"a number in (0, tau0 = {tau0}]")
        require(anneal_epochs is None or (isinstance(anneal_epochs, int) and anneal_epochs >= 1),
                "anneal_epochs", anneal_epochs, "null (the search's epochs) or an integer >= 1")
        self.tau0, self.tau_min, self.anneal_epochs = float(tau0), float(tau_min), anneal_epochs
        self.tau = float(tau0)
        self._frozen: dict[int, torch.Tensor] | None = None

    def _fraction(self, epoch: int, total: int) -> float:
        raise NotImplementedError

    def start_epoch(self, ctx: SearchContext) -> None:
        total = self.anneal_epochs or ctx.epochs
        f = min(1.0, max(0.0, self._fraction(ctx.epoch, total)))
        self.tau = self.tau0 - (self.tau0 - self.tau_min) * f

    def probs(self, alpha):
        return torch.softmax(alpha, dim=-1)

    def _gumbel(self, alpha: torch.Tensor) -> torch.Tensor:
        """G = −log(E), E ~ Exp(1) (= −log(−log U)); redrawn if not finite."""
        if self._frozen is not None and id(alpha) in self._frozen:
            return self._frozen[id(alpha)]
        while True:
            g = -torch.empty_like(alpha.detach(), memory_format=torch.contiguous_format) \
                .exponential_().log()
            if torch.isfinite(g).all():
                break
        if self._frozen is not None:
            self._frozen[id(alpha)] = g
        return g

    def _soft_sample(self, alpha: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        g = self._gumbel(alpha) if noise is None else noise
        logits = (torch.log_softmax(alpha, dim=-1) + g) / self.tau
        return torch.softmax(logits, dim=-1)

    @staticmethod
    def _seeded_gumbel(alpha: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        e = torch.empty(alpha.shape, dtype=torch.float64).exponential_(generator=generator)
        return (-e.clamp_min(1e-300).log()).to(alpha.device, alpha.dtype)

    def state_dict(self):
        return {"tau": self.tau}

    def load_state_dict(self, state):
        self.tau = float(state.get("tau", self.tau0))


@ACTIVATIONS.register("gumbel")
class Gumbel(_GumbelBase):
    """SNAS (Xie et al., ICLR 2019): a soft Gumbel-softmax sample per forward pass.

    Z = softmax((log softmax(α) + G) / τ), G ~ Gumbel(0, 1), one sample per cell type per forward
    (shared by the cells of a type). τ anneals linearly per epoch,
    τ_e = τ₀ − (τ₀ − τ_min)·e/E (SNAS-Series ``utils.Temp_Scheduler``), over E = the search's
    epochs (SNAS hard-codes E = 150). Evaluation mode uses softmax(α). α is initialised
    1 + 0.01·N(0, 1) (SNAS ``loc_mean`` 1, ``loc_std`` 0.01; the constant is immaterial under
    softmax).

    Args:
        tau0: initial temperature (SNAS ``--temp`` 1.0).
        tau_min: final temperature (SNAS ``--temp_min`` 0.03).
        anneal_epochs: epochs of the anneal; null = the search's epochs.
    """

    def __init__(self, tau0: float = 1.0, tau_min: float = 0.03,
                 anneal_epochs: int | None = None) -> None:
        super().__init__(tau0, tau_min, anneal_epochs)

    def init_alpha(self, shape, generator):
        return 1.0 + 0.01 * torch.randn(shape, generator=generator)

    def _fraction(self, epoch, total):
        return epoch / total

    def weights(self, alpha, training):
        return self._soft_sample(alpha) if training else self.probs(alpha)

    @torch.no_grad()
    def sample(self, alpha, generator):
        """A soft sample at the current τ, as SNAS's search network (and its ``infer``) runs."""
        return self._soft_sample(alpha.detach(), self._seeded_gumbel(alpha, generator))


@ACTIVATIONS.register("gumbel_hard")
class GumbelHard(_GumbelBase):
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
        require(estimator in self.ESTIMATORS, "estimator", estimator,
                ", ".join(self.ESTIMATORS))
        require(isinstance(baseline_decay, (int, float)) and 0 <= baseline_decay < 1,
                "baseline_decay", baseline_decay, "a number in [0, 1)")
        require(isinstance(rebar_eta, (int, float)), "rebar_eta", rebar_eta, "a number")
        require(isinstance(rebar_temperature, (int, float)) and rebar_temperature > 0,
                "rebar_temperature", rebar_temperature, "a number > 0")
        require(isinstance(relax_hidden, int) and not isinstance(relax_hidden, bool)
                and relax_hidden >= 1, "relax_hidden", relax_hidden, "an integer >= 1")
        require(isinstance(relax_lr, (int, float)) and relax_lr > 0, "relax_lr", relax_lr,
                "a number > 0")
        self.relax = RelaxControl(relax_hidden, relax_lr) if estimator == "relax" else None
        self.form, self.estimator, self.baseline_decay = form, estimator, float(baseline_decay)
        self.eta, self.lam = float(rebar_eta), float(rebar_temperature)
        self.score_function = estimator != "relaxed"
        self._hard = False  # the last weights() call drew a hard sample (training mode)
        # α's id -> (G, b, v) of its last training sample (v: uniforms of REBAR's conditional)
        self._drawn: dict[int, tuple] = {}
        self._baseline: float | None = None

    def _fraction(self, epoch, total):
        return epoch / (total - 1) if total > 1 else 1.0

    def weights(self, alpha, training):
        self._hard = training
        if not training:
            self._drawn = {}  # a measurement forward: no α step will score its draw
            return self.probs(alpha)
        if self.score_function:  # the one-hot sample itself; α learns through score_term
            g = self._gumbel(alpha)
            b = (torch.log_softmax(alpha, dim=-1) + g).detach().argmax(dim=-1)
            v = self._uniform(alpha) if self.estimator in ("rebar", "relax") else None
            self._drawn[id(alpha)] = (g, b, v)  # no graph kept: log p(b) is taken at the step
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
        drawn = {ct: self._drawn.get(id(a)) for ct, a in alphas.items()}
        if not self.score_function or any(d is None for d in drawn.values()):
            return 0.0
        self._drawn = {}
        L = float(loss.detach())
        logp = sum(log_prob(alphas[ct], b) for ct, (_, b, _) in drawn.items())
        if self.estimator == "reinforce":
            c = L if self._baseline is None else self._baseline
            self._baseline = self.baseline_decay * c + (1 - self.baseline_decay) * L
            return (L - c) * logp
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
        return {**super().state_dict(), "baseline": self._baseline,
                **({"relax": self.relax.state_dict()} if self.relax is not None else {})}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self._baseline = state.get("baseline")
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
