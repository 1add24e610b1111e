"""The weight-sharing supernet: mixed ops, cells and the two macro skeletons (DARTS, NB201).

α are registered ``nn.Parameter``s in ``self.alphas`` (one ``[edges, ops]`` tensor per cell type,
shared by all cells of that type) and kept apart from the weights: ``arch_parameters()`` and
``weight_parameters()``. The activation (softmax, CRB, Gumbel, ...) turns α into op weights once
per forward pass. No device is hard-coded: move the module with ``.to(device)``.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from .fusion import fusable, run_fused, signature
from .macro import MacroNetwork, ResNetBasicBlock, cell_output, cell_type, preprocess  # noqa: F401
from .ops import OPS, Pool, Zero
from .spaces import SearchSpace
from .weighting import SharedReLU, channel_weights, weighted


class AlphaToWeights(Protocol):
    """What the supernet needs of the activation axis (:class:`raydnas.axes.activation.
    Activation` implements it): α's initial values, and op weights from α once per forward."""

    drops_ops: tuple[str, ...]  # ops removed from the space before the supernet is built
    node_norm: bool  # a non-affine BatchNorm on every intermediate node

    def init_alpha(self, shape: tuple[int, int], generator: torch.Generator) -> torch.Tensor: ...

    def probs(self, alpha: torch.Tensor) -> torch.Tensor: ...

    def weights(self, alpha: torch.Tensor, training: bool) -> torch.Tensor: ...

    def active_ops(self, cell_type: str, weights: torch.Tensor,
                   zero_ops: frozenset[int]) -> list[list[int]]: ...

    def edge_bias(self, weights: torch.Tensor,
                  active: list[list[int]]) -> torch.Tensor | None: ...


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


