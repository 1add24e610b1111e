"""The contract between the search loop and the four axes.

Every choice on every axis subclasses :class:`AxisChoice` (through its axis's base class:
``Activation``, ``ArchGradient``, ``Schedule``, ``Regularizer``). The loop calls *every* hook
below on *every* part, at the times the docstrings say; a choice overrides the hooks it needs and
inherits no-ops for the rest. Nothing is looked up by name at run time, so a misspelt hook is an
extra method that the contract test (``tests/test_axes_contract.py``) rejects, not a hook that is
silently never called.

The loop hands the hooks a :class:`SearchContext`: a narrow, read-mostly view of the search.
An axis reads only what the protocol declares (never the config, the dataset or the loop's own
state), so the loop and the axes can change independently.
"""

from __future__ import annotations

import contextlib
from typing import Any, Protocol, runtime_checkable

import torch

from ..stop import Stop

Batch = tuple[torch.Tensor, torch.Tensor]


@runtime_checkable
class SearchContext(Protocol):
    """What the search loop exposes to the axes (``raydnas.search.run.SearchState`` implements it).

    Attributes:
        model: the supernet (``raydnas.model.supernet.Supernet``): ``alphas``,
        ``arch_parameters()``,
            ``weight_parameters()``, ``op_probs()``, ``last_op_weights``, ``activation``.
        space: the search space the supernet was built on (after the activation's
            ``drops_ops``); its discretization rule is ``raydnas.model.genotype.derive``.
        device: the device the model and batches are on.
        epoch: epochs completed so far (0 during the first epoch).
        epochs: epochs of the whole search.
        step: weight steps taken so far, all epochs.
        steps_per_epoch: weight steps per epoch.
        w_optimizer: the weight optimizer (torch SGD); for estimators that replay its step
            (virtual steps of ``unrolled``/``implicit``). Never step it or change its state.
        example_input: one input image, batch of 1, on ``device`` (for cost tables).
    """

    model: Any
    space: Any
    device: torch.device
    epoch: int
    epochs: int
    step: int
    steps_per_epoch: int
    w_optimizer: torch.optim.Optimizer
    example_input: torch.Tensor

    @property
    def lr(self) -> float:
        """The current weight learning rate (ξ of DARTS, γ of iDARTS)."""

    @property
    def progress(self) -> float:
        """Fraction of the search done, t/T in [0, 1] (ticks once per weight step)."""

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The plain criterion of the supernet's forward on (x, y)."""

    def arch_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The α objective: ``loss(x, y)`` plus ``penalty()``."""

    def arch_objective(self, train_batch, val_batch) -> torch.Tensor:
        """α's objective of a first-order step (``objective:``; ``arch_loss`` on ``val_batch``
        by default)."""

    def penalty(self) -> torch.Tensor | float:
        """The regularizer's penalty at the current α (after the last forward)."""

    def frozen_noise(self) -> contextlib.AbstractContextManager:
        """Within the context every forward reuses one random draw (stochastic activations)."""


class AxisChoice:
    """Base of every choice on every axis: its declared properties and the loop's hooks.

    Subclasses are registered under a config name (``@ACTIVATIONS.register("softmax")``); their
    constructor's keyword arguments are the choice's hyperparameters, checked in the constructor
    with :func:`raydnas.axes.checks.require` so that a bad value fails before a search starts.

    Declared properties (read by config validation, :mod:`raydnas.axes.compat`):
        requested_val_fraction: the search-train/val split this choice needs, or None (the
            config's own). Config validation applies it to ``data.val_fraction``.
        replaces_weight_step_weights: :meth:`weight_step_weights` hands the weight step
            constant op weights (no single-level gradient with it).
    """

    #: the ``data.val_fraction`` this choice asks for (None: the config's own)
    requested_val_fraction: float | None = None
    #: :meth:`weight_step_weights` replaces the weight step's op weights with constants, so a
    #: single-level gradient (``joint``), which takes α's gradient from that step, cannot go
    #: with it
    replaces_weight_step_weights: bool = False

    def setup(self, ctx: SearchContext) -> None:
        """Once, after the supernet and optimizers exist and before a checkpoint is loaded."""

    def start_epoch(self, ctx: SearchContext) -> None:
        """Before each epoch's first step (``ctx.epoch`` = epochs completed)."""

    def after_arch_step(self, ctx: SearchContext) -> None:
        """After each α optimizer step."""

    def weight_step_weights(self, ctx: SearchContext, weights: dict[str, torch.Tensor] | None,
                            batch: Batch) -> dict[str, torch.Tensor] | None:
        """Before each weight step's forward: the op weights that forward trains under.

        ``weights`` is what the parts before this one returned (None: the activation's own,
        drawn by the forward itself); return it unchanged (the default) or replace it, e.g. a
        perturbed a(α) (SDARTS). Weights returned here are constants of the weight step: α gets
        no gradient through them; every op runs, a zero weight included (its op's weights get a
        zero gradient, weight decay and momentum, as under the activation's own weights).
        Parts run in axis order."""
        return weights

    def after_weight_step(self, ctx: SearchContext) -> None:
        """After each weight optimizer step."""

    def epoch_metrics(self, ctx: SearchContext, genotype: Any,
                      metrics: dict[str, Any]) -> dict[str, Any]:
        """After each epoch's measurement: extra metrics for the epoch's record (may read
        ``metrics``; must not change it)."""
        return {}

    def stop(self, ctx: SearchContext, genotype: Any, metrics: dict[str, Any]) -> Stop | None:
        """After :meth:`epoch_metrics`: a :class:`~raydnas.stop.Stop` to end the search after
        this epoch (a method's own end, e.g. MiLeNAS's model-size target), else None (the
        default). ``metrics`` is the epoch's full record; the search loop decides
        (:func:`raydnas.search.stopping.decide`)."""
        return None

    def state_dict(self) -> dict:
        """Everything needed to resume (plain data and CPU tensors); saved every epoch."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""


#: the loop's hooks, in the order of a step; the contract test checks no choice adds others
HOOKS = ("setup", "start_epoch", "after_arch_step", "weight_step_weights", "after_weight_step",
         "epoch_metrics", "stop", "state_dict", "load_state_dict")
