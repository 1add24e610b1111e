"""Fused ops (raydnas.model.fusion) against the same supernet unfused, in float64: outputs, the
gradients of α and of every weight, and the BatchNorm running statistics, for every fused form
(ReLUConvBN, DilConv, SepConv), in training and eval mode, with every op active (softmax), a
pruned subset (CRB) and one op per edge (GDAS)."""

from __future__ import annotations

import copy

import pytest
import torch

from raydnas.axes import AXES
from raydnas.model.fusion import fusable, run_fused
from raydnas.model.mixed import Cell
from raydnas.model.ops import OPS
from raydnas.model.spaces import load_space
from raydnas.model.supernet import Supernet
from raydnas.model.weighting import SharedReLU

D = torch.float64


def _pair(space: str, activation: str, C: int = 4, cells: int = 3):
    net = Supernet(load_space(space), AXES["activation"].create(activation), 10, 3, C, cells,
                   seed=0, fuse=True).to(D)
    plain = copy.deepcopy(net)
    for c in plain.modules():
        if isinstance(c, Cell):
            c.fuse = False
    assert all(c.fuse for c in net.modules() if isinstance(c, Cell))
    return net, plain


def _run(net, x, y, seed):
    torch.manual_seed(seed)  # the same Gumbel draw in both nets
    for p in net.parameters():
        p.grad = None
    out = net(x)
    torch.nn.functional.cross_entropy(out, y).backward()
    return out.detach()


def _compare(net, plain, x, y, seed=0):
    a, b = _run(net, x, y, seed), _run(plain, x, y, seed)
    assert torch.allclose(a, b, rtol=1e-10, atol=1e-12), float((a - b).abs().max())
    for (n, p), q in zip(net.named_parameters(), plain.parameters()):
        if p.grad is None or q.grad is None:
            assert p.grad is None and q.grad is None, n
            continue
        assert torch.allclose(p.grad, q.grad, rtol=1e-9, atol=1e-12), n
    for (n, s), t in zip(net.named_buffers(), plain.buffers()):
        assert torch.allclose(s.to(D), t.to(D), rtol=1e-10, atol=1e-12), n


def _data(n=6, side=16):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, side, side, generator=g, dtype=D), torch.randint(0, 10, (n,),
                                                                              generator=g)


def _fused_calls(net):
    """How many fused groups a forward runs (the test must exercise fusion at all)."""
    from raydnas.model import mixed as sn

    count = [0]
    orig = sn.run_fused

    def counting(*a, **k):
        count[0] += 1
        return orig(*a, **k)

    sn.run_fused = counting
    try:
        net(_data()[0])
    finally:
        sn.run_fused = orig
    return count[0]


@pytest.mark.parametrize("space,activation", [
    ("darts", "softmax"), ("nb201", "softmax"), ("tiny", "softmax"),
    ("nb201", "gumbel_hard"), ("darts", "gumbel_hard"), ("nb201", "crb")])
def test_fused_equals_unfused_in_training_and_eval(space, activation):
    torch.set_num_threads(1)
    net, plain = _pair(space, activation, cells=3 if space != "nb201" else 1)
    if activation == "crb":  # prune some ops so edges differ in what they run
        with torch.no_grad():
            for m in (net, plain):
                m.alphas["normal"][::2, 1] = -1.0
                m.activation.prune(m)
    if activation == "gumbel_hard":  # most samples pick one conv, so edges share it
        k = next(i for i, o in enumerate(net.space.ops) if "conv" in o)
        with torch.no_grad():
            for m in (net, plain):
                for a in m.alphas.values():
                    a[:, k] += 4.0
    x, y = _data()
    assert _fused_calls(copy.deepcopy(net)) > 0
    for step in range(2):
        _compare(net, plain, x, y, seed=step)
    net.eval()
    plain.eval()
    _compare(net, plain, x, y, seed=5)


@pytest.mark.parametrize("name", ["nor_conv_3x3", "nor_conv_1x1", "dil_conv_3x3", "dil_conv_5x5",
                                  "sep_conv_3x3", "sep_conv_5x5"])
@pytest.mark.parametrize("stride", [1, 2])
def test_every_fused_form_against_its_ops_one_by_one(name, stride):
    """``run_fused`` on 3 ops = each op's ``w · op(x)``; gradients of x, the op weights and
    every parameter; running statistics, including the cumulative average (momentum None)."""
    torch.manual_seed(0)
    ops = [OPS.create(name, 4, 4, stride, False).to(D) for _ in range(3)]
    assert all(fusable(o) for o in ops)
    twins = copy.deepcopy(ops)
    for group in (ops, twins):
        for o in group:
            for m in o.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.momentum = None
    x = torch.randn(2, 4, 9, 9, dtype=D, requires_grad=True)
    w = torch.tensor([0.2, 0.5, 0.3], dtype=D, requires_grad=True)
    for _ in range(2):
        rows = [w[j].expand(4) for j in range(3)]
        fused = run_fused(ops, SharedReLU(x), [r.contiguous() for r in rows])
        loose = [o(x, r.contiguous(), SharedReLU(x)) for o, r in zip(twins, rows)]
        for a, b in zip(fused, loose):
            assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
        g = torch.randn_like(torch.cat(fused, 1))
        ga = torch.autograd.grad(torch.cat(fused, 1).mul(g).sum(),
                                 [x, w, *[p for o in ops for p in o.parameters()]])
        gb = torch.autograd.grad(torch.cat(loose, 1).mul(g).sum(),
                                 [x, w, *[p for o in twins for p in o.parameters()]])
        for a, b in zip(ga, gb):
            assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)
        for a, b in zip([b for o in ops for b in o.buffers()],
                        [b for o in twins for b in o.buffers()]):
            assert torch.equal(a, b) if not a.is_floating_point() else torch.allclose(a, b)


@pytest.mark.slow  # a whole search or a CLI subprocess: the full lane
def test_speed_fuse_reaches_the_supernet_and_a_run_resumes_with_it_changed(tmp_path):
    """``speed.fuse`` turns fusion on; it never changes results, so a run started unfused
    resumes fused (the resume check leaves ``speed`` out) and matches an unfused run."""
    from helpers import tiny_config

    from raydnas.search.run import SearchState, run_search

    cfg = tiny_config(space="tiny201", speed={"fuse": True})
    st = SearchState(cfg, torch.device("cpu"))
    assert all(c.fuse for c in st.model.search_cells())
    quiet = {"log": {"tensorboard": False, "print_every": 0}, "measure": {"tune_epochs": 0}}
    run_search(tiny_config(space="tiny201", epochs=2, **quiet), tmp_path / "a",
               log=lambda s: None)
    run_search(tiny_config(space="tiny201", epochs=2, **quiet), tmp_path / "b",
               log=lambda s: None, stop_after_epochs=1)
    m = run_search(tiny_config(space="tiny201", epochs=2, speed={"fuse": True}, **quiet),
                   tmp_path / "b", log=lambda s: None)
    ref = run_search(tiny_config(space="tiny201", epochs=2, **quiet), tmp_path / "a",
                     log=lambda s: None)
    assert m["genotype"] == ref["genotype"]
    assert abs(m["val_acc"] - ref["val_acc"]) < 1e-6 and abs(m["train_loss"] - ref["train_loss"]) < 1e-5
