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

from .costs import op_costs
from .data_mix import DataMixer, DataSearch
from .macro import MacroNetwork, cell_type
from .mixed import Cell
from .spaces import SearchSpace


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


class Supernet(MacroNetwork):
    """The supernet of a space. ``forward(x)`` uses the activation's op weights;
    ``forward(x, op_weights=masks)`` runs a fixed (e.g. discretized or sampled) weighting instead.
    """

    def __init__(self, space: SearchSpace, activation: AlphaToWeights, num_classes: int,
                 in_channels: int = 3, channels: int | None = None, cells: int | None = None,
                 seed: int = 0, fuse: bool = False, aux_skip: bool = False,
                 partial_channels: int = 1, edge_norm: bool = False,
                 data_search: DataSearch | None = None, side: int | None = None):
        """``fuse``: run ops of one kind on edges leaving one node as one kernel (same math,
        :mod:`raydnas.model.fusion`). ``aux_skip``: DARTS-'s auxiliary skip on every edge, scaled by
        :attr:`aux_beta` in the supernet's own forward (never under given ``op_weights``: a
        derived or sampled cell has no auxiliary skips). ``partial_channels``: PC-DARTS's K
        (:class:`MixedOp`). ``edge_norm``: PC-DARTS's edge normalization: β per edge of each
        cell type (``edge_betas``, architecture parameters beside α), each edge's output
        scaled by the softmax of β over its node's incoming edges (:meth:`edge_weights`), in
        the supernet's own forward and in :meth:`derive_weights`. ``data_search``: the data
        axis (:mod:`raydnas.model.data_mix`; ``side``: the images' side), whose γ is an
        architecture parameter after α and β; every forward mixes its inputs first."""
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
        #: the data axis: K inputs mixed by a(γ) before the stem (γ drawn after α and β)
        self.data_mixer = None if data_search is None else DataMixer(
            data_search, in_channels, side, activation, g)
        #: the op weights of the last forward that drew its own (a sample, for stochastic
        #: activations), per cell type; the resource penalty is taken on them
        self.last_op_weights: dict[str, torch.Tensor] | None = None

    # -- parameter groups -------------------------------------------------------------------
    def arch_parameters(self) -> list[nn.Parameter]:
        """α of every cell type, then the edge β (``edge_norm``): what the α optimizer steps."""
        return [*self.alphas.values(), *self.edge_betas.values(),
                *([self.data_mixer.gamma] if self.data_mixer is not None else [])]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def named_weight_parameters(self):
        arch = {id(p) for p in self.arch_parameters()}
        return [(n, p) for n, p in self.named_parameters() if id(p) not in arch]

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
        ``params`` (its weights), ``flops`` (its multiply-adds on the input ``x``) or
        ``latency`` (:mod:`raydnas.model.latency`). With a data axis, ``[K, cells, edges, ops]``:
        the table of each input configuration, with the cells run on that input alone at its
        own side (what a network retrained on it costs; no alignment)."""
        if self.data_mixer is None:
            return op_costs(self, kind, x)
        per = [op_costs(self, kind, x, data=k) for k in range(len(self.data_mixer.configs))]
        return {ct: torch.stack([t[ct] for t in per]) for ct in per[0]}

    def data_probs(self) -> torch.Tensor | None:
        """a(γ) over the data axis' configurations, or None without one."""
        return None if self.data_mixer is None else self.data_mixer.probs(self.activation)

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
                run_zero_weights: bool = False, data: torch.Tensor | int | None = None):
        """Logits of ``x`` under the activation's op weights, or under the given ``op_weights``
        (ops whose weight is exactly 0 are skipped, unless ``run_zero_weights``: soft weights
        whose zeros must still pass a gradient to the weight and let its op train, SDARTS).
        ``data`` (the data axis only): the input mix's ``[K]`` weights instead of a(γ)'s, or one
        configuration's index: its input alone at its own side (:class:`DataMixer`)."""
        if self.data_mixer is not None:  # every network the supernet runs sees the mix
            x = self.data_mixer(x, self.activation, self.training, data)
        elif data is not None:
            raise ValueError("data weights given to a supernet without a data axis")
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
