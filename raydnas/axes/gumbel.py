"""The Gumbel relaxations of the activation axis: their shared base and SNAS's soft sample
(GDAS's hard one is :mod:`.gumbel_hard`)."""

from __future__ import annotations

import math

import torch

from .activation import ACTIVATIONS, Stochastic
from .base import SearchContext
from .checks import require
from .score import ScoreDraws


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
class Gumbel(ScoreDraws, _GumbelBase):
    """SNAS (Xie et al., ICLR 2019): a soft Gumbel-softmax sample per forward pass.

    Z = softmax((log softmax(α) + G) / τ), G ~ Gumbel(0, 1), one sample per cell type per forward
    (shared by the cells of a type). τ anneals linearly per epoch,
    τ_e = τ₀ − (τ₀ − τ_min)·e/E (SNAS-Series ``utils.Temp_Scheduler``), over E = the search's
    epochs (SNAS hard-codes E = 150). Evaluation mode uses softmax(α). α is initialised
    1 + 0.01·N(0, 1) (SNAS ``loc_mean`` 1, ``loc_std`` 0.01; the constant is immaterial under
    softmax).

    ``estimator`` (UNAS; :mod:`raydnas.axes.score`): ``relaxed`` (default) is SNAS's pathwise
    gradient through Z; ``reinforce``: the weights are the Concrete sample Z itself, no
    gradient through it, and α's gradient is (L − c)·∇ log q_α(Z), q the Concrete density at
    the current τ (taken as the ExpConcrete density of log Z, Maddison et al. 2017: the same
    gradient, without log 0 at small τ), c the moving average of L (``baseline_decay``).

    Args:
        tau0: initial temperature (SNAS ``--temp`` 1.0).
        tau_min: final temperature (SNAS ``--temp_min`` 0.03).
        anneal_epochs: epochs of the anneal; null = the search's epochs.
        estimator: ``relaxed`` or ``reinforce``.
        baseline_decay: the moving average's decay for ``reinforce`` (0.9).
    """

    ESTIMATORS = ("relaxed", "reinforce")

    def __init__(self, tau0: float = 1.0, tau_min: float = 0.03,
                 anneal_epochs: int | None = None, estimator: str = "relaxed",
                 baseline_decay: float = 0.9) -> None:
        super().__init__(tau0, tau_min, anneal_epochs)
        self._init_score(estimator, self.ESTIMATORS, baseline_decay)

    def init_alpha(self, shape, generator):
        return 1.0 + 0.01 * torch.randn(shape, generator=generator)

    def _fraction(self, epoch, total):
        return epoch / total

    def weights(self, alpha, training):
        if not training:
            self._forget_draws()
            return self.probs(alpha)
        if not self.score_function:
            return self._soft_sample(alpha)
        g = self._gumbel(alpha)  # the sample in log space, no graph: scored at the step
        log_z = torch.log_softmax((torch.log_softmax(alpha, -1) + g) / self.tau, -1).detach()
        self._keep_draw(alpha, (log_z, self.tau))
        return log_z.exp()

    def score_term(self, loss, alphas, objective):
        """REINFORCE: (L − c)·Σ log q_α(Z) over the α of the forward that gave ``loss``."""
        drawn = self._take_draws(alphas)
        if drawn is None:
            return 0.0
        logq = sum(self.log_density(alphas[ct], d).sum() for ct, d in drawn.items())
        return self._reinforce(float(loss.detach()), logq)

    @staticmethod
    def log_density(alpha: torch.Tensor, draw: tuple[torch.Tensor, float]) -> torch.Tensor:
        """log q_α of a kept draw (log Z, τ) per row (``alpha.shape[:-1]``): the Concrete
        density of log Z, whose α-gradient is that of the density of Z."""
        log_z, tau = draw
        k = alpha.shape[-1]
        s = torch.log_softmax(alpha, -1) - tau * log_z  # ExpConcrete (Maddison et al. 2017)
        return (math.lgamma(k) + (k - 1) * math.log(tau) + s.sum(-1)
                - k * torch.logsumexp(s, -1))

    def state_dict(self):
        return {**super().state_dict(), **self._score_state()}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self._load_score_state(state)

    @torch.no_grad()
    def sample(self, alpha, generator):
        """A soft sample at the current τ, as SNAS's search network (and its ``infer``) runs."""
        return self._soft_sample(alpha.detach(), self._seeded_gumbel(alpha, generator))
