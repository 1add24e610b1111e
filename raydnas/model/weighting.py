"""How a mixed op applies its op weights ``w`` to ``op(x)`` without extra kernels.

:func:`weighted` asks each op for ``w · op(x)``. Ops ending in a non-affine BatchNorm fold ``w``
into it (:func:`scaled_bn`, ``w`` as a per-channel row of :func:`channel_weights`); ops starting
with ReLU or pooling take a :class:`SharedReLU`, so all ops of all edges leaving one node share
one relu(x) and one pool(x). Same math as ``w * op(x)``: tests/test_speed_exactness.py checks
values and gradients in float64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def scaled_bn(bn: nn.BatchNorm2d, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``w · bn(x)`` for an op weight ``w`` (a scalar, or the same value repeated per channel),
    in one kernel when ``bn`` is non-affine: ``w`` becomes the normalisation's scale, so no extra
    product (nor the tensor it saves for backward). Running statistics follow
    ``nn.BatchNorm2d``: exponential with ``bn.momentum``, a cumulative average when it is None."""
    if bn.affine:
        return _times(w, bn(x))
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:  # cumulative moving average, as nn.BatchNorm2d does
            momentum = 1.0 / float(bn.num_batches_tracked)
    use_batch = bn.training or bn.running_mean is None
    # contiguous: torch 2.14's CPU BN backward misreads a stride-0 weight on channels-last 1x1
    # maps (garbage input gradients; caught by tests/test_speed_exactness.py)
    scale = w if w.dim() == 1 else w.expand(x.shape[1]).contiguous()
    return F.batch_norm(x, bn.running_mean, bn.running_var, scale, None, use_batch,
                        momentum, bn.eps)


def _times(w: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``w · y`` for a scalar or per-channel (``[C]``) op weight ``w``."""
    return w * y if w.dim() == 0 else w.view(-1, 1, 1) * y


def channel_weights(w: torch.Tensor, channels: int) -> torch.Tensor:
    """``[..., ops]`` op weights → ``[..., ops, channels]``, each weight repeated per channel
    (contiguous). Made once per cell and forward, the rows serve :func:`scaled_bn` directly: two
    autograd nodes per cell instead of an expand and a copy per weighted BatchNorm."""
    return w.unsqueeze(-1).expand(*w.shape, channels).contiguous()


class SharedReLU:
    """relu(x), computed at most once however many ops ask for it (same value, one saved
    tensor instead of one per op; the gradients of all users meet in one threshold backward).

    :meth:`pooled` does the same for parameter-free pooling: all edges leaving one node pool the
    same x, so pool(x) is computed (and back-propagated) once per node and stride.
    """

    __slots__ = ("x", "_r", "_pooled")

    def __init__(self, x: torch.Tensor) -> None:
        self.x, self._r, self._pooled = x, None, None

    def __call__(self) -> torch.Tensor:
        if self._r is None:
            self._r = F.relu(self.x)
        return self._r

    def pooled(self, pool: nn.Module) -> torch.Tensor:
        """``pool(x)`` for a stateless pooling module, shared by modules of the same kind."""
        key = (type(pool), pool.kernel_size, pool.stride, pool.padding)
        if self._pooled is None:
            self._pooled = {}
        y = self._pooled.get(key)
        if y is None:
            y = self._pooled[key] = pool(self.x)
        return y


def weighted(op: nn.Module, x: torch.Tensor, w: torch.Tensor,
             xr: SharedReLU | None = None, wc: torch.Tensor | None = None) -> torch.Tensor:
    """``w · op(x)``. Ops with ``fuses_weight`` take ``op(x, w, xr)`` and apply ``w`` (and the
    shared relu) themselves, given the per-channel form ``wc`` (:func:`channel_weights`) when
    there is one; the call still goes through ``op.__call__`` (hooks see it)."""
    if getattr(op, "fuses_weight", False):
        return op(x, w if wc is None else wc, xr)
    return w * op(x)


