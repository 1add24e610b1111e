"""Activation axis: how α becomes op weights.

An activation maps one cell type's α (shape ``[edges, ops]``) to op weights. ``weights`` is what
the supernet multiplies op outputs by (it may sample); ``probs`` is the deterministic a(α) used to
discretize, regularize and log. ``active_ops`` tells the supernet which ops it must execute:
ops whose weight is exactly zero are skipped (same value, same gradient, less compute).
"""

from __future__ import annotations

from typing import Any

import torch

from ..registry import Registry

ACTIVATIONS: Registry["Activation"] = Registry("activation")


class Activation:
    """Base class. Subclasses override ``probs`` (and ``weights`` if they sample)."""

    #: ops removed from the space before the supernet is built (CRB removes ``none``)
    drops_ops: tuple[str, ...] = ()
    #: a non-affine BatchNorm on every intermediate node (needed when weights don't sum to 1)
    node_norm: bool = False

    def init_alpha(self, shape: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
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
