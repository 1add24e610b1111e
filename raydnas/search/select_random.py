"""``select: {name: random_ws}``: the cell of random search with weight sharing (RSPS; Li &
Talwalkar, UAI 2019; liamcli/randomNAS_release ``Random_NAS.get_eval_arch``).

The code, after training the shared weights under random paths: draws 1000 architectures, scores
each by the shared weights' error on 10 validation minibatches, takes the 10 best, scores them
on the whole validation set and keeps the best (one round per 10 000 training minibatches; the
first round's cell is the one reported). Here, after the search's last epoch: ``samples``
random cells of the space (the random baseline's distribution; drawn with a generator seeded
by the search's seed, so the same search selects the same cell) are screened on the first
``screen_batches`` validation batches, the ``top`` of them are measured on the whole validation
part, and the best is the search's cell (ties: the first drawn). Every score uses this project's
measurement (BatchNorm statistics re-estimated for the cell, eval mode; the code scores in
eval mode with the running statistics of the random-path training), one round.

Works on any supernet (a cell's masks run it through ``forward(x, op_weights=...)``); with the
``random_path`` activation and ``schedule: never`` it is RSPS (``configs/random_ws.yaml``).
"""

from __future__ import annotations

import torch

from ..model.genotype import derive
from .measure import copy_model
from .selection import SELECTIONS, Selection

_SEED = 104_729  # the candidate cells of seed k are drawn with generator seed k * _SEED + 3


def candidate_cells(space, cell_types, n: int, seed: int) -> list:
    """``n`` random cells of ``space`` as (genotype, masks), drawn as the random baseline
    draws (the space's rule on uniform noise), reproducibly from ``seed``."""
    g = torch.Generator().manual_seed(int(seed) * _SEED + 3)
    shape = (space.num_edges, len(space.ops))
    return [derive({ct: torch.rand(shape, generator=g, dtype=torch.float64) for ct in cell_types},
                   space) for _ in range(n)]


def best_of(scores: list[float], k: int) -> list[int]:
    """Indices of the ``k`` highest scores, best first (ties: the lower index)."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k]


@SELECTIONS.register("random_ws")
class RandomWS(Selection):
    """RSPS's selection (module docstring)."""

    def select(self, st, loop, probs):
        cfg = self.cfg
        cells = candidate_cells(st.space, list(st.model.alphas), cfg.samples, st.cfg.seed)
        net = copy_model(st.model)
        mixer = net.data_mixer  # a data axis: every cell on the chosen input, as it is derived
        data = None if mixer is None else mixer.one_hot(net.activation)
        try:
            screen = [loop.measurer.measure(net, masks, max_batches=cfg.screen_batches,
                                            data=data)[1] for _, masks in cells]
            short = best_of(screen, min(cfg.top, len(cells)))
            full = [loop.measurer.measure(net, cells[i][1], data=data)[1] for i in short]
        finally:
            del net
        winner = min(short, key=lambda i: (-full[short.index(i)], i))  # ties: first drawn
        g, masks = cells[winner]
        return g, masks, {"select_scores": len(cells) + len(short)}
