"""Per-epoch discretization metrics (their names are listed in docs/configs.md, Metrics)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..model.genotype import Genotype
from ..model.ops import PARAM_FREE
from ..model.supernet import Supernet


def distance_to_discrete(probs: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> float:
    """‖a(α) − Π(a(α))‖_F over all cell types, divided by √(number of edges)."""
    sq = sum(float(((probs[c].detach().float().cpu() - masks[c]) ** 2).sum()) for c in probs)
    edges = sum(p.shape[0] for p in probs.values())
    return math.sqrt(sq) / math.sqrt(edges)


def alpha_entropy(probs: dict[str, torch.Tensor]) -> float:
    """Mean entropy (nats) of each edge's op weights, normalised to sum to 1."""
    ents = []
    for p in probs.values():
        p = p.detach().float().cpu().clamp_min(0)
        p = p / p.sum(dim=1, keepdim=True).clamp_min(1e-12)
        ents.append(-(p * p.clamp_min(1e-12).log()).sum(dim=1))
    return float(torch.cat(ents).mean())


#: a derived cell is "decided" when its chosen ops lead their edge's runner-up by at least this
#: much on average (a(α) normalized per edge); below it the genotype is mostly α-init noise
DECIDED_MARGIN = 0.05


def alpha_margins(probs: dict[str, torch.Tensor], masks: dict[str, torch.Tensor],
                  exclude: tuple[int, ...] = ()) -> list[float]:
    """Per kept edge of the derived cell: the chosen op's weight minus the best other op's weight
    that the rule could have chosen (ops in ``exclude``, e.g. DARTS's ``none``, left out), both
    from the edge's a(α) normalized to sum to 1 (0: a coin toss; 1: one-hot)."""
    out = []
    for c, p in probs.items():
        p = p.detach().float().cpu().clamp_min(0)
        p = p / p.sum(dim=1, keepdim=True).clamp_min(1e-12)
        m = masks[c].bool()
        for e in range(p.shape[0]):
            if not m[e].any():
                continue
            k = int(m[e].nonzero()[0])
            others = [float(p[e, j]) for j in range(p.shape[1]) if j != k and j not in exclude]
            out.append(float(p[e, k]) - (max(others) if others else 0.0))
    return out


def param_free_ops(genotype: Genotype) -> int:
    """Parameter-free ops (none, skip, pools) in the genotype's cells."""
    return sum(op in PARAM_FREE for op in genotype.ops())


def _n(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def derived_params(model: Supernet, masks: dict[str, torch.Tensor]) -> int:
    """Weights of the derived network: everything outside the mixed ops, plus the chosen ops
    (not the data axis' alignment convs: a network retrained on the chosen input has none)."""
    total = sum(p.numel() for p in model.weight_parameters())
    if model.data_mixer is not None:
        total -= sum(p.numel() for p in model.data_mixer.convs.parameters())
    for _, ct, e, k, op in model.mixed_ops():
        if masks[ct][e, k] == 0:
            total -= _n(op)
    return total


def _cell_total(table: dict[str, torch.Tensor], masks: dict[str, torch.Tensor],
                data: int | None) -> float:
    """The chosen ops' costs summed over every cell; a data axis' stacked ``[K, ...]`` table
    is read at configuration ``data``."""
    return float(sum((masks[c].unsqueeze(0).to(t) * (t[data] if t.dim() == 4 else t)).sum()
                     for c, t in table.items()))


def cell_costs(masks: dict[str, torch.Tensor], latency: dict[str, torch.Tensor] | None,
               flops: dict[str, torch.Tensor] | None, data: int | None = None
               ) -> dict[str, float]:
    """``cell_latency_ms`` (with a latency table) and ``cell_flops`` (with a FLOPs table): the
    derived cell's chosen ops' measured latency and multiply-adds on one image, summed over
    every cell; with a data axis on the chosen input configuration ``data``, at its side."""
    out = {}
    if latency:
        out["cell_latency_ms"] = _cell_total(latency, masks, data)
    if flops:
        out["cell_flops"] = _cell_total(flops, masks, data)
    return out


def data_metrics(model: Supernet) -> dict[str, object]:
    """The data axis (``data_search``): the chosen input configuration (argmax a(γ)), each
    configuration's weight a(γ)_k (``data_weight_<name>``, a TensorBoard scalar each) and
    whether γ froze; {} without it."""
    mx = model.data_mixer
    if mx is None:
        return {}
    w = mx.probs(model.activation).detach().cpu().tolist()
    return {"data_choice": mx.choice(model.activation).name,
            **{f"data_weight_{c.name}": v for c, v in zip(mx.configs, w)},
            "data_frozen": bool(mx.frozen)}
