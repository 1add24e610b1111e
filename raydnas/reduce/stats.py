"""Reliability measures across the seeds of one group (method + hyperparameter point).

Definitions (each one is a column of the report):

* ``<metric>_mean/_std/_min/_max`` over the group's seeds, of the metric's value at the trial's
  last epoch. ``std`` is the sample standard deviation (ddof = 1); with one seed it is
  undefined (NaN, shown as ``n/a``), never 0.
* ``stabilization_epoch``: the epoch from which the trial's final genotype held to the end, i.e.
  the last epoch whose derived genotype differs from the previous epoch's (1 when it never
  changed after the first epoch). Only trials that ran every planned epoch count (a trial
  stopped early has no "end" to hold to); ``stabilization_n`` says how many seeds did.
* ``search_seconds``: the sum of ``epoch_seconds`` over the trial's epochs, plus the timed steps
  outside them (``hessian_seconds``, ``tune_seconds``, ``select_seconds``): the search's cost.
* ``consensus``: the mean, over all unordered pairs of seeds, of the Jaccard index
  |A ∩ B| / |A ∪ B| of the two seeds' chosen (cell type, node, input, op) sets in canonical
  form (``Genotype.canonical()``: ``none`` means "no edge" and is left out, and two cells that
  differ only by the numbering of their intermediate nodes are the same cell). 1.0 = every seed
  found the same cell; 0.0 = no pair of seeds shares a single (edge, op). Undefined (NaN)
  with fewer than two seeds; two empty cells count as identical.
* ``distinct_genotypes``: the number of different canonical cells among the seeds.
* ``modal_genotype`` / ``modal_count``: the most frequent canonical cell and how many seeds
  found it. Ties go to the cell whose best seed has the highest ``discrete_val_acc``. The
  ``modal_trial`` is that best seed among the modal cell's seeds.
* ``collapse_rate``: the share of seeds whose **normal** cell has collapsed onto parameter-free
  ops: at least ``collapse_threshold`` (default 0.5) of its *live* ops (``none`` is a missing
  edge, not an op) are ``skip_connect`` or pools (ops without weights,
  ``raydnas.model.cells.live_param_free_share``). NAS-Bench-201's all-skip and all-pool cells are
  collapsed; DARTS's published DARTS_V1/V2 (normal cells with 3 and 2 skips of 8) are not, and
  neither is a sparse cell whose live edges are convs.
  ``collapse_rate_skip_none``: raydnas 0.1's rule, kept as a named variant: at least the
  threshold of the normal cell's chosen ops are ``skip_connect`` or ``none``.
* ``param_free_rate``, ``param_free_seeds``: seeds whose normal cell is live but no path from
  an input to the output passes an op with weights (``raydnas.model.cells.param_free_cell``): the
  cell is a fixed function (pools and skips) and the network's weights sit elsewhere.
* ``dead_rate``: the share of seeds whose cell is dead: a cell type whose output no path of
  non-``none`` edges connects to its inputs (``Genotype.dead_cells()``), so that the network
  outputs a constant and cannot learn. Reported apart from collapse; ``dead_cell`` per seed.
* ``alpha_margin_mean``: per seed, the mean over the derived cell's edges of the chosen op's
  weight minus the runner-up's (a(α) normalized per edge); ``undecided_rate``: the share of
  seeds whose mean margin is below ``raydnas.search.metrics.DECIDED_MARGIN`` (0.05), i.e. whose cell
  is still mostly α-initialization noise rather than a search result.
* ``gap_reliability``: the share of seeds whose final ``discretization_gap``
  (``val_acc - discrete_val_acc``) is below ``gap_threshold`` (default 0.05, i.e. five
  accuracy points; a raydnas convention, not a paper value).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from typing import Any

from ..model.cells import live_param_free_share, param_free_cell
from ..model.genotype import Genotype
from ..results.genotype import trial_genotype
from ..results.load import Trial
from .limits import DEFAULT_COLLAPSE_THRESHOLD, DEFAULT_GAP_THRESHOLD  # noqa: F401

METRICS = ("val_acc", "discrete_val_acc", "discrete_val_acc_tuned", "discretization_gap",
           "distance_to_discrete", "alpha_margin_mean", "arch_params", "param_free_ops",
           "stabilization_epoch", "alpha_steps", "search_seconds", "cell_latency_ms",
           "cell_flops")
#: the ops whose dominance in the normal cell is collapse
COLLAPSE_OPS = frozenset({"skip_connect", "none"})

#: the per-epoch timings whose sum is a search's cost (``search_seconds``)
SECONDS = ("epoch_seconds", "hessian_seconds", "tune_seconds", "select_seconds")


def stabilization_epoch(epochs: list[dict[str, Any]]) -> float:
    """The last epoch whose genotype differs from the previous epoch's (1 if none did)."""
    gs = [(e.get("epoch"), e.get("genotype")) for e in epochs if e.get("genotype") is not None]
    if not gs:
        return math.nan
    last = gs[0][0]
    for (_, prev), (ep, cur) in zip(gs, gs[1:]):
        if cur != prev:
            last = ep
    return float(last)


