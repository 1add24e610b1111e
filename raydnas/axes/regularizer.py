"""Regularizer axis: a term added to the α loss only (never to the weight loss)."""

from __future__ import annotations

from typing import Any

import torch

from ..registry import Registry

REGULARIZERS: Registry["Regularizer"] = Registry("regularizer")


class Regularizer:
    def penalty(self, st: Any) -> torch.Tensor | float:
        return 0.0

    def after_arch_step(self, st: Any) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


@REGULARIZERS.register("none")
class NoRegularizer(Regularizer):
    """No pull toward a discrete cell (plain DARTS)."""
