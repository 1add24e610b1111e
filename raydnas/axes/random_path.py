"""Random search with weight sharing (RSPS; Li & Talwalkar, UAI 2019): a uniformly random
architecture per weight step, α never used.

Li & Talwalkar's code (liamcli/randomNAS_release, ``searchers/random_weight_share.py`` and
``benchmarks/cnn/darts/darts_wrapper_discrete.py``) trains the shared weights of the DARTS
supernet one minibatch at a time, each under a fresh ``sample_arch()``: per intermediate node
two distinct inputs uniformly and an op for each uniformly, normal and reduction cells drawn
independently, only the sampled ops run (``discrete=True``: the other edges weigh 0). The
supernet is trained on the first half of the training set only (no α, no validation steps),
and the cell is then chosen by shared-weight validation accuracy among sampled ones
(``get_eval_arch``; here the ``random_ws`` selection, :mod:`raydnas.search.select_random`).

Here a sample is a random cell of the space: the space's discretization rule applied to
uniform noise, the same distribution as the study's random baseline
(:func:`raydnas.model.cells.random_cell`): on DARTS-style spaces (top-k edges) k distinct
inputs per node and a uniform op outside the space's ``exclude`` on each, on NAS-Bench-201
style spaces a uniform op on every edge. One difference from the code: its op draw includes
``none`` on DARTS-style cells (its ``PRIMITIVES`` do), where this space's cells (and random
baseline) never have ``none`` edges. The draws use torch's global generator, which the search
checkpoints: a resumed search draws the same architectures.
"""

from __future__ import annotations

from typing import Any

import torch

from ..model.genotype import derive
from .activation import ACTIVATIONS, Stochastic
from .base import SearchContext


@ACTIVATIONS.register("random_path")
class RandomPath(Stochastic):
    """RSPS's sampling: op weights are the binary masks of a uniformly random cell, drawn per
    forward in training mode (one per cell type, shared by that type's cells); α is never
    used (the ``random_ws`` preset pairs it with ``schedule: never``). Evaluation mode and
    the discretization use softmax(α) of the untouched initial α, which means nothing: the
    search's cell is the ``random_ws`` selection's."""

    #: the op weights do not depend on α: no α step, α gradient or α penalty can act
    alpha_free = True

    def __init__(self) -> None:
        self._space: Any = None

    def setup(self, ctx: SearchContext) -> None:
        self._space = ctx.space

    def probs(self, alpha: torch.Tensor) -> torch.Tensor:
        return torch.softmax(alpha, dim=-1)

    def _draw(self, alpha: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if self._space is None:
            raise RuntimeError("random_path draws cells of the search's space: call setup() "
                               "with the search context first")
        u = torch.rand(alpha.shape, generator=generator, dtype=torch.float64)
        _, masks = derive({"cell": u}, self._space)
        return masks["cell"].to(alpha.device, alpha.dtype)

    def weights(self, alpha: torch.Tensor, training: bool) -> torch.Tensor:
        if not training:
            return self.probs(alpha)
        if self._frozen is not None:
            key = id(alpha)
            if key not in self._frozen:
                self._frozen[key] = self._draw(alpha, None)
            return self._frozen[key]
        return self._draw(alpha, None)

    def active_ops(self, cell_type, weights, zero_ops):
        # only the sampled ops run (RSPS's ``discrete=True``); an edge left out runs nothing
        return [[k for k in torch.nonzero(row).flatten().tolist() if k not in zero_ops]
                for row in weights.detach().cpu()]

    @torch.no_grad()
    def sample(self, alpha: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A random cell's masks drawn with ``generator`` (the search's measured ``val_acc``
        averages such cells under the shared weights, as RSPS's per-epoch ``valid_acc``)."""
        return self._draw(alpha.detach(), generator)
