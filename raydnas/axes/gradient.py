"""Gradient axis: how α gets its gradient.

An estimator writes ``.grad`` of every α (and nothing else) from a training batch and, for
bilevel methods, a validation batch. It reads what it needs from the search state ``st``:
``st.model``, ``st.arch_loss(x, y)`` (criterion + regularizer penalty), ``st.loss(x, y)``
(plain criterion), ``st.w_optimizer`` and ``st.lr`` (the current weight learning rate).
"""

from __future__ import annotations

from typing import Any

import torch

from ..registry import Registry

GRADIENTS: Registry["ArchGradient"] = Registry("gradient")

Batch = tuple[torch.Tensor, torch.Tensor]


class ArchGradient:
    """Base class."""

    #: the estimator reads a validation batch (False: no val split needed)
    needs_val: bool = True
    #: α gets its gradient from the weight step's own backward (single-level)
    joint: bool = False

    def arch_grad(self, st: Any, train_batch: Batch, val_batch: Batch | None) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def set_arch_grad(alphas: list[torch.Tensor], grads) -> None:
    for a, g in zip(alphas, grads):
        a.grad = g.detach() if a.grad is None else a.grad + g.detach()


@GRADIENTS.register("first_order")
class FirstOrder(ArchGradient):
    """DARTS-V1: g_α = ∇_α L_val(w, α) (Liu et al. 2019, §2.3 with ξ = 0).

    The gradient is taken for α only (``torch.autograd.grad``): no weight gradients are built.
    """

    def arch_grad(self, st, train_batch, val_batch):
        alphas = st.model.arch_parameters()
        loss = st.arch_loss(*val_batch)
        set_arch_grad(alphas, torch.autograd.grad(loss, alphas))
