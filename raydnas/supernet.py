"""The weight-sharing supernet: mixed ops, cells and the two macro skeletons (DARTS, NB201).

α are registered ``nn.Parameter``s in ``self.alphas`` (one ``[edges, ops]`` tensor per cell type,
shared by all cells of that type) and kept apart from the weights: ``arch_parameters()`` and
``weight_parameters()``. The activation (softmax, CRB, Gumbel, ...) turns α into op weights once
per forward pass. No device is hard-coded: move the module with ``.to(device)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from .ops import (OPS, FactorizedReduce, Pool, ReLUConvBN, SharedReLU, Zero, channel_weights,
                  weighted)
from .spaces import SearchSpace

if TYPE_CHECKING:
    from .axes.activation import Activation


class MixedOp(nn.Module):
    """ō(x) = Σ_k w_k · o_k(x) over the ops that the activation marks active."""

    def __init__(self, op_names, C_in, C_out, stride, pool_bn):
        super().__init__()
        ops = []
        for name in op_names:
            op = OPS.create(name, C_in, C_out, stride, False)
            if pool_bn and isinstance(op, Pool):
                op.bn = nn.BatchNorm2d(C_out, affine=False)
            ops.append(op)
        self._ops = nn.ModuleList(ops)
        self._zero = Zero(C_out, stride)

    def forward(self, x: torch.Tensor, w: torch.Tensor, active: list[int],
                xr: SharedReLU | None = None, wc: torch.Tensor | None = None) -> torch.Tensor:
        """``w``: this edge's ``[ops]`` weights; ``wc``: the same as ``[ops, C_out]``
        (:func:`~raydnas.ops.channel_weights`, optional); ``xr``: relu(x) shared with the other
        edges leaving the same node (optional)."""
        if not active:  # every op of this edge is off: the edge contributes zeros
            return self._zero(x)
        ws = w.unbind(0)
        wcs = wc.unbind(0) if wc is not None else None
        xr = xr if xr is not None else SharedReLU(x)
        out = None
        for k in active:
            y = weighted(self._ops[k], x, ws[k], xr, None if wcs is None else wcs[k])
            # y is a fresh product (no backward saves it): accumulate in place
            out = y if out is None else out.add_(y)
        return out


class Cell(nn.Module):
    """A searchable cell: node j = Σ_{i<j} MixedOp_{i,j}(x_i), optional node BatchNorm."""

    def __init__(self, space: SearchSpace, op_names, C_in: list[int], C: int, reduction: bool,
                 reduction_prev: bool, node_norm: bool):
        super().__init__()
        self.reduction = reduction
        self.space = space
        self.C = C
        if space.macro == "darts":
            self.pre = nn.ModuleList([
                FactorizedReduce(C_in[0], C, affine=False) if reduction_prev
                else ReLUConvBN(C_in[0], C, 1, 1, 0, affine=False),
                ReLUConvBN(C_in[1], C, 1, 1, 0, affine=False),
            ])
        else:
            self.pre = None
        self.edges = nn.ModuleList()
        for i, j in space.edges:
            stride = 2 if reduction and i < space.inputs else 1
            self.edges.append(MixedOp(op_names, C, C, stride, space.pool_bn))
        self.node_bn = (nn.ModuleList(nn.BatchNorm2d(C, affine=False) for _ in range(space.nodes))
                        if node_norm else None)

    def forward(self, inputs: list[torch.Tensor], w: torch.Tensor, active: list[list[int]]):
        states = [p(x) for p, x in zip(self.pre, inputs)] if self.pre is not None else list(inputs)
        relus = [SharedReLU(x) for x in states]
        ws, wcs = w.unbind(0), channel_weights(w, self.C).unbind(0)
        e = 0
        for j in range(self.space.nodes):
            s = None
            for i in range(len(states)):
                if active[e]:  # an edge with every op off adds nothing (no zeros made)
                    y = self.edges[e](states[i], ws[e], active[e], relus[i], wcs[e])
                    s = y if s is None else s.add_(y)
                e += 1
            if s is None:  # every edge into node j is off
                s = self.edges[e - 1](states[-1], ws[e - 1], [])
            if self.node_bn is not None:
                s = self.node_bn[j](s)
            states.append(s)
            relus.append(SharedReLU(s))
        if self.space.output == "concat":
            return torch.cat(states[self.space.inputs:], dim=1)
        return states[-1]


class ResNetBasicBlock(nn.Module):
    """NAS-Bench-201's stride-2 residual block between stages."""

    def __init__(self, C_in: int, C_out: int):
        super().__init__()
        self.conv_a = ReLUConvBN(C_in, C_out, 3, 2, 1, affine=True)
        self.conv_b = ReLUConvBN(C_out, C_out, 3, 1, 1, affine=True)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(C_in, C_out, 1, bias=False))

    def forward(self, x):
        return self.conv_b(self.conv_a(x)) + self.downsample(x)


