"""The state of one search and its step: :class:`SearchState` (the axes'
:class:`~raydnas.axes.base.SearchContext`) and :func:`train_step`.

Per weight step::

    if schedule.wants_step(ctx):                      # may update schedule state
        α.grad ← gradient.arch_grad(ctx, train_batch, next val batch)   (α only)
        α-optimizer step; every part's after_arch_step
    weight step on the train batch (clip, SGD); schedule.observe(‖∇w‖² before clipping)
    every part's after_weight_step (e.g. CRB pruning)

Single-level estimators (``gradient.joint``) take α's gradient from the weight step's backward.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from .. import allocator
from .. import checkpoint as ckpt
from ..axes import AXIS_NAMES, AxisChoice
from ..config.experiment import ExperimentConfig, create_axis
from ..data.datasets import Cycle, Dataset, load_dataset
from ..data.images import TensorImages
from ..device import resolve_device  # noqa: F401  (its old home: raydnas.search.state)
from ..errors import ConfigError
from ..model.spaces import load_space
from ..model.supernet import Supernet


class NonFiniteLoss(RuntimeError):
    """The search diverged (NaN or inf loss)."""


class SearchState:
    """Everything a search step touches. It is the :class:`~raydnas.axes.base.SearchContext`
    the loop hands the axes; ``parts`` are the four axis choices (also ``st.activation``, ...)."""

    def __init__(self, cfg: ExperimentConfig, device: torch.device,
                 dataset: Dataset | None = None) -> None:
        """``dataset`` replaces the one ``cfg.data`` names (benchmarks feed synthetic images)."""
        self.cfg, self.device = cfg, device
        allocator.tune()  # keep freed activation memory for the next step (raydnas/allocator.py)
        ckpt.seed_everything(cfg.seed)
        d = cfg.data
        try:
            self.dataset = dataset or load_dataset(d.dataset, d.root, d.download, d.augment,
                                                   d.image_size)
        except ConfigError as e:  # name the config file the data settings came from
            raise ConfigError(cfg.source, e.key, e.value, e.allowed) from None
        if isinstance(self.dataset.data, TensorImages):  # batches are cut on the device
            self.dataset.data.to(device)
        self.parts: dict[str, AxisChoice] = {
            a: create_axis(a, cfg.axes[a], cfg.source) for a in AXIS_NAMES}
        space = load_space(cfg.space)
        self.model = Supernet(space, self.parts["activation"], self.dataset.num_classes,
                              self.dataset.in_channels, cfg.model.channels, cfg.model.cells,
                              seed=cfg.seed, fuse=cfg.speed.fuse,
                              aux_skip=cfg.model.aux_skip_beta > 0,
                              partial_channels=cfg.model.partial_channels,
                              edge_norm=cfg.model.edge_norm, data_search=cfg.data_search,
                              side=self.example_input.shape[-1] if cfg.data_search else None
                              ).to(device)
        self.space = self.model.space
        self.criterion = nn.CrossEntropyLoss()
        o = cfg.optim
        #: the weight parameters, listed once (walking the module tree each step costs ~3 ms)
        self.weights = self.model.weight_parameters()
        self.w_optimizer = torch.optim.SGD(self.weights, lr=o.w_lr,
                                           momentum=o.w_momentum, nesterov=o.w_nesterov,
                                           weight_decay=o.w_weight_decay)
        if o.a_optimizer == "adam":
            self.a_optimizer = torch.optim.Adam(self.model.arch_parameters(), lr=o.a_lr,
                                                betas=tuple(o.a_betas),
                                                weight_decay=o.a_weight_decay)
        else:
            self.a_optimizer = torch.optim.SGD(self.model.arch_parameters(), lr=o.a_lr,
                                               weight_decay=o.a_weight_decay)
        self.lr_scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.w_optimizer, T_max=cfg.epochs, eta_min=o.w_lr_min)
        self.epochs = cfg.epochs
        self.epoch = 0            # epochs completed
        self.step = 0             # weight steps taken, all epochs
        self.alpha_steps = 0      # α steps taken, all epochs
        self._latency: dict[str, torch.Tensor] | None = None  # measure.latency's op table
        self._flops: dict[str, torch.Tensor] | None = None  # cell_flops's op table
        self.steps_per_epoch = 1
        self.history: list[dict] = []
        for part in self.parts.values():
            part.setup(self)

    def __getattr__(self, name: str) -> Any:
        parts = self.__dict__.get("parts", {})
        if name in parts:
            return parts[name]
        raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in AXIS_NAMES and "parts" in self.__dict__:  # st.schedule = ... swaps the part
            self.parts[name] = value
        else:
            super().__setattr__(name, value)

    # -- the SearchContext ----------------------------------------------------------------------
    @property
    def lr(self) -> float:
        """The current weight learning rate (ξ of DARTS, γ of iDARTS)."""
        return self.w_optimizer.param_groups[0]["lr"]

    @property
    def progress(self) -> float:
        """Fraction of the search done, t/T in [0, 1] (ticks once per weight step)."""
        return min(1.0, self.step / (self.epochs * self.steps_per_epoch))

    @property
    def example_input(self) -> torch.Tensor:
        """One training image, batch of 1, on the device."""
        return self.dataset.example().to(self.device)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The criterion of the supernet's forward on (x, y)."""
        return self.criterion(self.model(x), y)

    def penalty(self) -> torch.Tensor | float:
        """The regularizer's penalty at the current α."""
        return self.parts["regularizer"].penalty(self)

    def arch_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The α objective: criterion plus the regularizer's penalty (plus a score-function
        estimator's surrogate, :meth:`Activation.score_term`)."""
        loss = self.loss(x, y)
        return loss + self.penalty() + self.model.activation.score_term(
            loss, self.model.alphas, lambda w: self.loss_under(w, x, y))

    def loss_under(self, op_weights: dict[str, torch.Tensor], x: torch.Tensor,
                   y: torch.Tensor) -> torch.Tensor:
        """The criterion under the given op weights (cell type → ``[edges, ops]``)."""
        return self.criterion(self.model(x, op_weights=op_weights, run_zero_weights=True), y)

    def arch_objective(self, train_batch, val_batch) -> torch.Tensor:
        """What α's step minimizes (``objective:``): ``val``: :meth:`arch_loss` on the val
        batch; ``gen_gap``: L_tr + λ·|L_val − L_tr| on one sampled architecture (one noise
        draw for both forwards), plus the penalty and the estimator's surrogate."""
        obj = self.cfg.objective
        if obj.name == "val":
            return self.arch_loss(*val_batch)
        def gap_under(w):  # the same objective under given op weights (REBAR's relaxations)
            t = self.loss_under(w, *train_batch)
            return t + obj.lam * (self.loss_under(w, *val_batch) - t).abs()

        with self.frozen_noise():
            lt = self.loss(*train_batch)
            lv = self.loss(*val_batch)
        gap = lt + obj.lam * (lv - lt).abs()
        return gap + self.penalty() + self.model.activation.score_term(
            gap, self.model.alphas, gap_under)

    def latency_table(self) -> dict[str, torch.Tensor] | None:
        """Each candidate op's measured latency (ms, ``[cells, edges, ops]`` per cell type): the
        resource regularizer's with ``cost: latency``, else with ``measure.latency`` measured
        once (and checkpointed); None otherwise."""
        reg = self.parts["regularizer"]
        if getattr(reg, "cost", None) == "latency":
            if not reg.costs:
                reg.measure(self)
            return reg.costs
        if self.cfg.measure.latency and self._latency is None:
            self._latency = self.model.op_costs("latency", self.example_input)
        return self._latency

    def flops_table(self) -> dict[str, torch.Tensor]:
        """Each candidate op's multiply-adds on one image (``cell_flops``; with a data axis per
        input configuration, ``[K, cells, edges, ops]`` per cell type), computed once."""
        reg = self.parts["regularizer"]
        if getattr(reg, "cost", None) == "flops" and reg.costs:
            return reg.costs  # the resource regularizer's table: the same numbers
        if self._flops is None:
            self._flops = self.model.op_costs("flops", self.example_input)
        return self._flops

    def data_index(self) -> int | None:
        """The data axis' chosen configuration (argmax a(γ)), or None without one."""
        mixer = self.model.data_mixer
        return None if mixer is None else mixer.choice_index(self.model.activation)

    def frozen_noise(self) -> contextlib.AbstractContextManager:
        """One random draw for every forward within (the activation's ``frozen_noise``)."""
        return self.model.activation.frozen_noise()

    # -- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Model, optimizers, scheduler, every part's state, counters and history."""
        return {
            "model": self.model.state_dict(),
            "w_optimizer": self.w_optimizer.state_dict(),
            "a_optimizer": self.a_optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "axes": {a: part.state_dict() for a, part in self.parts.items()},
            "counters": {"epoch": self.epoch, "step": self.step, "alpha_steps": self.alpha_steps},
            "history": self.history,
            **({"latency": {c: t.tolist() for c, t in self._latency.items()}}
               if self._latency is not None else {}),
        }

    def load_state_dict(self, s: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.model.load_state_dict(s["model"])
        self.w_optimizer.load_state_dict(s["w_optimizer"])
        self.a_optimizer.load_state_dict(s["a_optimizer"])
        self.lr_scheduler.load_state_dict(s["lr_scheduler"])
        for a, part in self.parts.items():
            part.load_state_dict(s["axes"][a])
        c = s["counters"]
        self.epoch, self.step, self.alpha_steps = c["epoch"], c["step"], c["alpha_steps"]
        self.history = list(s["history"])
        if s.get("latency"):
            self._latency = {c: torch.tensor(t) for c, t in s["latency"].items()}


def train_step(st: SearchState, batch, val: Cycle | None) -> tuple[float, int]:
    """One weight step, preceded by an α step when the schedule asks. Returns (loss, correct)."""
    model, grad, parts = st.model, st.parts["gradient"], st.parts.values()
    schedule = st.parts["schedule"]
    alphas = model.arch_parameters()
    stepping = schedule.wants_step(st)
    if stepping and not grad.joint:
        vb = _to(val.next(), st.device) if grad.needs_val else None
        st.a_optimizer.zero_grad(set_to_none=True)
        grad.arch_grad(st, batch, vb)
        _arch_update(st)
    joint = stepping and grad.joint
    st.w_optimizer.zero_grad(set_to_none=True)
    if joint:
        st.a_optimizer.zero_grad(set_to_none=True)
    for a in alphas:  # the weight step needs no α gradient unless single-level
        a.requires_grad_(joint)
    try:
        x, y = batch
        w = None
        for part in parts:
            w = part.weight_step_weights(st, w, batch)
        logits = model(x) if w is None else model(x, op_weights=w, run_zero_weights=True)
        loss = st.criterion(logits, y)
        total = loss + st.penalty() if joint else loss
        total.backward()
    finally:
        for a in alphas:
            a.requires_grad_(True)
    if not torch.isfinite(loss):
        raise NonFiniteLoss(f"non-finite training loss {float(loss)} at epoch {st.epoch}, "
                            f"step {st.step}")
    weights = st.weights
    if schedule.needs_grad_norm:
        sq = torch.stack([p.grad.pow(2).sum() for p in weights if p.grad is not None]).sum()
        schedule.observe(st, float(sq))
    nn.utils.clip_grad_norm_(weights, st.cfg.optim.w_grad_clip)
    st.w_optimizer.step()
    if joint:
        _arch_update(st)
    for part in parts:
        part.after_weight_step(st)
    st.step += 1
    return float(loss.detach()), int((logits.argmax(1) == y).sum())


def _to(batch, device):
    x, y = batch
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def _arch_update(st: SearchState) -> None:
    mixer = st.model.data_mixer
    if mixer is not None and mixer.frozen:  # the data axis decided: γ is never stepped again
        mixer.gamma.grad = None
    st.a_optimizer.step()
    if mixer is not None:
        mixer.check_freeze(st.model.activation)
    st.alpha_steps += 1
    for part in st.parts.values():
        part.after_arch_step(st)
