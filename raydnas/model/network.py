"""The stand-alone network of a genotype: only the chosen ops, in the space's macro skeleton.

``DiscreteNetwork(space, genotype, ...)`` builds, per cell, one module per chosen (op, input)
pair of each node (``none`` pairs contribute nothing) and sums them per node; the stem, the
reduction blocks and the head are those of :class:`raydnas.model.macro.MacroNetwork`, the same
modules
the supernet has. :meth:`DiscreteNetwork.load_from_supernet` copies the chosen ops' weights (and
every non-cell weight) from a supernet of the same space and size, so that the network computes
exactly what the supernet computes under the derived cell's binary op weights (tested).

This network is what ``discrete_val_acc_tuned`` fine-tunes, and what training a found cell from
scratch builds on. Importing it imports neither Ray nor torchvision.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .genotype import Genotype
from .macro import MacroNetwork, cell_output, cell_type, preprocess
from .ops import OPS, Pool, Zero
from .spaces import SearchSpace
from .weighting import SharedReLU


class DiscreteCell(nn.Module):
    """A cell of a genotype: node j = Σ over its chosen (op, i) of op(x_i)."""

    def __init__(self, space: SearchSpace, nodes, C_in: list[int], C: int, reduction: bool,
                 reduction_prev: bool, node_norm: bool, affine: bool,
                 pool_bn: bool | None = None) -> None:
        super().__init__()
        self.reduction, self.space, self.C = reduction, space, C
        self.drop_prob = 0.0  # drop-path probability (set by the network; training only)
        pool_bn = space.pool_bn if pool_bn is None else pool_bn
        self.pre = preprocess(space, C_in, C, reduction_prev, affine)
        if len(nodes) != space.nodes:
            raise ValueError(f"the genotype has {len(nodes)} nodes per cell, the space "
                             f"{space.name!r} {space.nodes}")
        self.ops = nn.ModuleList()
        #: per node, (input, index into self.ops) of its chosen ops
        self.wiring: list[list[tuple[int, int]]] = []
        #: per op of self.ops, its (edge, op index) in the supernet's cell
        self.sources: list[tuple[int, int]] = []
        e0 = 0
        for j, node in enumerate(nodes):
            n_in = space.inputs + j
            wires = []
            for name, i in node:
                if name not in space.ops and name != "none":  # none: a missing edge, any space
                    raise ValueError(f"op {name!r} is not an op of space {space.name!r} "
                                     f"({', '.join(space.ops)}; none drops the edge)")
                if not 0 <= i < n_in:
                    raise ValueError(f"node {space.inputs + j} cannot take input {i} "
                                     f"(0..{n_in - 1})")
                if name == "none":
                    continue
                stride = 2 if reduction and i < space.inputs else 1
                op = OPS.create(name, C, C, stride, affine)
                if pool_bn and isinstance(op, Pool):
                    op.bn = nn.BatchNorm2d(C, affine=False)
                wires.append((i, len(self.ops)))
                self.sources.append((e0 + i, space.ops.index(name)))
                self.ops.append(op)
            self.wiring.append(wires)
            e0 += n_in
        self._zero = Zero(C, 2 if reduction else 1)
        self.node_bn = (nn.ModuleList(nn.BatchNorm2d(C, affine=False) for _ in range(space.nodes))
                        if node_norm else None)

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        states = [p(x) for p, x in zip(self.pre, inputs)] if self.pre is not None else list(inputs)
        # ops reading the same node share one relu(x) (and one pool(x) in training), as the
        # supernet's edges do: the same values, fewer kernels and saved tensors
        relus = [SharedReLU(x) for x in states]
        for j, wires in enumerate(self.wiring):
            s = None
            for i, k in wires:
                op = self.ops[k]
                y = op(states[i], None, relus[i]) if getattr(op, "fuses_weight", False) \
                    else op(states[i])
                if self.training and self.drop_prob > 0 and not isinstance(op, nn.Identity):
                    y = drop_path(y, self.drop_prob)
                s = y if s is None else s + y
            if s is None:  # no edge into node j: zeros
                s = self._zero(states[0])
            if self.node_bn is not None:
                s = self.node_bn[j](s)
            states.append(s)
            relus.append(SharedReLU(s))
        return cell_output(self.space, states)


def drop_path(x: torch.Tensor, p: float) -> torch.Tensor:
    """Zero each sample's ``x`` with probability ``p`` and scale the rest by 1/(1 − p)
    (DARTS ``utils.drop_path``, applied to every op but the identity)."""
    keep = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(1 - p)
    return x * keep / (1 - p)


class AuxiliaryHead(nn.Module):
    """DARTS's auxiliary classifier for 8×8 maps (quark0/darts ``AuxiliaryHeadCIFAR``): ReLU,
    5×5 average pooling stride 3, 1×1 conv to 128, BN, ReLU, 2×2 conv to 768, BN, ReLU, linear.
    Smaller maps are pooled to 2×2 first (adaptive), so small images work too."""

    def __init__(self, C: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False),
            nn.Conv2d(C, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False), nn.BatchNorm2d(768), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] < 8 or x.shape[-2] < 8:
            h = nn.functional.adaptive_avg_pool2d(self.features[0](x), 2)
            h = self.features[2:](h)
        else:
            h = self.features(x)
        return self.classifier(h.flatten(1))


class DiscreteNetwork(MacroNetwork):
    """The network of ``genotype`` in ``space``'s macro skeleton.

    Args:
        space: the search space (its ops, wiring and macro; the supernet's ``space`` when
            weights are to be copied, since an activation may have dropped ops).
        genotype: the cells; one per cell type of the space.
        num_classes, in_channels: of the dataset.
        channels, cells: C and L (default: the space's).
        node_norm: a non-affine BatchNorm on every node (cells found with ``crb``).
        affine: affine BatchNorms in the ops (True for training from scratch; False matches
            the search network's non-affine ops, for inherited weights).
        pool_bn: a non-affine BN after pooling ops (default: the space's, as its search network
            has; DARTS's evaluation network has none).
        auxiliary: DARTS's auxiliary head after cell 2L/3 (darts macro only); ``forward``
            then returns ``(logits, aux_logits)`` in training mode.
        reduction: the nb201 macro's block between stages: ``residual`` (NAS-Bench-201's) or
            ``light`` (:class:`raydnas.model.macro.LightReduction`).

    ``drop_path_prob`` (attribute, default 0): DARTS's drop-path probability for the ops of
    every cell, used in training mode.
    """

    def __init__(self, space: SearchSpace, genotype: Genotype, num_classes: int,
                 in_channels: int = 3, channels: int | None = None, cells: int | None = None,
                 node_norm: bool = False, affine: bool = True, pool_bn: bool | None = None,
                 auxiliary: bool = False, reduction: str = "residual") -> None:
        super().__init__()
        missing = [ct for ct in space.cell_types if ct not in genotype.cells]
        if missing:
            raise ValueError(f"the genotype has no {' or '.join(missing)} cell, which space "
                             f"{space.name!r} needs")
        if genotype.inputs != space.inputs:
            raise ValueError(f"the genotype's cells have {genotype.inputs} input nodes, the "
                             f"space {space.name!r} {space.inputs}")
        self.genotype = genotype

        def make(C_in, C, red, red_prev):
            ct = "reduce" if red else "normal"
            return DiscreteCell(space, genotype.cells[ct], C_in, C, red, red_prev, node_norm,
                                affine, pool_bn)

        self.build(space, num_classes, in_channels, channels or space.channels,
                   cells or space.cells, make, reduction)
        self.aux_index = 2 * len(self.cells) // 3 if auxiliary else None
        if auxiliary:
            if space.macro != "darts":
                raise ValueError("the auxiliary head belongs to the darts macro")
            aux_in = self.cells[self.aux_index]
            C_aux = aux_in.C * (space.nodes if space.output == "concat" else 1)
            self.auxiliary_head = AuxiliaryHead(C_aux, num_classes)
        self.drop_path_prob = 0.0
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor):
        """Logits; ``(logits, aux_logits)`` in training mode with the auxiliary head."""
        aux = []
        cells = [c for c in self.cells if isinstance(c, DiscreteCell)]
        for c in cells:
            c.drop_prob = self.drop_path_prob

        def call(cell, inputs):
            out = cell(inputs)
            if self.aux_index is not None and self.training and cell is self.cells[self.aux_index]:
                aux.append(self.auxiliary_head(out))
            return out

        logits = self.run(x, call)
        return (logits, aux[0]) if aux else logits

    @torch.no_grad()
    def load_from_supernet(self, supernet: Any) -> "DiscreteNetwork":
        """Copy the stem, head, classifier, reduction blocks, cell preprocessing, node
        BatchNorms and every chosen op's weights and buffers from ``supernet``."""
        if len(supernet.cells) != len(self.cells):
            raise ValueError(f"the supernet has {len(supernet.cells)} cells, this network "
                             f"{len(self.cells)}")
        for name in ("stem", "head", "classifier"):
            getattr(self, name).load_state_dict(getattr(supernet, name).state_dict())
        for mine, theirs in zip(self.cells, supernet.cells):
            if not isinstance(mine, DiscreteCell):
                mine.load_state_dict(theirs.state_dict())
                continue
            if cell_type(mine) != cell_type(theirs):
                raise ValueError("the supernet's cell types differ from this network's")
            if mine.pre is not None:
                mine.pre.load_state_dict(theirs.pre.state_dict())
            if mine.node_bn is not None:
                mine.node_bn.load_state_dict(theirs.node_bn.state_dict())
            for op, (e, k) in zip(mine.ops, mine.sources):
                op.load_state_dict(theirs.edges[e].candidate(k).state_dict())
        return self


def from_supernet(supernet: Any, genotype: Genotype) -> DiscreteNetwork:
    """The derived network of ``genotype`` with ``supernet``'s weights: same space, size, device
    and non-affine ops (what the supernet computes under the derived cell's binary weights)."""
    net = DiscreteNetwork(supernet.space, genotype, supernet.classifier.out_features,
                          supernet.stem[0].in_channels, channels=supernet.C, cells=supernet.L,
                          node_norm=supernet.activation.node_norm, affine=False)
    return net.to(next(supernet.parameters()).device).load_from_supernet(supernet)
