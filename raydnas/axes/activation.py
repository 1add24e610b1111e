"""Activation axis: how α becomes op weights.

An activation maps one cell type's α (shape ``[edges, ops]``) to op weights. ``weights`` is what
the supernet multiplies op outputs by (it may sample); ``probs`` is the deterministic a(α) used to
discretize, regularize and log. ``active_ops`` tells the supernet which ops it must execute:
ops whose weight is exactly zero are skipped (the same value, less compute; a skipped op's own
weight gets no gradient and its module no update, which is what CRB's permanent pruning and
GDAS's single path mean).

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
from .base import AxisChoice, SearchContext
from .checks import require

ACTIVATIONS: Registry["Activation"] = Registry("activation", default="softmax")


class Activation(AxisChoice):
    """Base class. Subclasses override ``probs`` (and ``weights`` if they sample).

    The supernet calls ``init_alpha``, ``weights``, ``active_ops`` and ``edge_bias`` per forward;
    discretization, regularizers and logging use ``probs``; measurement uses ``sample``.
    """

    #: ops removed from the space before the supernet is built (CRB removes ``none``)
    drops_ops: tuple[str, ...] = ()
    #: a non-affine BatchNorm on every intermediate node (needed when weights don't sum to 1)
    node_norm: bool = False
    #: each edge's a(α) is a probability distribution over its ops (sums to 1)
    normalized: bool = True
    #: op weights are drawn from a Dirichlet whose concentration :meth:`concentration` gives
    has_concentration: bool = False
    #: the op weights do not depend on α (RSPS's random paths): nothing that acts on α can act
    alpha_free: bool = False
    #: α's gradient comes from :meth:`score_term` (a score-function estimator), which only a
    #: gradient that differentiates ``arch_loss`` itself (``plain``) includes
    score_function: bool = False

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

    def score_term(self, loss: torch.Tensor, alphas: dict[str, torch.Tensor],
                   objective: Any) -> torch.Tensor | float:
        """A term added to the α objective after its forward (``loss``: that forward's value):
        a score-function estimator's surrogate (:mod:`raydnas.axes.estimators`); 0 here.
        ``alphas``: cell type → α; ``objective(op_weights)``: the same objective under given
        op weights (cell type → ``[edges, ops]``), for estimators that evaluate relaxations."""
        return 0.0

    def sample(self, alpha: torch.Tensor, generator: torch.Generator) -> torch.Tensor | None:
        """One architecture as the search trains it, drawn with ``generator`` (CPU), for
        measurement; None for deterministic activations (their op weights are ``probs``)."""
        return None

    def frozen_noise(self) -> contextlib.AbstractContextManager:
        """Within the context every forward pass uses the same random draw (no-op here)."""
        return contextlib.nullcontext()

    def concentration(self, alpha: torch.Tensor) -> torch.Tensor:
        """The Dirichlet concentration of each edge (``has_concentration`` activations)."""
        raise NotImplementedError(f"{type(self).__name__} draws no Dirichlet")

    def alive_mask(self, cell_type: str) -> torch.Tensor | None:
        """``[edges, ops]`` booleans, False where an op is pruned for good (CRB); None: all
        alive. Regularizers leave pruned entries out of their penalties."""
        return None


class Stochastic(Activation):
    """Base of activations that draw op weights per forward (Gumbel, Dirichlet): inside
    :meth:`frozen_noise` a subclass keeps its draws in ``self._frozen`` (α's id → the draw) and
    reuses them, so every forward within differentiates one fixed sample."""

    _frozen: dict[int, torch.Tensor] | None = None

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


@ACTIVATIONS.register("softmax")
class Softmax(Activation):
    """DARTS: a(α) = softmax over the ops of each edge (Liu et al. 2019, Eq. 2)."""

    def probs(self, alpha: torch.Tensor) -> torch.Tensor:
        return torch.softmax(alpha, dim=-1)


@ACTIVATIONS.register("sigmoid")
class Sigmoid(Activation):
    """Independent gates a(α) = σ(α) per (edge, op): ops do not compete within an edge.

    FairDARTS (Chu et al., ECCV 2020; xiaomi-automl/FairDARTS at 270cfc94,
    ``fairdarts/model_search.py``) is this activation with ``drop_none`` (its 7 primitives have
    no ``none``), the ``zero_one`` regularizer and ``select: threshold``; its α start at exactly
    0 (σ = ½, a stationary point of the zero-one loss), here at DARTS's 1e-3·N(0, 1).

    Args:
        node_norm: a non-affine BatchNorm on every intermediate node, since the gates do not sum
            to 1 (default False; the CRB activation of Maile et al. turns it on for that reason).
        drop_none: remove the ``none`` op from the space (default False).
    """

    normalized = False

    def __init__(self, node_norm: bool = False, drop_none: bool = False) -> None:
        require(isinstance(node_norm, bool), "node_norm", node_norm, "true or false")
        require(isinstance(drop_none, bool), "drop_none", drop_none, "true or false")
        self.node_norm = node_norm
        self.drops_ops = ("none",) if drop_none else ()

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

    def alive_mask(self, cell_type):
        return self.masks.get(cell_type)

    def after_arch_step(self, ctx: SearchContext) -> None:
        self.prune(ctx.model)

    def after_weight_step(self, ctx: SearchContext) -> None:
        self.prune(ctx.model)

    def state_dict(self):
        return {"masks": {ct: m.detach().cpu().clone() for ct, m in self.masks.items()}}

    def load_state_dict(self, state):
        self.masks = {ct: m.clone().bool() for ct, m in state.get("masks", {}).items()}
        self._active = {}
