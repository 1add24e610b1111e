"""How raydnas measures a supernet and the cell derived from it (the per-epoch accuracies).

The protocol, the same for every method (metric names as in docs/configs.md, Metrics):

* **BatchNorm re-estimated.** Every accuracy is measured on a copy of the supernet whose
  BatchNorm running statistics were reset and re-estimated, as a cumulative average
  (``momentum=None``), on ``measure.bn_images`` fixed search-train images, under the very op
  weights that are then evaluated. The search's own statistics were accumulated under the
  mixture it trained (and with momentum 0.1); under the one-hot weights of a derived cell every
  downstream BatchNorm would see inputs unlike them. The search itself is untouched.
* ``val_acc``: the supernet as its method trains it. Deterministic activations (softmax, crb,
  sigmoid): the mixture a(α). Stochastic ones (gumbel, gumbel_hard): the mean over
  ``measure.samples`` sampled architectures, drawn with fixed seeded noise (the same draws every
  epoch), BatchNorm re-estimated per sample. SNAS (SNAS-Series ``train_search.py`` ``infer``)
  and GDAS (AutoDL-Projects ``GDAS.py`` ``search_func``) both report the accuracy of sampled
  networks, one fresh draw per batch; a fixed set of draws makes the epochs comparable.
* ``discrete_val_acc``: the derived cell (the space's discretization rule, binary op weights)
  with the supernet's inherited weights, BatchNorm re-estimated; no training.
* ``discretization_gap`` = ``val_acc − discrete_val_acc``: both under the same protocol, so the
  gap is the discretization alone.
* ``discrete_val_acc_tuned`` (last epoch only): the stand-alone network of the derived cell
  (:class:`raydnas.model.network.DiscreteNetwork`) fine-tuned for ``measure.tune_epochs`` epochs on
  the search-train split from its inherited weights (SGD, the search's momentum and weight decay,
  lr ``measure.tune_lr`` or ``optim.w_lr``, cosine to 0, gradient clipping), then measured
  as above. Not the retrained accuracy of the cell: that is ``raydnas evaluate``'s job.
"""

from __future__ import annotations

import copy
import itertools
import math
from typing import Any, Iterable

import torch
from torch import nn

from ..data.datasets import Batches, Dataset
from .hessian import dominant_eigenvalue

Batch = tuple[torch.Tensor, torch.Tensor]
_SAMPLE_SEED = 7_919  # sample s of seed k is drawn with generator seed k * _SAMPLE_SEED + s


def bn_indices(train_idx: list[int], n: int, seed: int) -> list[int]:
    """The ``n`` search-train images BatchNorm statistics are re-estimated on: a seeded choice,
    the same for every method that shares the split and seed."""
    if not 0 < n <= len(train_idx):
        raise ValueError(f"bn_images must be in [1, {len(train_idx)}], got {n}")
    g = torch.Generator().manual_seed(seed * 1_000_003 + 17)
    perm = torch.randperm(len(train_idx), generator=g)[:n]
    return sorted(train_idx[i] for i in perm.tolist())


def batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``model`` that track running statistics."""
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def reestimate_bn(model: nn.Module, batches: Iterable[Batch], device: torch.device,
                  forward=None) -> None:
    """Reset every BatchNorm's running statistics and re-estimate them as a cumulative average
    over ``batches`` (training-mode forward passes, no gradients). ``forward(x)`` defaults to
    ``model(x)``; the model is left in eval mode."""
    bns = batchnorms(model)
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    forward = forward or model
    model.train()
    try:
        for x, _ in batches:
            forward(x.to(device, non_blocking=True))
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom
        model.eval()


@torch.no_grad()
def evaluate(forward, batches: Iterable[Batch], device: torch.device) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``forward(x)`` over ``batches``."""
    loss_sum, correct, n = 0.0, 0, 0
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        out = forward(x)
        loss_sum += float(nn.functional.cross_entropy(out, y, reduction="sum"))
        correct += int((out.argmax(1) == y).sum())
        n += len(y)
    return loss_sum / max(n, 1), correct / max(n, 1)


def copy_model(model: nn.Module) -> nn.Module:
    """A deep copy of a supernet without the last forward's op weights (part of that forward's
    autograd graph, which cannot be copied, and of no use to the copy)."""
    saved = getattr(model, "last_op_weights", None)
    model.last_op_weights = None
    try:
        return copy.deepcopy(model)
    finally:
        model.last_op_weights = saved