class Supernet(MacroNetwork):
    """The supernet of a space. ``forward(x)`` uses the activation's op weights;
    ``forward(x, op_weights=masks)`` runs a fixed (e.g. discretized or sampled) weighting instead.
    """

    def __init__(self, space: SearchSpace, activation: AlphaToWeights, num_classes: int,
                 in_channels: int = 3, channels: int | None = None, cells: int | None = None,
                 seed: int = 0, fuse: bool = False, aux_skip: bool = False,
                 partial_channels: int = 1, edge_norm: bool = False):
        """``fuse``: run ops of one kind on edges leaving one node as one kernel (same math,
        :mod:`raydnas.model.fusion`). ``aux_skip``: DARTS-'s auxiliary skip on every edge, scaled by
        :attr:`aux_beta` in the supernet's own forward (never under given ``op_weights``: a
        derived or sampled cell has no auxiliary skips). ``partial_channels``: PC-DARTS's K
        (:class:`MixedOp`). ``edge_norm``: PC-DARTS's edge normalization: β per edge of each
        cell type (``edge_betas``, architecture parameters beside α), each edge's output
        scaled by the softmax of β over its node's incoming edges (:meth:`edge_weights`), in
        the supernet's own forward and in :meth:`derive_weights`."""
        super().__init__()
        if activation.drops_ops:
            space = space.without_ops(activation.drops_ops)
        self.activation = activation
        self.zero_ops = frozenset(k for k, o in enumerate(space.ops) if o == "none")
        node_norm = activation.node_norm
        self.build(space, num_classes, in_channels, channels or space.channels,
                   cells or space.cells,
                   lambda C_in, C, red, red_prev: Cell(space, space.ops, C_in, C, red, red_prev,
                                                       node_norm, fuse, aux_skip,
                                                       partial_channels))
        #: β of the auxiliary skips (set by the search each epoch; 0: off)
        self.aux_beta = 0.0
        #: rows of the op weights held fixed (DARTS-PT's decided edges): per cell type
        #: (``[edges]`` booleans, ``[edges, ops]`` values), or None
        self.projection: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
        # NHWC: oneDNN's depthwise/pointwise convs and pooling run ~2x faster on CPU in this
        # layout (benchmarks/README.md); the input is converted in forward. Same math.
        self.to(memory_format=torch.channels_last)
        g = torch.Generator().manual_seed(seed)
        shape = (space.num_edges, len(space.ops))
        self.alphas = nn.ParameterDict(
            {ct: nn.Parameter(activation.init_alpha(shape, g)) for ct in space.cell_types})
        #: PC-DARTS's β, 1e-3·N(0, 1) per edge (drawn after α: α's init is unchanged)
        self.edge_betas = nn.ParameterDict(
            {ct: nn.Parameter(1e-3 * torch.randn(space.num_edges, generator=g))
             for ct in space.cell_types} if edge_norm else {})
        #: the op weights of the last forward that drew its own (a sample, for stochastic
        #: activations), per cell type; the resource penalty is taken on them
        self.last_op_weights: dict[str, torch.Tensor] | None = None

    # -- parameter groups -------------------------------------------------------------------
    def arch_parameters(self) -> list[nn.Parameter]:
        """α of every cell type, then the edge β (``edge_norm``): what the α optimizer steps."""
        return [*self.alphas.values(), *self.edge_betas.values()]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def named_weight_parameters(self):
        return [(n, p) for n, p in self.named_parameters()
                if not n.startswith(("alphas.", "edge_betas."))]

    def edge_weights(self) -> dict[str, torch.Tensor] | None:
        """Per cell type the ``[edges]`` factors of edge normalization: softmax of β over the
        incoming edges of each node (PC-DARTS ``betas_normal[start:end]``); None without."""
        if not len(self.edge_betas):
            return None
        out = {}
        for ct, b in self.edge_betas.items():
            parts, e0 = [], 0
            for j in range(self.space.nodes):
                n_in = self.space.inputs + j
                parts.append(torch.softmax(b[e0:e0 + n_in], dim=0))
                e0 += n_in
            out[ct] = torch.cat(parts)
        return out

    def derive_weights(self) -> dict[str, torch.Tensor]:
        """What the cell is derived from: a(α), times each edge's normalized β with edge
        normalization (PC-DARTS ``genotype``: ``W[j, :] * W2[j]``, edges ranked on that)."""
        probs = self.op_probs()
        scale = self.edge_weights()
        return probs if scale is None else {ct: p * scale[ct].unsqueeze(1)
                                            for ct, p in probs.items()}

    def search_cells(self) -> list["Cell"]:
        """The searchable cells, in order (not the NB201 reduction blocks)."""
        return [c for c in self.cells if isinstance(c, Cell)]

    def mixed_ops(self):
        """Every candidate op: ``(cell index among its type, cell type, edge, op index,
        module)``, in cell, edge and op order (the α row/column order)."""
        seen: dict[str, int] = {}
        for cell in self.search_cells():
            ct = cell_type(cell)
            i = seen[ct] = seen.get(ct, -1) + 1
            for e, edge in enumerate(cell.edges):
                for k, op in enumerate(edge._ops):
                    yield i, ct, e, k, op

    def op_costs(self, kind: str, x: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per cell type a ``[cells, edges, ops]`` cost table of every candidate op:
        ``params`` (its weights) or ``flops`` (its multiply-adds on the input ``x``)."""
        from .costs import op_costs

        return op_costs(self, kind, x)

    # -- op weights -------------------------------------------------------------------------
    def op_probs(self) -> dict[str, torch.Tensor]:
        """Deterministic a(α) per cell type (for discretization, regularizers, logging)."""
        return {ct: self.activation.probs(a) for ct, a in self.alphas.items()}

    def op_weights(self) -> dict[str, torch.Tensor]:
        """The op weights of one forward pass (sampled for stochastic activations), with the
        rows of :attr:`projection` in place (constants: no gradient to their α)."""
        w = {ct: self.activation.weights(a, self.training) for ct, a in self.alphas.items()}
        if self.projection:
            for ct, (rows, values) in self.projection.items():
                w[ct] = torch.where(rows.to(w[ct].device).unsqueeze(1),
                                    values.to(w[ct].device, w[ct].dtype), w[ct])
        return w

    def forward(self, x: torch.Tensor, op_weights: dict[str, torch.Tensor] | None = None,
                run_zero_weights: bool = False):
        """Logits of ``x`` under the activation's op weights, or under the given ``op_weights``
        (ops whose weight is exactly 0 are skipped, unless ``run_zero_weights``: soft weights
        whose zeros must still pass a gradient to the weight and let its op train, SDARTS)."""
        bias: dict[str, torch.Tensor | None] = {}
        aux_beta = self.aux_beta if op_weights is None else 0.0
        scale = self.edge_weights() if op_weights is None else None
        if op_weights is None:
            op_weights = self.op_weights()
            self.last_op_weights = op_weights
            active = {ct: self.activation.active_ops(ct, w, self.zero_ops)
                      for ct, w in op_weights.items()}
            bias = {ct: self.activation.edge_bias(w, active[ct]) for ct, w in op_weights.items()}
        else:
            active = {ct: [[k for k in (range(len(row)) if run_zero_weights
                                        else torch.nonzero(row).flatten().tolist())
                            if k not in self.zero_ops] for row in w.detach().cpu()]
                      for ct, w in op_weights.items()}
            op_weights = {ct: w.to(device=x.device, dtype=x.dtype) for ct, w in op_weights.items()}

        def call(cell, inputs):
            ct = cell_type(cell)
            return cell(inputs, op_weights[ct], active[ct], bias.get(ct), aux_beta,
                        None if scale is None else scale[ct])

        return self.run(x, call)