def ran_to_the_end(t: Trial) -> bool:
    """Whether the trial ran every planned epoch (not stopped by a scheduler or early stop)."""
    if t.status != "complete" or t.last.get("early_stop"):
        return False
    fin = t.final or {}
    return fin.get("complete", True) is not False and not fin.get("early_stop")


def trial_values(t: Trial) -> dict[str, float]:
    """The per-seed values the group statistics are taken over."""
    last = t.last
    out = {}
    for m in ("val_acc", "discrete_val_acc", "discrete_val_acc_tuned", "discretization_gap",
              "distance_to_discrete", "alpha_margin_mean", "arch_params", "param_free_ops",
              "alpha_steps", "cell_latency_ms", "cell_flops"):
        v = last.get(m)
        out[m] = float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan
    if math.isnan(out["discretization_gap"]) and not (
            math.isnan(out["val_acc"]) or math.isnan(out["discrete_val_acc"])):
        out["discretization_gap"] = out["val_acc"] - out["discrete_val_acc"]
    out["stabilization_epoch"] = stabilization_epoch(t.epochs) if ran_to_the_end(t) \
        else math.nan
    secs = [e.get(k) for e in t.epochs for k in SECONDS]
    secs = [float(s) for s in secs if isinstance(s, (int, float))]
    out["search_seconds"] = sum(secs) if secs else math.nan
    return out


