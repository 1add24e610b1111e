"""Every registered op: forward and backward on tiny shapes, every parameter gets a gradient."""

import pytest
import torch

from raydnas.model.ops import OPS, PARAM_FREE


@pytest.mark.parametrize("name", OPS.names())
@pytest.mark.parametrize("stride", [1, 2])
def test_op_forward_backward(name, stride):
    torch.manual_seed(0)
    op = OPS.create(name, 4, 4, stride, True)
    x = torch.randn(2, 4, 7, 7, requires_grad=True)
    y = op(x)
    assert y.shape == (2, 4, 4 if stride == 2 else 7, 4 if stride == 2 else 7)
    if name == "none":
        assert torch.count_nonzero(y) == 0
        return
    y.square().sum().backward()
    for n, p in op.named_parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) > 0, n
    assert x.grad is not None and torch.count_nonzero(x.grad) > 0


@pytest.mark.parametrize("name", OPS.names())
def test_param_free_ops_have_no_weights_at_stride_1(name):
    op = OPS.create(name, 4, 4, 1, True)
    n = sum(p.numel() for p in op.parameters())
    assert (n == 0) == (name in PARAM_FREE)


def test_unknown_op_names_the_known_ones():
    with pytest.raises(KeyError, match="sep_conv_3x3"):
        OPS.create("sep_conv_9x9", 4, 4, 1, True)
