"""The plain reference step that raydnas's optimized step is measured (and checked) against.

It is what quark0/darts does, written with stock functional torch calls over the parameters of a
raydnas :class:`~raydnas.model.supernet.Supernet`, so that it does not depend on any speed-up inside
``raydnas.model.ops`` / ``raydnas.model.supernet``:

- every mixed op computes ``Σ_k w_k · o_k(x)`` over *all* ops, ``none`` included (as ``x·0``);
  with ``one_op`` (GDAS's hard sample) only the sampled op k runs, as AutoDL-Projects'
  ``forward_gdas`` does: ``Σ_j (w_j · o_j(x) if j == k else w_j)``;
- the first-order α step takes α's gradient from a full ``loss.backward()`` (which also builds
  the weight gradients and throws them away), then Adam;
- the weight step is forward, backward, clip to 5, SGD.

The same parameter tensors are used, so a reference state and an optimized state made from the
same config and seed start identical and must stay identical (``tests/test_speed_exactness.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from raydnas.model.macro import ResNetBasicBlock
from raydnas.model.mixed import Cell, MixedOp
from raydnas.model.ops import FactorizedReduce, Pool, Zero
from raydnas.model.supernet import Supernet


def _bn(m: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    if m.training and m.num_batches_tracked is not None:
        m.num_batches_tracked.add_(1)
    return F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, m.training,
                        0.1 if m.momentum is None else m.momentum, m.eps)


def plain(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Evaluate one op / block module with plain functional calls."""
    if isinstance(m, nn.Sequential):
        for c in m:
            x = plain(c, x)
        return x
    if isinstance(m, nn.Conv2d):
        return F.conv2d(x, m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups)
    if isinstance(m, nn.BatchNorm2d):
        return _bn(m, x)
    if isinstance(m, nn.ReLU):
        return F.relu(x)
    if isinstance(m, nn.Identity):
        return x
    if isinstance(m, nn.MaxPool2d):
        return F.max_pool2d(x, m.kernel_size, m.stride, m.padding)
    if isinstance(m, nn.AvgPool2d):
        return F.avg_pool2d(x, m.kernel_size, m.stride, m.padding,
                            count_include_pad=m.count_include_pad)
    if isinstance(m, Zero):  # quark0's Zero: x.mul(0.), computed and kept in the graph
        s = m.stride
        return x[:, :, ::s, ::s].mul(0.0) if m.C_out == x.shape[1] else \
            x[:, :1, ::s, ::s].mul(0.0).expand(-1, m.C_out, -1, -1)
    if isinstance(m, FactorizedReduce):
        x = F.relu(x)
        y = F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        return _bn(m.bn, torch.cat([plain(m.conv_1, x), plain(m.conv_2, y)], dim=1))
    if isinstance(m, Pool):
        if m.pre is not None:
            x = plain(m.pre, x)
        x = plain(m.pool, x)
        return _bn(m.bn, x) if m.bn is not None else x
    if isinstance(m, ResNetBasicBlock):
        return plain(m.conv_b, plain(m.conv_a, x)) + plain(m.downsample, x)
    raise TypeError(f"no plain evaluation for {type(m).__name__}")


def _mixed(m: MixedOp, x: torch.Tensor, w: torch.Tensor, one_op: bool) -> torch.Tensor:
    if one_op:  # AutoDL-Projects' forward_gdas: the other ops' weights (0) carry gradients
        k = int(w.detach().argmax())
        return sum(w[j] * plain(op, x) if j == k else w[j] for j, op in enumerate(m._ops))
    return sum(w[k] * plain(op, x) for k, op in enumerate(m._ops))


def _cell(cell: Cell, inputs: list[torch.Tensor], w: torch.Tensor,
          one_op: bool = False) -> torch.Tensor:
    states = [plain(p, x) for p, x in zip(cell.pre, inputs)] if cell.pre is not None \
        else list(inputs)
    e = 0
    for j in range(cell.space.nodes):
        s = 0
        for i in range(len(states)):
            s = s + _mixed(cell.edges[e], states[i], w[e], one_op)
            e += 1
        if cell.node_bn is not None:
            s = _bn(cell.node_bn[j], s)
        states.append(s)
    if cell.space.output == "concat":
        return torch.cat(states[cell.space.inputs:], dim=1)
    return states[-1]


def plain_forward(model: Supernet, x: torch.Tensor,
                  op_weights: dict[str, torch.Tensor] | None = None,
                  one_op: bool = False) -> torch.Tensor:
    """``model(x, op_weights)`` with every op of every edge computed and weighted (quark0/darts
    style), ``none`` and zero-weight ops included; ``one_op``: only each edge's largest-weight
    op, the others' weights added as scalars (AutoDL-Projects' GDAS)."""
    weights = model.op_weights() if op_weights is None else \
        {ct: w.to(x.dtype) for ct, w in op_weights.items()}
    s = plain(model.stem, x)
    prev = [s, s]
    for cell in model.cells:
        if isinstance(cell, Cell):
            w = weights["reduce" if cell.reduction else "normal"]
            inputs = prev if model.space.macro == "darts" else [prev[1]]
            out = _cell(cell, inputs, w, one_op)
        else:
            out = plain(cell, prev[1])
        prev = [prev[1], out]
    out = plain(model.head, prev[1])
    out = F.adaptive_avg_pool2d(out, 1).flatten(1)
    return F.linear(out, model.classifier.weight, model.classifier.bias)


def reference_step(st, batch, val, one_op: bool = False) -> float:
    """One quark0/darts-style search step on a :class:`raydnas.search.run.SearchState`:
    first-order α step (full backward, Adam), then the weight step (backward, clip, SGD).
    ``one_op``: AutoDL-Projects' GDAS forward (only the sampled op of each edge runs)."""
    model = st.model
    xv, yv = val.next()
    xv, yv = xv.to(st.device), yv.to(st.device)
    st.a_optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(plain_forward(model, xv, one_op=one_op), yv)
    loss.backward()  # α and (discarded) weight gradients
    st.a_optimizer.step()
    x, y = batch
    st.w_optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(plain_forward(model, x, one_op=one_op), y)
    loss.backward()
    nn.utils.clip_grad_norm_(model.weight_parameters(), st.cfg.optim.w_grad_clip)
    st.w_optimizer.step()
    st.step += 1
    return float(loss.detach())
