"""The supernet's searchable parts: the mixed op (every candidate op of an edge, weighted) and the
searchable cell (its edges, node sums and output), with PC-DARTS's partial channels and channel
shuffle. :mod:`.supernet` assembles them under the macro skeleton.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from .fusion import fusable, run_fused, signature
from .macro import cell_output, preprocess
from .ops import OPS, Pool, Zero
from .spaces import SearchSpace
from .weighting import SharedReLU, channel_weights, weighted


@contextlib.contextmanager
def unfused(model: nn.Module) -> Iterator[None]:
    """Within, every module with ``fuse`` on runs unfused: fused kernels never call the op
    modules, whose forwards cost tables hook (:mod:`.costs`, :mod:`.latency`)."""
    fused = [c for c in model.modules() if getattr(c, "fuse", False) is True]
    for c in fused:
        c.fuse = False
    try:
        yield
    finally:
        for c in fused:
            c.fuse = True


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """[N, C, H, W] → the channels regrouped: view as [N, groups, C/groups, H, W], swap the two
    channel axes, flatten back (ShuffleNet; PC-DARTS ``channel_shuffle``)."""
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class MixedOp(nn.Module):
    """ō(x) = Σ_k w_k · o_k(x) over the ops that the activation marks active.

    With ``partial`` = K > 1 (PC-DARTS, Xu et al., ICLR 2020; yuhuixu1993/PC-DARTS at b74702f8,
    ``model_search.py`` ``MixedOp``): the ops run on the first C/K channels only, the other
    channels pass unchanged (max-pooled 2×2 on a stride-2 edge), the two are concatenated and
    the channels shuffled in K groups.
    """

    def __init__(self, op_names, C_in, C_out, stride, pool_bn, partial: int = 1):
        super().__init__()
        self.partial = partial
        C_in, C_out = C_in // partial, C_out // partial
        ops = []
        for name in op_names:
            op = OPS.create(name, C_in, C_out, stride, False)
            if pool_bn and isinstance(op, Pool):
                op.bn = nn.BatchNorm2d(C_out, affine=False)
            ops.append(op)
        self._ops = nn.ModuleList(ops)
        self._zero = Zero(C_out, stride)
        # ceil_mode: the same size as the ops' output for odd sizes too (the code's floor
        # pooling cannot be concatenated there)
        self._bypass_pool = (nn.MaxPool2d(2, 2, ceil_mode=True) if partial > 1 and stride == 2
                             else None)

    def candidate(self, k: int) -> nn.Module:
        """The module of candidate op ``k`` (the space's op order)."""
        return self._ops[k]

    def forward(self, x: torch.Tensor, w: torch.Tensor, active: list[int],
                xr: SharedReLU | None = None, wc: torch.Tensor | None = None,
                bias: torch.Tensor | None = None,
                done: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        """``w``: this edge's ``[ops]`` weights; ``wc``: the same as ``[ops, C_out]``
        (:func:`~raydnas.model.weighting.channel_weights`, optional); ``xr``: relu(x) shared with
        the other edges leaving the same node (optional); ``bias``: a scalar added to the edge's
        output (GDAS's value-zero terms of the ops not run, :meth:`AlphaToWeights.edge_bias`);
        ``done``: op index → ``w_k · o_k(x)`` already computed (fused with other edges)."""
        if self.partial > 1:
            k = x.shape[1] // self.partial
            xp, rest = x[:, :k], x[:, k:]
            y = self._mixed(xp, w, active, None, wc, bias, None)
            rest = rest if self._bypass_pool is None else self._bypass_pool(rest)
            return channel_shuffle(torch.cat([y, rest], dim=1), self.partial)
        return self._mixed(x, w, active, xr, wc, bias, done)

    def _mixed(self, x, w, active, xr, wc, bias, done):
        if not active:  # every op of this edge is off: the edge contributes zeros
            return self._zero(x) if bias is None else self._zero(x) + bias
        ws = w.unbind(0)
        wcs = wc.unbind(0) if wc is not None else None
        xr = xr if xr is not None else SharedReLU(x)
        out, own = None, False
        for k in active:
            if done is not None and k in done:
                y, fresh = done[k], False  # a view of a fused output: never add into it
            else:
                y = weighted(self._ops[k], x, ws[k], xr, None if wcs is None else wcs[k])
                fresh = True  # a fresh product (no backward saves it)
            if out is None:
                out, own = y, fresh
            elif own:
                out.add_(y)  # accumulate in place into our own sum
            else:
                out, own = out + y, True
        return out if bias is None else out + bias


class Cell(nn.Module):
    """A searchable cell: node j = Σ_{i<j} MixedOp_{i,j}(x_i), optional node BatchNorm."""

    def __init__(self, space: SearchSpace, op_names, C_in: list[int], C: int, reduction: bool,
                 reduction_prev: bool, node_norm: bool, fuse: bool = False,
                 aux_skip: bool = False, partial: int = 1):
        super().__init__()
        self.reduction = reduction
        self.space = space
        self.C = C
        #: PC-DARTS's K: the mixed ops run on C/K channels (:class:`MixedOp`)
        self.partial = partial
        self.pre = preprocess(space, C_in, C, reduction_prev, False)
        self.edges = nn.ModuleList()
        strides = [2 if reduction and i < space.inputs else 1 for i, _ in space.edges]
        for stride in strides:
            self.edges.append(MixedOp(op_names, C, C, stride, space.pool_bn, partial))
        #: DARTS-'s auxiliary skip per edge, apart from the candidates and outside a(α):
        #: identity, or on a stride-2 edge a FactorizedReduce with its own weights
        self.aux = (nn.ModuleList(OPS.create("skip_connect", C, C, s, False) for s in strides)
                    if aux_skip else None)
        self.node_bn = (nn.ModuleList(nn.BatchNorm2d(C, affine=False) for _ in range(space.nodes))
                        if node_norm else None)
        #: run ops of one kind on edges leaving the same node as one kernel (raydnas.model.fusion)
        self.fuse = fuse
        self._out_edges = [[e for e, (src, _) in enumerate(space.edges) if src == i]
                           for i in range(space.inputs + space.nodes)]

    def forward(self, inputs: list[torch.Tensor], w: torch.Tensor, active: list[list[int]],
                bias: torch.Tensor | None = None, aux_beta: float = 0.0,
                edge_scale: torch.Tensor | None = None):
        """``w``: ``[edges, ops]`` op weights; ``active``: per edge the ops to run; ``bias``:
        optional ``[edges]`` scalars added to each edge's output (:meth:`MixedOp.forward`);
        ``aux_beta``: β of the auxiliary skips (DARTS-; 0 or no ``aux``: none), each edge
        adding β·aux(x); ``edge_scale``: optional ``[edges]`` factors of each edge's whole
        output (PC-DARTS's edge normalization)."""
        aux = self.aux if aux_beta and self.aux is not None else None
        states = [p(x) for p, x in zip(self.pre, inputs)] if self.pre is not None else list(inputs)
        relus = [SharedReLU(x) for x in states]
        ws, wcs = w.unbind(0), channel_weights(w, self.C // self.partial).unbind(0)
        scale = edge_scale.unbind(0) if edge_scale is not None else None
        bs = bias.unbind(0) if bias is not None else None
        done: dict[int, dict[int, torch.Tensor]] = {}
        if self.fuse and self.partial == 1:
            for i in range(len(states)):
                self._run_fused(i, relus[i], wcs, active, done)
        e = 0
        for j in range(self.space.nodes):
            s = None
            for i in range(len(states)):
                if active[e] or bs is not None or aux is not None:  # else the edge adds 0
                    y = self.edges[e](states[i], ws[e], active[e], relus[i], wcs[e],
                                      None if bs is None else bs[e], done.get(e))
                    if aux is not None:
                        y = y + aux_beta * aux[e](states[i])
                    if scale is not None:
                        y = y * scale[e]
                    # add in place into a sum of our own, never into a view of a fused output
                    s = y if s is None else (s + y if s._is_view() else s.add_(y))
                e += 1
            if s is None:  # every edge into node j is off
                s = self.edges[e - 1](states[-1], ws[e - 1], [])
            if self.node_bn is not None:
                s = self.node_bn[j](s)
            states.append(s)
            relus.append(SharedReLU(s))
            if self.fuse and self.partial == 1:
                self._run_fused(len(states) - 1, relus[-1], wcs, active, done)
        return cell_output(self.space, states)

    def _run_fused(self, i: int, xr: SharedReLU, wcs, active, done) -> None:
        """Ops of one kind on two or more edges leaving node ``i``, as one kernel
        (:mod:`raydnas.model.fusion`); their outputs go to ``done[edge][op]``."""
        groups: dict[tuple, list[tuple[int, int]]] = {}
        for e in self._out_edges[i]:
            for k in active[e]:
                op = self.edges[e].candidate(k)
                if fusable(op):
                    groups.setdefault((k, signature(op)), []).append((e, k))
        for members in groups.values():
            if len(members) < 2:
                continue
            outs = run_fused([self.edges[e].candidate(k) for e, k in members], xr,
                             [wcs[e][k] for e, k in members])
            for (e, k), y in zip(members, outs):
                done.setdefault(e, {})[k] = y