def summary(values: list[float]) -> dict[str, float]:
    """n-aware mean, sample std (NaN for n < 2), min, max; NaN entries are ignored."""
    v = [x for x in values if not math.isnan(x)]
    if not v:
        return {"mean": math.nan, "std": math.nan, "min": math.nan, "max": math.nan}
    mean = sum(v) / len(v)
    std = (math.sqrt(sum((x - mean) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else math.nan)
    return {"mean": mean, "std": std, "min": min(v), "max": max(v)}


def jaccard(a: frozenset, b: frozenset) -> float:
    """|a ∩ b| / |a ∪ b| (1 for two empty sets)."""
    union = a | b
    return 1.0 if not union else len(a & b) / len(union)


def consensus(edge_sets: list[frozenset]) -> float:
    """Mean pairwise Jaccard index of the seeds' chosen (edge, op) sets; NaN below two seeds."""
    pairs = list(itertools.combinations(edge_sets, 2))
    if not pairs:
        return math.nan
    return sum(jaccard(a, b) for a, b in pairs) / len(pairs)


def collapse_fraction(g: Genotype) -> float:
    """The share of the normal cell's live ops that have no weights (skips, pools)."""
    return live_param_free_share(g, "normal")


def skip_none_fraction(g: Genotype) -> float:
    """The share of the normal cell's chosen ops that are ``skip_connect`` or ``none``."""
    ops = [op for node in g.cells.get("normal", ()) for op, _ in node]
    return sum(op in COLLAPSE_OPS for op in ops) / len(ops) if ops else math.nan


def stopped_reasons(trials: list[Trial]) -> str:
    """The stopped trials' reasons with counts, e.g. ``dead 2, scheduler 1`` ('' if none)."""
    c = Counter(t.stopped_reason for t in trials if t.stopped_reason)
    return ", ".join(f"{k} {v}" for k, v in sorted(c.items()))


def group_row(trials: list[Trial], *, collapse_threshold: float = DEFAULT_COLLAPSE_THRESHOLD,
              gap_threshold: float = DEFAULT_GAP_THRESHOLD) -> dict[str, Any]:
    """All statistics of one group's usable trials (at least one)."""
    row: dict[str, Any] = {"n": len(trials),
                           "seeds": [t.seed for t in trials],
                           "n_stopped": sum(t.status == "stopped" for t in trials),
                           "stopped_reasons": stopped_reasons(trials)}
    vals = [trial_values(t) for t in trials]
    for m in METRICS:
        for k, v in summary([x[m] for x in vals]).items():
            row[f"{m}_{k}"] = v
    choices = [t.last.get("data_choice") for t in trials]  # the data axis, if searched
    if any(isinstance(c, str) for c in choices):
        top, n = Counter(c for c in choices if isinstance(c, str)).most_common(1)[0]
        row.update(data_choices=[c for c in choices], data_choice=top,
                   data_choice_share=n / len(trials))
    genos = [trial_genotype(t) for t in trials]
    known = [(t, g, v) for t, g, v in zip(trials, genos, vals) if g is not None]
    sets = [g.canonical() for _, g, _ in known]
    row["consensus"] = consensus(sets)
    row["distinct_genotypes"] = len(set(sets))
    if known:
        counts = Counter(sets)

        def best_acc(s: frozenset) -> float:
            accs = [v["discrete_val_acc"] for _, g, v in known if g.canonical() == s]
            accs = [a for a in accs if not math.isnan(a)]
            return max(accs) if accs else -math.inf

        modal = max(counts, key=lambda s: (counts[s], best_acc(s)))
        members = [(t, g, v) for t, g, v in known if g.canonical() == modal]
        t_best, g_best, _ = max(members, key=lambda x: (
            -math.inf if math.isnan(x[2]["discrete_val_acc"]) else x[2]["discrete_val_acc"]))
        row["modal_count"] = counts[modal]
        row["modal_genotype"] = g_best.to_darts()
        row["modal_genotype_nb201"] = g_best.to_nb201() if g_best.inputs == 1 else None
        row["modal_trial"] = t_best.trial_id
        row["modal_seed"] = t_best.seed
        for col, fn in (("collapse_rate", collapse_fraction),
                        ("collapse_rate_skip_none", skip_none_fraction)):
            fracs = [fn(g) for _, g, _ in known]
            fracs = [f for f in fracs if not math.isnan(f)]
            row[col] = (sum(f >= collapse_threshold for f in fracs) / len(fracs)
                        if fracs else math.nan)
        free = [param_free_cell(g, "normal") for _, g, _ in known]
        row["param_free_rate"] = sum(free) / len(free)
        row["param_free_seeds"] = [t.seed for (t, _, _), f in zip(known, free) if f]
        dead = [bool(g.dead_cells()) for _, g, _ in known]
        row["dead_rate"] = sum(dead) / len(dead)
        row["dead_seeds"] = [t.seed for (t, _, _), d in zip(known, dead) if d]
    else:
        row.update(modal_count=0, modal_genotype=None, modal_genotype_nb201=None,
                   modal_trial=None, modal_seed=None, collapse_rate=math.nan,
                   collapse_rate_skip_none=math.nan, param_free_rate=math.nan,
                   param_free_seeds=[], dead_rate=math.nan, dead_seeds=[])
    row["stabilization_n"] = sum(not math.isnan(v["stabilization_epoch"]) for v in vals)
    decided = [t.last.get("decided") for t in trials if isinstance(t.last.get("decided"), bool)]
    row["undecided_rate"] = (sum(not d for d in decided) / len(decided)) if decided else math.nan
    gaps = [v["discretization_gap"] for v in vals if not math.isnan(v["discretization_gap"])]
    row["gap_reliability"] = (sum(g < gap_threshold for g in gaps) / len(gaps)
                              if gaps else math.nan)
    return row