class Supernet(nn.Module):
    """The supernet of a space. ``forward(x)`` uses the activation's op weights;
    ``forward(x, op_weights=masks)`` runs a fixed (e.g. discretized) weighting instead."""

    def __init__(self, space: SearchSpace, activation: "Activation", num_classes: int,
                 in_channels: int = 3, channels: int | None = None, cells: int | None = None,
                 seed: int = 0):
        super().__init__()
        if activation.drops_ops:
            space = space.without_ops(activation.drops_ops)
        self.space = space
        self.activation = activation
        C = channels or space.channels
        L = cells or space.cells
        self.zero_ops = frozenset(k for k, o in enumerate(space.ops) if o == "none")
        node_norm = activation.node_norm
        self.cells = nn.ModuleList()
        if space.macro == "darts":
            C_stem = space.stem_multiplier * C
            self.stem = nn.Sequential(nn.Conv2d(in_channels, C_stem, 3, padding=1, bias=False),
                                      nn.BatchNorm2d(C_stem))
            C_pp, C_p, C_cur = C_stem, C_stem, C
            reduce_at = {L // 3, 2 * L // 3}
            reduction_prev = False
            for i in range(L):
                reduction = i in reduce_at
                if reduction:
                    C_cur *= 2
                self.cells.append(Cell(space, space.ops, [C_pp, C_p], C_cur, reduction,
                                       reduction_prev, node_norm))
                reduction_prev = reduction
                C_pp, C_p = C_p, space.nodes * C_cur
            self.head = nn.Identity()
            C_last = C_p
        else:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, C, 3, padding=1, bias=False),
                                      nn.BatchNorm2d(C))
            C_cur = C
            for s in range(space.stages):
                if s > 0:
                    self.cells.append(ResNetBasicBlock(C_cur, 2 * C_cur))
                    C_cur *= 2
                for _ in range(L):
                    self.cells.append(Cell(space, space.ops, [C_cur], C_cur, False, False,
                                           node_norm))
            self.head = nn.Sequential(nn.BatchNorm2d(C_cur), nn.ReLU(inplace=False))
            C_last = C_cur
        self.classifier = nn.Linear(C_last, num_classes)
        # NHWC: oneDNN's depthwise/pointwise convs and pooling run ~2x faster on CPU in this
        # layout (benchmarks/README.md); the input is converted in forward. Same math.
        self.to(memory_format=torch.channels_last)
        g = torch.Generator().manual_seed(seed)
        shape = (space.num_edges, len(space.ops))
        self.alphas = nn.ParameterDict(
            {ct: nn.Parameter(activation.init_alpha(shape, g)) for ct in space.cell_types})

    # -- parameter groups -------------------------------------------------------------------
    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.alphas.values())

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.alphas.values()}
        return [p for p in self.parameters() if id(p) not in arch]

    def named_weight_parameters(self):
        return [(n, p) for n, p in self.named_parameters() if not n.startswith("alphas.")]

    # -- op weights -------------------------------------------------------------------------
    def op_probs(self) -> dict[str, torch.Tensor]:
        """Deterministic a(α) per cell type (for discretization, regularizers, logging)."""
        return {ct: self.activation.probs(a) for ct, a in self.alphas.items()}

    def op_weights(self) -> dict[str, torch.Tensor]:
        """The op weights of one forward pass (sampled for stochastic activations)."""
        return {ct: self.activation.weights(a, self.training) for ct, a in self.alphas.items()}

    def forward(self, x: torch.Tensor, op_weights: dict[str, torch.Tensor] | None = None):
        if op_weights is None:
            op_weights = self.op_weights()
            active = {ct: self.activation.active_ops(ct, w, self.zero_ops)
                      for ct, w in op_weights.items()}
        else:
            active = {ct: [[k for k in torch.nonzero(row).flatten().tolist()
                            if k not in self.zero_ops] for row in w.detach().cpu()]
                      for ct, w in op_weights.items()}
            op_weights = {ct: w.to(device=x.device, dtype=x.dtype) for ct, w in op_weights.items()}
        s = self.stem(x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x)
        prev = [s, s]
        for cell in self.cells:
            if isinstance(cell, Cell):
                ct = "reduce" if cell.reduction else "normal"
                if self.space.macro == "darts":
                    out = cell(prev, op_weights[ct], active[ct])
                else:
                    out = cell([prev[1]], op_weights[ct], active[ct])
            else:
                out = cell(prev[1])
            prev = [prev[1], out]
        out = self.head(prev[1])
        out = nn.functional.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.classifier(out)
