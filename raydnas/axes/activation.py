"""Activation axis: how α becomes op weights.

An activation maps one cell type's α (shape ``[edges, ops]``) to op weights. ``weights`` is what
the supernet multiplies op outputs by (it may sample); ``probs`` is the deterministic a(α) used to
discretize, regularize and log. ``active_ops`` tells the supernet which ops it must execute:
ops whose weight is exactly zero are skipped (same value, same gradient, less compute).

Stochastic activations draw fresh Gumbel noise per forward pass. Inside ``frozen_noise()`` every
forward reuses the noise of the first one: gradient estimators that compare several forward
passes (finite differences, virtual steps) thereby differentiate one fixed sample of the
objective, not sampling noise (common random numbers).
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch

from ..registry import Registry
from .checks import require

ACTIVATIONS: Registry["Activation"] = Registry("activation")


class Activation:
    """Base class. Subclasses override ``probs`` (and ``weights`` if they sample)."""

    #: ops removed from the space before the supernet is built (CRB removes ``none``)
    drops_ops: tuple[str, ...] = ()
    #: a non-affine BatchNorm on every intermediate node (needed when weights don't sum to 1)
    node_norm: bool = False
    #: each edge's a(α) is a probability distribution over its ops (sums to 1)
    normalized: bool = True

    def init_alpha(self, shape: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
        """DARTS init: 1e-3·N(0, 1) (quark0/darts ``_initialize_alphas``)."""
        return 1e-3 * torch.randn(shape, generator=generator)

    def probs(self, alpha: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def weights(self, alpha: torch.Tensor, training: bool) -> torch.Tensor:
        return self.probs(alpha)

    def active_ops(self, cell_type: str, weights: torch.Tensor,
                   zero_ops: frozenset[int]) -> list[list[int]]:
        """Per edge, the op indices to execute. Default: every op but the zero ops."""
        ops = [k for k in range(weights.shape[1]) if k not in zero_ops]
        return [ops] * weights.shape[0]

    def edge_bias(self, weights: torch.Tensor,
                  active: list[list[int]]) -> torch.Tensor | None:
        """Per edge a scalar added to the edge's output (``[edges]``), or None (the default).

        GDAS's ``forward_gdas`` adds the weights of the ops it does not run: value zero, but
        every α of a sampled edge gets a gradient through them."""
        return None

    def sample(self, alpha: torch.Tensor, generator: torch.Generator) -> torch.Tensor | None:
        """One architecture as the search trains it, drawn with ``generator`` (CPU), for
        measurement; None for deterministic activations (their op weights are ``probs``)."""
        return None

    def frozen_noise(self) -> contextlib.AbstractContextManager:
        """Within the context every forward pass uses the same random draw (no-op here)."""
        return contextlib.nullcontext()

    # hooks, called by the search loop
    def start_epoch(self, epoch: int, epochs: int) -> None:
        """Called before each epoch (temperature schedules)."""

    def after_arch_step(self, model: Any) -> None:
        """Called after each α optimizer step."""

    def after_weight_step(self, model: Any) -> None:
        """Called after each weight optimizer step."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


@ACTIVATIONS.register("softmax")
class Softmax(Activation):
    """DARTS: a(α) = softmax over the ops of each edge (Liu et al. 2019, Eq. 2)."""

    def probs(self, alpha: torch.Tensor) -> torch.Tensor:
        return torch.softmax(alpha, dim=-1)


