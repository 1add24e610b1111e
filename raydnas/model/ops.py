"""Candidate operations, as in DARTS (Liu et al. 2019) and NAS-Bench-201 (Dong & Yang 2020).

Every op is built by one factory signature ``OPS.create(name, C_in, C_out, stride, affine)``.
Ops with ``is_zero = True`` (``none``) output zeros; the mixed op never executes them, since
``w * 0`` contributes neither value nor gradient.

Speed (same math, checked against a plain reference by tests/test_speed_exactness.py): the
mixed op asks each op for ``w · op(x)`` through :func:`raydnas.model.weighting.weighted`; ops ending
in a non-affine BatchNorm fold ``w`` into it and ops starting with ReLU or pooling share one
relu(x) and one pool(x) per node (:mod:`raydnas.model.weighting`). Strided dilated convs run
undilated on the even subimage (:class:`PolyphaseConv2d`),
3×3 average pooling on large maps as a conv (:class:`AvgPool3x3`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import Registry
from .layout import memory_format
from .weighting import _times, scaled_bn

OPS: Registry[nn.Module] = Registry("op")


class Zero(nn.Module):
    """The ``none`` op: zeros of the output shape."""

    is_zero = True

    def __init__(self, C_out: int, stride: int) -> None:
        super().__init__()
        self.C_out = C_out
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        s = self.stride
        # in x's layout: an NCHW node among channels-last ones would put every op reading it
        # (and their gradients) on the slow paths
        return torch.empty(n, self.C_out, (h + s - 1) // s, (w + s - 1) // s, dtype=x.dtype,
                           device=x.device, memory_format=memory_format(x)).zero_()


class ReLUConvBN(nn.Sequential):
    """ReLU → conv → BatchNorm (DARTS's preprocessing and NB201's nor_conv ops)."""
    def __init__(self, C_in, C_out, kernel, stride, padding, dilation=1, affine=True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel, stride, padding, dilation=dilation, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    fuses_weight = True

    def forward(self, x, w=None, xr=None):
        """``w · op(x)`` (plain ``op(x)`` when ``w`` is None); ``xr``: a shared relu(x)."""
        h = self[1](xr() if xr is not None else self[0](x))
        return self[2](h) if w is None else scaled_bn(self[2], h, w)


class PolyphaseConv2d(nn.Conv2d):
    """``nn.Conv2d`` that runs a strided dilated conv as an undilated one on the input's
    even-phase subimage. Same parameters, same math (only the order of the additions differs).

    With dilation ``d``, stride ``d`` and "same" padding ``d·(k−1)/2``, output pixel (h, w)
    reads only input pixels (d·h', d·w'): the conv is the undilated conv (padding (k−1)/2) on the
    subimage ``x[..., ::d, ::d]``, a view, so backward saves nothing more. oneDNN's CPU backward
    for dilated depthwise convs at stride 2 is ≈10× slower than this (benchmarks/README.md).
    Stride 1 (the d² phase subimages stacked along the batch) measured only ≈1 % faster on the
    whole DARTS step and kept one more full-size tensor per op for backward: it runs plain.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d, k = self.dilation[0], self.kernel_size[0]
        if (d > 1 and k % 2 == 1 and self.dilation == (d, d) and self.stride == (d, d)
                and self.kernel_size == (k, k) and self.padding == (d * (k - 1) // 2,) * 2
                and self.padding_mode == "zeros"):
            return F.conv2d(x[..., ::d, ::d], self.weight, self.bias, 1, (k - 1) // 2, 1,
                            self.groups)
        return super().forward(x)


class DilConv(nn.Sequential):
    """ReLU, depthwise (dilated) conv, pointwise conv, BN."""

    def __init__(self, C_in, C_out, kernel, stride, padding, dilation, affine=True):
        super().__init__(
            nn.ReLU(inplace=False),
            PolyphaseConv2d(C_in, C_in, kernel, stride, padding, dilation=dilation, groups=C_in,
                            bias=False),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    fuses_weight = True

    def forward(self, x, w=None, xr=None):
        """``w · op(x)`` (plain ``op(x)`` when ``w`` is None); ``xr``: a shared relu(x)."""
        h = self[2](self[1](xr() if xr is not None else self[0](x)))
        return self[3](h) if w is None else scaled_bn(self[3], h, w)


class SepConv(nn.Sequential):
    """Two stacked depthwise-separable convs (the first carries the stride)."""

    def __init__(self, C_in, C_out, kernel, stride, padding, affine=True):
        super().__init__(
            DilConv(C_in, C_in, kernel, stride, padding, 1, affine),
            DilConv(C_in, C_out, kernel, 1, padding, 1, affine),
        )

    fuses_weight = True

    def forward(self, x, w=None, xr=None):
        return self[1](self[0](x, None, xr), w)


class FactorizedReduce(nn.Module):
    """Halve the resolution with two offset stride-2 1x1 convs (works for odd sizes too)."""

    def __init__(self, C_in: int, C_out: int, affine: bool = True) -> None:
        super().__init__()
        if C_out % 2:
            raise ValueError(f"FactorizedReduce needs an even C_out, but got {C_out=}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def _halves(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2] % 2 == 0 and x.shape[3] % 2 == 0:
            y = x[:, :, 1:, 1:]  # even sizes: the stride-2 taps never reach the pad (a view)
        else:
            y = F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        return torch.cat([self.conv_1(x), self.conv_2(y)], dim=1)

    fuses_weight = True

    def forward(self, x: torch.Tensor, w=None, xr=None) -> torch.Tensor:
        h = self._halves(xr() if xr is not None else self.relu(x))
        return self.bn(h) if w is None else scaled_bn(self.bn, h, w)


class _MaxPool3x3(torch.autograd.Function):
    """3x3 max pooling (padding 1) that saves no int64 argmax indices: the backward finds them
    again from the input, which the mixed op keeps alive anyway. Same values, same gradients
    (same tie-breaking); ~120 MB less peak memory on the DARTS space at C = 16, batch 16."""

    @staticmethod
    def forward(ctx, x, stride):
        ctx.save_for_backward(x)
        ctx.stride = stride
        return F.max_pool2d(x, 3, stride, 1)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        _, idx = F.max_pool2d(x, 3, ctx.stride, 1, return_indices=True)
        return torch.ops.aten.max_pool2d_with_indices_backward(
            g, x, [3, 3], [ctx.stride, ctx.stride], [1, 1], [1, 1], False, idx), None


class MaxPool3x3(nn.MaxPool2d):
    """``nn.MaxPool2d(3, stride, padding=1)`` without saved indices (see :class:`_MaxPool3x3`)."""

    def __init__(self, stride: int) -> None:
        super().__init__(3, stride=stride, padding=1)

    def forward(self, x):
        if torch.is_grad_enabled() and x.requires_grad:
            return _MaxPool3x3.apply(x, self.stride)
        return super().forward(x)


class AvgPool3x3(nn.AvgPool2d):
    """``nn.AvgPool2d(3, stride, padding=1, count_include_pad=False)`` computed as a depthwise
    conv with a ones kernel (the window sums) times 1/count (the cells inside the image). Same
    values up to rounding. oneDNN's channels-last depthwise conv is faster than the pooling
    kernel on large maps: at 16×16×32×32 ≈0.1 ms against ≈0.27 ms forward, ≈0.19 against ≈0.30 ms
    backward (benchmarks/README.md); on small maps pooling wins, so below ``min_pixels`` output
    pixels per channel the pooling kernel runs."""

    min_pixels = 1024

    def __init__(self, stride: int) -> None:
        super().__init__(3, stride=stride, padding=1, count_include_pad=False)
        self._inv_count: tuple | None = None  # (key, 1/count map) of the last input shape

    def forward(self, x):
        s = self.stride
        if x.dim() != 4 or ((x.shape[2] - 1) // s + 1) * ((x.shape[3] - 1) // s + 1) \
                < self.min_pixels:
            return super().forward(x)
        c, h, w = x.shape[1:]
        key = (h, w, x.device, x.dtype)
        if self._inv_count is None or self._inv_count[0] != key:
            ones = x.new_ones(1, 1, h, w)
            self._inv_count = (key, 1.0 / F.conv2d(ones, x.new_ones(1, 1, 3, 3), None, s, 1))
        k = x.new_ones(c, 1, 3, 3)
        if x.is_contiguous(memory_format=torch.channels_last):
            k = k.contiguous(memory_format=torch.channels_last)
        return F.conv2d(x, k, None, s, 1, 1, c) * self._inv_count[1]


class Pool(nn.Module):
    """3x3 max/avg pooling, with a 1x1 ReLUConvBN first if the channel count changes.

    DARTS's search network follows pooling by a non-affine BN; NAS-Bench-201's does not. That is
    a property of the space (``pool_bn`` in its YAML), passed as ``bn_after``.
    """

    is_pool = True

    def __init__(self, kind, C_in, C_out, stride, affine, bn_after=False):
        super().__init__()
        self.pre = ReLUConvBN(C_in, C_out, 1, 1, 0, affine=affine) if C_in != C_out else None
        if kind == "max":
            self.pool = MaxPool3x3(stride)
        else:
            self.pool = AvgPool3x3(stride)
        self.bn = nn.BatchNorm2d(C_out, affine=False) if bn_after else None

    fuses_weight = True

    def forward(self, x, w=None, xr=None):
        if self.pre is not None:
            x = self.pool(self.pre(x, None, xr))
        elif xr is not None and self.training:  # one pool(x) for all edges leaving the node
            x = xr.pooled(self.pool)
        else:
            x = self.pool(x)
        if w is None:
            return self.bn(x) if self.bn is not None else x
        return scaled_bn(self.bn, x, w) if self.bn is not None else _times(w, x)


def _skip(C_in, C_out, stride, affine):
    if stride == 1 and C_in == C_out:
        return nn.Identity()
    if stride == 2:
        return FactorizedReduce(C_in, C_out, affine)
    return ReLUConvBN(C_in, C_out, 1, 1, 0, affine=affine)


OPS.register("none")(lambda C_in, C_out, stride, affine: Zero(C_out, stride))
OPS.register("skip_connect")(_skip)
OPS.register("max_pool_3x3")(
    lambda C_in, C_out, stride, affine: Pool("max", C_in, C_out, stride, affine))
OPS.register("avg_pool_3x3")(
    lambda C_in, C_out, stride, affine: Pool("avg", C_in, C_out, stride, affine))
OPS.register("sep_conv_3x3")(
    lambda C_in, C_out, stride, affine: SepConv(C_in, C_out, 3, stride, 1, affine))
OPS.register("sep_conv_5x5")(
    lambda C_in, C_out, stride, affine: SepConv(C_in, C_out, 5, stride, 2, affine))
OPS.register("dil_conv_3x3")(
    lambda C_in, C_out, stride, affine: DilConv(C_in, C_out, 3, stride, 2, 2, affine))
OPS.register("dil_conv_5x5")(
    lambda C_in, C_out, stride, affine: DilConv(C_in, C_out, 5, stride, 4, 2, affine))
# NAS-Bench-201 convs (AutoDL-Projects cell_operations): ReLU-Conv-BN.
OPS.register("nor_conv_1x1")(
    lambda C_in, C_out, stride, affine: ReLUConvBN(C_in, C_out, 1, stride, 0, 1, affine))
OPS.register("nor_conv_3x3")(
    lambda C_in, C_out, stride, affine: ReLUConvBN(C_in, C_out, 3, stride, 1, 1, affine))

#: Ops that carry no weights (count towards ``param_free_ops``).
PARAM_FREE = frozenset({"none", "skip_connect", "max_pool_3x3", "avg_pool_3x3"})
