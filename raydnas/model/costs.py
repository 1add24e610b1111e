"""Cost tables of a supernet's candidate ops: parameters or multiply-adds per (cell, edge, op).

Used through :meth:`raydnas.model.supernet.Supernet.op_costs` (the resource regularizer's costs).
"""

from __future__ import annotations

from typing import Any

import torch

from .latency import op_latency
from .mixed import unfused


def _macs(mod: torch.nn.Module, out: torch.Tensor) -> int:
    """Multiply-adds of one forward of a conv, linear or pooling layer (its output ``out``,
    batch of one): per output element, the kernel's inputs."""
    per = out[0].numel()
    if isinstance(mod, torch.nn.Conv2d):
        return per * mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
    if isinstance(mod, torch.nn.Linear):
        return per * mod.in_features
    if isinstance(mod, (torch.nn.MaxPool2d, torch.nn.AvgPool2d)):
        k = mod.kernel_size if isinstance(mod.kernel_size, int) else mod.kernel_size[0]
        return per * k * k
    return 0


@torch.no_grad()
def network_macs(net: torch.nn.Module, x: torch.Tensor, skip: str = "auxiliary_head") -> int:
    """Multiply-adds of one forward of a whole network on ``x`` (a batch of one): its convs,
    linear layers and poolings, the modules named under ``skip`` left out (DARTS's auxiliary
    head, which only training runs)."""
    total = [0]
    hooks = [m.register_forward_hook(lambda mod, i, o: total.__setitem__(0, total[0]
                                                                         + _macs(mod, o)))
             for n, m in net.named_modules() if not n.startswith(skip)]
    was = net.training
    net.eval()
    try:
        net(x)
    finally:
        net.train(was)
        for h in hooks:
            h.remove()
    return int(total[0])


@torch.no_grad()
def op_costs(model: Any, kind: str, x: torch.Tensor | None = None,
             data: int | None = None) -> dict[str, torch.Tensor]:
    """Per cell type a ``[cells, edges, ops]`` tensor: the cost of every candidate op of every
    cell of that type (``params``: its weights; ``flops``: its multiply-adds on ``x``;
    ``latency``: its measured time on ``x``'s device, ms, :mod:`raydnas.model.latency`).
    ``data``: the data axis' configuration whose input the cells run on (its index)."""
    data_arg = {} if data is None else {"data": data}
    if kind == "latency":
        return op_latency(model, x, data=data)
    ops = list(model.mixed_ops())
    n_cells = {ct: 1 + max(i for i, c, *_ in ops if c == ct) for ct in model.alphas}
    costs = {ct: torch.zeros((n_cells[ct], *a.shape)) for ct, a in model.alphas.items()}
    if kind == "params":
        for i, ct, e, k, op in ops:
            costs[ct][i, e, k] = sum(p.numel() for p in op.parameters())
        return costs

    def hook(mod, inp, out, acc):
        acc[0] += _macs(mod, out)

    hooks, counters = [], []
    for i, ct, e, k, op in ops:
        acc = [0.0]
        counters.append((i, ct, e, k, acc))
        for m in op.modules():
            hooks.append(m.register_forward_hook(
                lambda mod, inp, o, acc=acc: hook(mod, inp, o, acc)))
    was = model.training
    model.eval()
    try:
        with unfused(model):  # fused kernels never call the op modules the hooks count
            model(x, op_weights={ct: torch.ones(a.shape, device=x.device)
                                 for ct, a in model.alphas.items()}, **data_arg)
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    for i, ct, e, k, acc in counters:
        costs[ct][i, e, k] = acc[0]
    return costs