@ACTIVATIONS.register("sigmoid")
class Sigmoid(Activation):
    """Independent gates a(α) = σ(α) per (edge, op): ops do not compete within an edge.

    Args:
        node_norm: a non-affine BatchNorm on every intermediate node, since the gates do not sum
            to 1 (default False; the CRB activation of Maile et al. turns it on for that reason).
    """

    normalized = False

    def __init__(self, node_norm: bool = False) -> None:
        require(isinstance(node_norm, bool), "node_norm", node_norm, "true or false")
        self.node_norm = node_norm

    def probs(self, alpha: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(alpha)


@ACTIVATIONS.register("crb")
class CRB(Activation):
    """Maile et al. 2021 (arXiv 2106.11655 v1; k8lion/DARTS-PRIME ``--crb``): clamp, node BN, prune.

    a(α) = clamp(α, 0, 1) per (edge, op), with no normalisation across an edge's ops. The ``none``
    op is removed from the space, every intermediate node gets a non-affine BatchNorm (the
    weights no longer sum to 1), α is initialised to 1/|O| + 1e-4·N(0, 1), and after every step
    any α ≤ 0 is set to 0 and masked *permanently*: a pruned op is never executed again (its
    module is not called), which is where the compute saving comes from.

    The mask is per cell type, ``True`` = alive; it is part of ``state_dict``.
    """

    drops_ops = ("none",)
    node_norm = True
    normalized = False

    def __init__(self) -> None:
        self.masks: dict[str, torch.Tensor] = {}
        self._active: dict[str, list[list[int]]] = {}

    def init_alpha(self, shape, generator):
        return 1.0 / shape[1] + 1e-4 * torch.randn(shape, generator=generator)

    def probs(self, alpha):
        return alpha.clamp(0.0, 1.0)

    def active_ops(self, cell_type, weights, zero_ops):
        act = self._active.get(cell_type)
        if act is None:
            mask = self.masks.get(cell_type)
            if mask is None:
                mask = torch.ones(weights.shape, dtype=torch.bool)
            m = mask.detach().cpu()
            act = [[k for k in range(m.shape[1]) if m[e, k] and k not in zero_ops]
                   for e in range(m.shape[0])]
            self._active[cell_type] = act
        return act

    @torch.no_grad()
    def prune(self, model: Any) -> None:
        """α ≤ 0 → 0 and masked for good; masked α are held at 0."""
        for ct, a in model.alphas.items():
            mask = self.masks.get(ct)
            if mask is None:
                mask = torch.ones_like(a, dtype=torch.bool)
            new = mask & (a > 0)
            a.mul_(new.to(a.dtype))
            if ct not in self.masks or not torch.equal(new, mask):
                self._active.pop(ct, None)
            self.masks[ct] = new

    def after_arch_step(self, model):
        self.prune(model)

    def after_weight_step(self, model):
        self.prune(model)

    def state_dict(self):
        return {"masks": {ct: m.detach().cpu().clone() for ct, m in self.masks.items()}}

    def load_state_dict(self, state):
        self.masks = {ct: m.clone().bool() for ct, m in state.get("masks", {}).items()}
        self._active = {}


class _GumbelBase(Activation):
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

    def start_epoch(self, epoch, epochs):
        total = self.anneal_epochs or epochs
        f = min(1.0, max(0.0, self._fraction(epoch, total)))
        self.tau = self.tau0 - (self.tau0 - self.tau_min) * f

    def probs(self, alpha):
        return torch.softmax(alpha, dim=-1)

    @contextlib.contextmanager
    def frozen_noise(self) -> Iterator[None]:
        outer = self._frozen is None
        if outer:
            self._frozen = {}
        try:
            yield
        finally:
            if outer:
                self._frozen = None

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

    Args:
        tau0: initial temperature τ_max (GDAS 10).
        tau_min: final temperature (GDAS 0.1).
        anneal_epochs: epochs of the anneal; null = the search's epochs.
        form: ``gdas`` or ``v1`` (above).
    """

    FORMS = ("gdas", "v1")

    def __init__(self, tau0: float = 10.0, tau_min: float = 0.1,
                 anneal_epochs: int | None = None, form: str = "gdas") -> None:
        super().__init__(tau0, tau_min, anneal_epochs)
        require(form in self.FORMS, "form", form, " or ".join(self.FORMS))
        self.form = form

    def _fraction(self, epoch, total):
        return epoch / (total - 1) if total > 1 else 1.0

    def weights(self, alpha, training):
        self._hard = training
        if not training:
            return self.probs(alpha)
        p = self._soft_sample(alpha)
        hard = torch.zeros_like(p).scatter_(-1, p.detach().argmax(dim=-1, keepdim=True), 1.0)
        return hard - p.detach() + p

    def active_ops(self, cell_type, weights, zero_ops):
        if not getattr(self, "_hard", False):
            return super().active_ops(cell_type, weights, zero_ops)  # softmax(α) in eval mode
        idx = weights.detach().argmax(dim=1).tolist()
        return [[k] if k not in zero_ops else [] for k in idx]

    def edge_bias(self, weights, active):
        if self.form != "gdas" or not getattr(self, "_hard", False):
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