class Measurer:
    """Measures a supernet under fixed op weights with the protocol of the module docstring.

    Args:
        dataset: the searchable dataset.
        bn_idx: the images BatchNorm is re-estimated on (:func:`bn_indices`).
        val: the batches accuracy is measured on (every val image once).
        batch_size: batch size of the re-estimation.
        device: where the model lives.
        samples: sampled architectures averaged for stochastic activations.
        seed: the search's seed (fixes the sampled architectures).
    """

    def __init__(self, dataset: Dataset, bn_idx: list[int], val: Batches, batch_size: int,
                 device: torch.device, samples: int, seed: int) -> None:
        self.bn = Batches(dataset, bn_idx, batch_size, seed, False)
        self.val, self.device = val, device
        self.samples, self.seed = samples, seed

    def measure(self, net: nn.Module, op_weights: dict[str, torch.Tensor] | None = None,
                max_batches: int | None = None, data: torch.Tensor | None = None
                ) -> tuple[float, float]:
        """(loss, accuracy) on the val batches (the first ``max_batches`` of them, if given)
        after re-estimating BatchNorm; ``net`` is a copy it may change. ``op_weights`` (and the
        data axis' input weights ``data``) go to ``net(x, op_weights=..., data=...)`` if given;
        a supernet measured under ``op_weights`` with a data axis and no ``data`` mixes its
        inputs by a(γ) (never a fresh draw per batch)."""
        mixer = getattr(net, "data_mixer", None) if op_weights is not None else None
        if data is None and mixer is not None:
            data = mixer.probs(net.activation).detach()
        extra = {} if data is None else {"data": data}
        fwd = net if op_weights is None and data is None else (
            lambda x: net(x, op_weights=op_weights, **extra))
        reestimate_bn(net, self.bn.sequential(), self.device, fwd)
        return evaluate(fwd, itertools.islice(self.val.sequential(), max_batches), self.device)

    def supernet(self, model: nn.Module, masks: dict[str, torch.Tensor]) -> dict[str, float]:
        """``val_loss``, ``val_acc``, ``discrete_val_loss``, ``discrete_val_acc`` of ``model``
        (a :class:`~raydnas.model.supernet.Supernet`, left untouched) and its derived cell
        ``masks``. With a data axis the supernet is measured on its inputs mixed by a(γ) (or by
        the sampled draw's γ weights) and the derived cell on the chosen input alone (one-hot
        γ weights, through its inherited alignment): the data axis discretized with the cell."""
        was = model.training
        net = copy_model(model)
        try:
            act, mixer = net.activation, net.data_mixer
            gens = [torch.Generator().manual_seed(self.seed * _SAMPLE_SEED + s)
                    for s in range(self.samples)]
            draws = [{ct: act.sample(a, g) for ct, a in net.alphas.items()} for g in gens]
            data_draws = [None if mixer is None else act.sample(mixer.gamma, g) for g in gens]
            if any(w is None for d in draws for w in d.values()):  # deterministic activation
                loss, acc = self.measure(net, {ct: p.detach() for ct, p in net.op_probs().items()},
                                         data=None if mixer is None else mixer.probs(act).detach())
            else:
                res = [self.measure(net, d, data=None if dd is None else dd[0])
                       for d, dd in zip(draws, data_draws)]
                loss = sum(r[0] for r in res) / len(res)
                acc = sum(r[1] for r in res) / len(res)
            d_loss, d_acc = self.measure(net, masks,
                                         data=None if mixer is None else mixer.one_hot(act))
        finally:
            del net
            model.train(was)
        return {"val_loss": loss, "val_acc": acc, "discrete_val_loss": d_loss,
                "discrete_val_acc": d_acc}

    def hessian_eigenvalue(self, model: nn.Module, iters: int) -> float:
        """RobustDARTS's signal on ``model`` (left untouched: a copy is used): the dominant
        eigenvalue of ∇²_α of the cross-entropy on the first validation batch, in train mode
        (:func:`raydnas.search.hessian.dominant_eigenvalue`, seeded start vector; a stochastic
        activation's noise is held fixed)."""
        net = copy_model(model)
        net.train()
        x, y = next(iter(self.val.sequential()))
        x, y = x.to(self.device), y.to(self.device)
        g = torch.Generator().manual_seed(self.seed * _SAMPLE_SEED + 7)
        with net.activation.frozen_noise():
            return dominant_eigenvalue(lambda: nn.functional.cross_entropy(net(x), y),
                                       [*net.alphas.values(), *net.edge_betas.values()],
                                       iters, generator=g)  # not the data axis' γ

    def tuned(self, net: nn.Module, train: Batches, epochs: int, lr: float,
              optim: Any) -> dict[str, float]:
        """Fine-tune ``net`` (a stand-alone network, changed in place) for ``epochs`` passes over
        ``train`` and measure it: ``discrete_val_acc_tuned`` and ``discrete_val_loss_tuned``."""
        params = [p for p in net.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=lr, momentum=optim.w_momentum,
                              nesterov=optim.w_nesterov and optim.w_momentum > 0,
                              weight_decay=optim.w_weight_decay)
        total = max(1, epochs * len(train))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda t: 0.5 * (1 + math.cos(math.pi * min(t, total) / total)))
        net.train()
        for e in range(epochs):
            for x, y in train.iterate(e):
                x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
                opt.zero_grad(set_to_none=True)
                loss = nn.functional.cross_entropy(net(x), y)
                loss.backward()
                nn.utils.clip_grad_norm_(params, optim.w_grad_clip)
                opt.step()
                sched.step()
        loss, acc = self.measure(net)
        return {"discrete_val_acc_tuned": acc, "discrete_val_loss_tuned": loss}
