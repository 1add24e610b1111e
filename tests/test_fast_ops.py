"""The speed-motivated op implementations give the stock op's values and gradients.

Each is checked in float64 against the plain PyTorch op it replaces: forward, first-order
gradients (input and weight), and double backward (iDARTS's Hessian-vector products and the
unrolled/autograd exactness tests go through these ops).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from raydnas.model.ops import AvgPool3x3, PolyphaseConv2d
from raydnas.model.weighting import SharedReLU

CL = torch.channels_last


def _close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kernel", [3, 5])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [8, 9])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_polyphase_conv_equals_dilated_conv(kernel, stride, size, layout):
    torch.manual_seed(0)
    C, d = 3, 2
    conv = PolyphaseConv2d(C, C, kernel, stride, d * (kernel - 1) // 2, dilation=d, groups=C,
                           bias=False).double()
    x = torch.randn(2, C, size, size, dtype=torch.double)
    if layout == "channels_last":
        conv, x = conv.to(memory_format=CL), x.contiguous(memory_format=CL)
    x.requires_grad_(True)
    y = conv(x)
    ref = F.conv2d(x, conv.weight, None, stride, conv.padding, d, C)
    assert y.shape == ref.shape
    _close(y, ref)
    g = torch.randn_like(ref)
    got = torch.autograd.grad(y, (x, conv.weight), g)
    want = torch.autograd.grad(ref, (x, conv.weight), g)
    for a, b in zip(got, want):
        _close(a, b)
    if size == 8:
        assert torch.autograd.gradgradcheck(
            lambda x, w: torch.func.functional_call(conv, {"weight": w}, (x,)),
            (x, conv.weight))


def _reads_subimage(y: torch.Tensor) -> bool:
    """Whether the conv that made ``y`` read a strided slice of its input (the fast path)."""
    inputs = [f for f, _ in y.grad_fn.next_functions if f is not None]
    return any("Slice" in type(f).__name__ for f in inputs)


def test_polyphase_conv_takes_the_fast_path_only_where_exact():
    # stride = dilation with "same" padding and an odd kernel: the undilated conv on the even
    # subimage; anything else must run the stock dilated conv (and give its result).
    x = torch.randn(1, 2, 8, 8, requires_grad=True)
    for stride, pad, k, fast in [(2, 2, 3, True), (2, 4, 5, True), (1, 2, 3, False),
                                 (2, 1, 3, False), (2, 3, 4, False)]:
        conv = PolyphaseConv2d(2, 2, k, stride, pad, dilation=2, groups=2, bias=False)
        y = conv(x)
        torch.testing.assert_close(y, F.conv2d(x, conv.weight, None, stride, pad, 2, 2))
        assert _reads_subimage(y) == fast, (stride, pad, k)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [7, 8, 32])
def test_conv_avg_pool_equals_avg_pool(stride, size):
    torch.manual_seed(0)
    pool = AvgPool3x3(stride)
    pool.min_pixels = 0  # always the conv path (the default uses it only on large maps)
    ref_pool = torch.nn.AvgPool2d(3, stride, 1, count_include_pad=False)
    for layout in ("nchw", "channels_last"):
        x = torch.randn(2, 3, size, size, dtype=torch.double)
        if layout == "channels_last":
            x = x.contiguous(memory_format=CL)
        x.requires_grad_(True)
        y, ref = pool(x), ref_pool(x)
        _close(y, ref)
        g = torch.randn_like(ref)
        _close(torch.autograd.grad(y, x, g)[0], torch.autograd.grad(ref, x, g)[0])
    if size <= 8:
        assert torch.autograd.gradgradcheck(pool, (x,))


def test_conv_avg_pool_default_threshold_switches_on_map_size():
    pool = AvgPool3x3(1)
    small, large = torch.randn(1, 2, 8, 8), torch.randn(1, 2, 32, 32)
    ref = torch.nn.AvgPool2d(3, 1, 1, count_include_pad=False)
    torch.testing.assert_close(pool(small), ref(small))
    torch.testing.assert_close(pool(large), ref(large))
    assert 8 * 8 < pool.min_pixels <= 32 * 32


def test_shared_pooling_runs_once_per_node_and_stride():
    from raydnas.model.ops import MaxPool3x3

    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    node = SharedReLU(x)
    calls = []
    pools = [MaxPool3x3(1), MaxPool3x3(1), MaxPool3x3(2), AvgPool3x3(1)]
    for p in pools:
        p.register_forward_hook(lambda m, i, o: calls.append(type(m).__name__))
    outs = [node.pooled(p) for p in pools]
    assert calls == ["MaxPool3x3", "MaxPool3x3", "AvgPool3x3"]  # the second stride-1 max: reused
    assert outs[0] is outs[1]
    torch.testing.assert_close(outs[2], F.max_pool2d(x, 3, 2, 1))
    torch.testing.assert_close(outs[3], F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))


def _tuned_in_subprocess(env_extra: dict) -> str:
    code = "from raydnas import allocator; print(allocator.tune())"
    env = {k: v for k, v in os.environ.items()
           if k not in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "RAYDNAS_MALLOPT")}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_allocator_tuning_is_applied_once_and_can_be_turned_off():
    assert _tuned_in_subprocess({}) == "True"
    assert _tuned_in_subprocess({"RAYDNAS_MALLOPT": "0"}) == "False"
    assert _tuned_in_subprocess({"MALLOC_TRIM_THRESHOLD_": "1000000"}) == "False"


@pytest.mark.parametrize("space", ["darts", "nb201"])
def test_a_node_whose_edges_are_all_off_is_zeros_of_the_right_shape(space):
    # Edges with every op off are skipped; a node left with no active edge must still be zeros
    # of its shape (in a reduction cell too), and the cell output must match the plain path.
    from raydnas.axes.activation import ACTIVATIONS
    from raydnas.model.spaces import load_space
    from raydnas.model.supernet import Supernet

    net = Supernet(load_space(space), ACTIVATIONS.create("softmax"), 10, channels=4, cells=3)
    x = torch.randn(2, 3, 16, 16)
    weights = {}
    for ct, a in net.alphas.items():
        w = torch.zeros(a.shape)
        w[:, net.space.ops.index("skip_connect")] = 1.0
        w[: net.space.inputs + 1 if space == "darts" else 1] = 0.0  # node 0: no edge on
        weights[ct] = w
    y = net(x, op_weights=weights)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from reference import plain_forward

    torch.testing.assert_close(y, plain_forward(net, x, weights))


@pytest.mark.parametrize("size", [8, 32])
def test_scaled_bn_equals_weighted_batch_norm_with_running_stats(size):
    # w·BN(x) for a non-affine BN in training, w folded into the normalisation as a
    # per-channel row: values, input and weight gradients and the running statistics equal
    # the stock BatchNorm's.
    from raydnas.model.weighting import channel_weights, scaled_bn

    torch.manual_seed(0)
    ours, ref = (torch.nn.BatchNorm2d(8, affine=False).double() for _ in range(2))
    x = torch.randn(2, 8, size, size, dtype=torch.double).contiguous(memory_format=CL)
    x.requires_grad_(True)
    w = torch.tensor(0.7, dtype=torch.double, requires_grad=True)
    y = scaled_bn(ours, x, channel_weights(w.view(1), 8)[0])
    y_ref = w * ref(x)
    _close(y, y_ref)
    assert y.is_contiguous(memory_format=CL)
    g = torch.randn_like(y_ref)
    for a, b in zip(torch.autograd.grad(y, (x, w), g), torch.autograd.grad(y_ref, (x, w), g)):
        _close(a, b)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(ours, name), getattr(ref, name))


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_dense_grad_is_the_identity_and_densifies_a_sliced_gradient(layout):
    from raydnas.model.layout import dense_grad

    fmt = CL if layout == "channels_last" else torch.contiguous_format
    a = torch.randn(2, 3, 5, 5, dtype=torch.float64).to(memory_format=fmt).requires_grad_()
    b = torch.randn(2, 4, 5, 5, dtype=torch.float64).to(memory_format=fmt).requires_grad_()
    seen = []

    def cell(x, y, dense):
        x = x * 2  # the node: a non-leaf, so the hook sees its incoming gradient
        x.register_hook(lambda g: seen.append(g.is_contiguous(memory_format=fmt)))
        x2 = dense_grad(x) if dense else x
        return torch.cat([x2, y], 1).pow(2).sum()

    out = cell(a, b, True)
    assert torch.equal(out, cell(a, b, False))
    ga, gb = torch.autograd.grad(cell(a, b, True), (a, b), create_graph=True)
    ra, rb = torch.autograd.grad(cell(a, b, False), (a, b), create_graph=True)
    assert torch.equal(ga, ra) and torch.equal(gb, rb)
    assert seen == [True, False]  # the channel slice arrives dense only through dense_grad
    # double backward passes through (iDARTS's Hessian-vector products)
    hv = torch.autograd.grad(ga.sum(), a)[0]
    _close(hv, torch.autograd.grad(ra.sum(), a)[0])
    assert dense_grad(a.detach()) is not None and not dense_grad(a.detach()).requires_grad


@pytest.mark.parametrize("space,activation", [("darts", "softmax"), ("nb201", "gumbel_hard")])
def test_supernet_batchnorms_see_channels_last_inputs_and_gradients(space, activation):
    """Every BatchNorm of the channels-last supernet gets its input and its gradient
    channels-last: a concatenation's channel slice (DARTS cells) or an NCHW ``none`` edge (GDAS
    samples it) would put the kernels reading them on paths ≈ 3× slower on the CPU."""
    from raydnas.axes import ACTIVATIONS
    from raydnas.model.spaces import load_space
    from raydnas.model.supernet import Supernet

    torch.manual_seed(0)
    net = Supernet(load_space(space), ACTIVATIONS.create(activation), 10, 3, channels=4,
                   cells=3 if space == "darts" else 1, seed=0)
    inputs, grads = [], []
    orig = F.batch_norm

    def bn(x, *a, **k):
        y = orig(x, *a, **k)
        inputs.append(x.is_contiguous(memory_format=CL))
        if y.requires_grad:
            y.register_hook(lambda g: grads.append(g.is_contiguous(memory_format=CL)))
        return y

    F.batch_norm = bn
    try:
        for _ in range(4):  # GDAS: fresh samples, some edges draw none
            net(torch.randn(2, 3, 16, 16)).logsumexp(1).sum().backward()
    finally:
        F.batch_norm = orig
    assert len(grads) > 20 and all(inputs) and all(grads)
