"""Ops of one kind on the edges that leave the same node, computed as one wider kernel.

Every edge leaving node i applies its ops to the same x (and the same relu(x)). For an op kind
active on several of those edges, the edges' convs run as one conv whose output channels are the
edges' side by side (edge-major), and their BatchNorms as one BatchNorm over those channels:

* ``ReLUConvBN`` (NB201's ``nor_conv_1x1``/``nor_conv_3x3``): one conv with the edges' kernels
  concatenated, ``[S·C_out, C_in, k, k]``.
* ``DilConv`` (``dil_conv_*``; each half of ``SepConv``): x repeated S times along the channels,
  one depthwise conv with ``S·C_in`` groups, one pointwise conv with S groups.
* ``SepConv``: both halves as above; the second half's input is already edge-major.

BatchNorm is per channel, so one ``F.batch_norm`` over the S·C channels with the edges' running
statistics concatenated is the same math; the updated statistics are copied back into each
edge's module. The op weight w_e is folded into the last BatchNorm as in
:func:`raydnas.model.weighting.scaled_bn`. Values and gradients (α and weights) equal the unfused
path up to float rounding (float64 tests in tests/test_fusion.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .ops import DilConv, ReLUConvBN, SepConv
from .weighting import SharedReLU, scaled_bn


def fusable(op: nn.Module) -> bool:
    """Whether ``op`` can run fused with others of its kind (non-affine BatchNorms only)."""
    if isinstance(op, ReLUConvBN):
        return not op[2].affine
    if isinstance(op, DilConv):
        return not op[3].affine
    if isinstance(op, SepConv):
        return fusable(op[0]) and fusable(op[1])
    return False


def signature(op: nn.Module) -> tuple:
    """Ops with equal signatures fuse: same class and the same conv and BatchNorm settings."""
    convs = tuple((m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation,
                   m.groups) for m in op.modules() if isinstance(m, nn.Conv2d))
    bns = tuple((m.momentum, m.eps) for m in op.modules() if isinstance(m, nn.BatchNorm2d))
    return (type(op), convs, bns)


def run_fused(ops: list[nn.Module], xr: SharedReLU,
              scales: list[torch.Tensor]) -> list[torch.Tensor]:
    """``scales[j] · ops[j](x)`` for ops of one signature on one input (``xr``: its shared
    relu); ``scales[j]``: the per-channel op weight rows (``[C_out]``). One tensor per op, views
    of one edge-major tensor."""
    op = ops[0]
    scale = torch.cat(scales)
    if isinstance(op, ReLUConvBN):
        conv = op[1]
        h = _conv(conv, xr(), torch.cat([o[1].weight for o in ops]), conv.groups)
        out = _batch_norm([o[2] for o in ops], h, scale)
    elif isinstance(op, DilConv):
        out = _dil([o for o in ops], xr().repeat(1, len(ops), 1, 1), scale)
    else:
        first = _dil([o[0] for o in ops], xr().repeat(1, len(ops), 1, 1), None)
        out = _dil([o[1] for o in ops], F.relu(first), scale)
    # split: one backward node that concatenates the edges' gradients (narrow's would each
    # allocate a full-size zero tensor)
    return list(out.split(out.shape[1] // len(ops), dim=1))


def _dil(ops: list[DilConv], x: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    """The S DilConvs (without their ReLU) on the edge-major input ``x`` (``[N, S·C_in, ...]``)."""
    s = len(ops)
    dw, pw = ops[0][1], ops[0][2]
    h = _conv(dw, x, torch.cat([o[1].weight for o in ops]), s * dw.groups)
    h = F.conv2d(h, torch.cat([o[2].weight for o in ops]), None, pw.stride, pw.padding,
                 pw.dilation, s * pw.groups)
    return _batch_norm([o[3] for o in ops], h, scale)


def _conv(conv: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor, groups: int) -> torch.Tensor:
    """``conv``'s settings with another weight and group count; a strided dilated conv runs
    undilated on the even-phase subimage as :class:`raydnas.model.ops.PolyphaseConv2d` does."""
    d, k = conv.dilation[0], conv.kernel_size[0]
    if (d > 1 and k % 2 == 1 and conv.dilation == (d, d) and conv.stride == (d, d)
            and conv.kernel_size == (k, k) and conv.padding == (d * (k - 1) // 2,) * 2):
        return F.conv2d(x[..., ::d, ::d], weight, None, 1, (k - 1) // 2, 1, groups)
    return F.conv2d(x, weight, None, conv.stride, conv.padding, conv.dilation, groups)


def _batch_norm(bns: list[nn.BatchNorm2d], x: torch.Tensor,
                scale: torch.Tensor | None) -> torch.Tensor:
    """S non-affine BatchNorms over their channel blocks of ``x``, as one; ``scale``: the op
    weights folded in (None: 1). Running statistics follow ``nn.BatchNorm2d`` per module."""
    bn = bns[0]
    training = bn.training or bn.running_mean is None
    track = bn.training and bn.track_running_stats and bn.running_mean is not None
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if track:
        for b in bns:
            b.num_batches_tracked.add_(1)
        if bn.momentum is None:  # cumulative average: each module by its own count
            counts = torch.cat([b.num_batches_tracked.expand(b.num_features) for b in bns])
            momentum = None if len(set(counts.tolist())) > 1 else 1.0 / float(counts[0])
    rm = rv = None
    if bn.running_mean is not None:
        rm = torch.cat([b.running_mean for b in bns])
        rv = torch.cat([b.running_var for b in bns])
    if momentum is None:  # unequal counts: one BatchNorm per module (rare: measurement only)
        c = x.shape[1] // len(bns)
        scales = scale.split(c) if scale is not None else [x.new_ones(c)] * len(bns)
        for b in bns:
            b.num_batches_tracked.sub_(1)  # scaled_bn counts again
        return torch.cat([scaled_bn(b, x.narrow(1, j * c, c), scales[j])
                          for j, b in enumerate(bns)], 1)
    out = F.batch_norm(x, rm, rv, scale, None, training, momentum, bn.eps)
    if track:
        c = bn.num_features
        with torch.no_grad():
            for j, b in enumerate(bns):
                b.running_mean.copy_(rm[j * c:(j + 1) * c])
                b.running_var.copy_(rv[j * c:(j + 1) * c])
    return out
