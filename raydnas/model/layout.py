"""Memory layouts of gradients.

A gradient that reaches a kernel in another layout than the kernel's input costs more than the
copy that fixes it: PyTorch's CPU BatchNorm backward on a channels-last input runs ≈ 3× slower
when the incoming gradient is NCHW, expanded or a channel slice (measured in benchmarks/README.md),
and the gradient of a concatenation is exactly such a slice. :func:`dense_grad` marks a tensor
whose gradient is made dense, in its own layout, once, before it fans out to its producers.
"""

from __future__ import annotations

import torch


class _DenseGrad(torch.autograd.Function):
    """Identity forward; backward returns the gradient contiguous in ``fmt`` (a no-op when it
    already is). Built from differentiable ops, so double backward passes through it."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, fmt: torch.memory_format) -> torch.Tensor:
        ctx.fmt = fmt
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        return g.contiguous(memory_format=ctx.fmt), None


def memory_format(x: torch.Tensor) -> torch.memory_format:
    """``x``'s layout: channels-last for a 4-D channels-last tensor, else contiguous."""
    return torch.channels_last if x.dim() == 4 and x.is_contiguous(
        memory_format=torch.channels_last) else torch.contiguous_format


def dense_grad(x: torch.Tensor) -> torch.Tensor:
    """``x``, whose gradient will arrive contiguous in ``x``'s own layout (channels-last when
    ``x`` is). Same values and gradients; ``x`` itself when no gradient will flow to it."""
    if x.dim() != 4 or not x.requires_grad or not torch.is_grad_enabled():
        return x
    return _DenseGrad.apply(x, memory_format(x))
