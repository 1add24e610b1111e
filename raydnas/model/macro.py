"""The macro skeletons a space's cells are stacked in: DARTS and NAS-Bench-201.

:class:`MacroNetwork` builds the stem, the cells (made by a subclass's factory: the supernet's
searchable cells, or the discrete cells of one genotype) and the head, and runs them. Both the
supernet (:mod:`raydnas.model.supernet`) and the stand-alone network of a genotype
(:mod:`raydnas.model.network`) are MacroNetworks, so their non-cell modules have the same names and
shapes and weights copy across by name.

* ``darts`` (quark0/darts ``model_search.Network``): 3×3 conv stem to ``stem_multiplier``·C
  channels and BN; L cells with reductions (channels doubled) at L//3 and 2L//3; each cell reads
  the outputs of the two previous cells; global average pooling; linear classifier.
* ``nb201`` (AutoDL-Projects ``TinyNetwork``): 3×3 conv stem to C and BN; ``stages`` stages of
  L cells with a stride-2 residual block (:class:`ResNetBasicBlock`) between stages; BN, ReLU,
  global average pooling, linear classifier.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .layout import dense_grad
from .ops import FactorizedReduce, ReLUConvBN
from .spaces import SearchSpace

#: make_cell(C_in: [C_{k-2}, C_{k-1}] or [C_prev], C, reduction, reduction_prev) -> a cell
CellFactory = Callable[[list[int], int, bool, bool], nn.Module]


class ResNetBasicBlock(nn.Module):
    """NAS-Bench-201's stride-2 residual block between stages."""

    def __init__(self, C_in: int, C_out: int):
        super().__init__()
        self.conv_a = ReLUConvBN(C_in, C_out, 3, 2, 1, affine=True)
        self.conv_b = ReLUConvBN(C_out, C_out, 3, 1, 1, affine=True)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(C_in, C_out, 1, bias=False))

    def forward(self, x):
        return self.conv_b(self.conv_a(x)) + self.downsample(x)


class LightReduction(nn.Module):
    """A light stride-2 block between stages: the residual block's shortcut alone (2×2 average
    pooling and a 1×1 conv that doubles the channels) and a BatchNorm, with no nonlinearity.
    With it the cells carry all of the network's nonlinear capacity, so an evaluation protocol
    tells cells apart (``reduction: light``); NAS-Bench-201's own block is
    :class:`ResNetBasicBlock`."""

    def __init__(self, C_in: int, C_out: int):
        super().__init__()
        self.pool = nn.AvgPool2d(2, 2)
        self.conv = nn.Conv2d(C_in, C_out, 1, bias=False)
        self.bn = nn.BatchNorm2d(C_out)

    def forward(self, x):
        return self.bn(self.conv(self.pool(x)))


#: the blocks between the stages of the nb201 macro, by protocol name
REDUCTIONS = {"residual": ResNetBasicBlock, "light": LightReduction}


def preprocess(space: SearchSpace, C_in: list[int], C: int, reduction_prev: bool,
               affine: bool) -> nn.ModuleList | None:
    """A DARTS cell's input preprocessing: c_{k-2} through a FactorizedReduce after a reduction
    cell (else a 1×1 ReLUConvBN), c_{k-1} through a 1×1 ReLUConvBN; None for the nb201 macro."""
    if space.macro != "darts":
        return None
    return nn.ModuleList([
        FactorizedReduce(C_in[0], C, affine=affine) if reduction_prev
        else ReLUConvBN(C_in[0], C, 1, 1, 0, affine=affine),
        ReLUConvBN(C_in[1], C, 1, 1, 0, affine=affine),
    ])


def cell_output(space: SearchSpace, states: list[torch.Tensor]) -> torch.Tensor:
    """A cell's output from its node states: the concatenation of the intermediate nodes
    (``output: concat``) or the last node (``last``)."""
    if space.output == "concat":
        # each node's gradient is a channel slice of the concatenation's: made dense once per
        # node before it reaches the node's BatchNorms (raydnas.model.layout)
        return torch.cat([dense_grad(s) for s in states[space.inputs:]], dim=1)
    return states[-1]


def cell_type(cell: nn.Module) -> str:
    """``reduce`` for a reduction cell, else ``normal`` (the key of its α / genotype)."""
    return "reduce" if getattr(cell, "reduction", False) else "normal"


class MacroNetwork(nn.Module):
    """Stem → cells → head → classifier of ``space.macro``; see the module docstring."""

    def build(self, space: SearchSpace, num_classes: int, in_channels: int, C: int, L: int,
              make_cell: CellFactory, reduction: str = "residual") -> None:
        """Build the modules; ``reduction`` names the nb201 macro's block between stages
        (:data:`REDUCTIONS`)."""
        self.space, self.C, self.L = space, C, L
        self.cells = nn.ModuleList()
        if space.macro == "darts":
            C_stem = space.stem_multiplier * C
            self.stem = nn.Sequential(nn.Conv2d(in_channels, C_stem, 3, padding=1, bias=False),
                                      nn.BatchNorm2d(C_stem))
            C_pp, C_p, C_cur = C_stem, C_stem, C
            reduce_at = {L // 3, 2 * L // 3}
            reduction_prev = False
            for i in range(L):
                reduction = i in reduce_at
                if reduction:
                    C_cur *= 2
                self.cells.append(make_cell([C_pp, C_p], C_cur, reduction, reduction_prev))
                reduction_prev = reduction
                C_pp, C_p = C_p, (space.nodes if space.output == "concat" else 1) * C_cur
            self.head = nn.Identity()
            C_last = C_p
        else:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, C, 3, padding=1, bias=False),
                                      nn.BatchNorm2d(C))
            C_cur = C
            for s in range(space.stages):
                if s > 0:
                    self.cells.append(REDUCTIONS[reduction](C_cur, 2 * C_cur))
                    C_cur *= 2
                for _ in range(L):
                    self.cells.append(make_cell([C_cur], C_cur, False, False))
            self.head = nn.Sequential(nn.BatchNorm2d(C_cur), nn.ReLU(inplace=False))
            C_last = C_cur
        self.classifier = nn.Linear(C_last, num_classes)

    def run(self, x: torch.Tensor,
            call: Callable[[nn.Module, list[torch.Tensor]], torch.Tensor]) -> torch.Tensor:
        """Logits of ``x``; ``call(cell, inputs)`` runs one searchable/discrete cell."""
        s = self.stem(x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x)
        prev = [s, s]
        darts = self.space.macro == "darts"
        for cell in self.cells:
            if isinstance(cell, (ResNetBasicBlock, LightReduction)):
                out = cell(prev[1])
            else:
                out = call(cell, prev if darts else [prev[1]])
            prev = [prev[1], out]
        out = self.head(prev[1])
        out = nn.functional.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.classifier(out)
