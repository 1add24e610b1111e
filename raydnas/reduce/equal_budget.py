"""Does a method beat random search at the same budget? (Li & Talwalkar, UAI 2019; Yu et al.,
ICLR 2020; Lindauer & Hutter's checklist.)

Random search here is what the study's own random baseline allows: draw ``n`` of its R
retrained random cells without replacement and keep the one with the best ``eval_val_acc``
(the retrained cell's validation accuracy; test accuracy is never used to choose); its value
is that cell's test accuracy. The budget ``n`` is what one of the method's searches and its
retraining cost, in retrainings of a random cell: n = round((search seconds + the method's
retraining seconds) / a random cell's retraining seconds), from the study's own runs (the
group's mean search seconds, selection and measurements outside the epochs included; the
medians of the retraining seconds, times the evaluation seeds of a cell), at least 1 and at
most R (``random_search_capped`` says when R cells were too few; no timings: no budget).

:func:`best_of` gives the exact distribution of the chosen cell's test accuracy: with the cells
sorted by validation accuracy (best first), the cell at position p is chosen with probability
C(R − 1 − p, n − 1) / C(R, n) (it is drawn and none above it is); cells tied on validation
accuracy share their tie group's probability equally (ties broken uniformly at random).
Per method: ``random_search_test_acc`` (the expected test accuracy of that choice) and
``p_beats_random_search``, the probability that one of the method's retrained cells (a search
seed drawn uniformly) scores above random search's cell (ties count half), with a 95 %
bootstrap interval over the method's seeds (the random cells held fixed): **beats** when the
interval lies above 1/2, **loses** when below, else cannot tell — and cannot tell with fewer
than ``MIN_SEEDS`` (5) seeds, where a bootstrap claims too much.
"""

from __future__ import annotations

import math
import random
import statistics
from math import comb
from typing import Any

from .formats import fmt_num

BOOTSTRAP = 2000
#: fewer search seeds than this get no verdict (a bootstrap of 1-4 values claims too much)
MIN_SEEDS = 5


def best_of(cells: list[tuple[float, float]], n: int) -> list[tuple[float, float]]:
    """(probability, test accuracy) of each cell being random search's choice among ``n`` of
    ``cells`` ((validation accuracy, test accuracy) pairs) drawn without replacement."""
    r = len(cells)
    if not 1 <= n <= r:
        raise ValueError(f"n = {n} cells out of {r}")
    order = sorted(cells, key=lambda c: -c[0])
    p = [comb(r - 1 - i, n - 1) / comb(r, n) for i in range(r)]
    out, i = [], 0
    while i < r:  # a tie group on validation accuracy shares its probability equally
        j = i
        while j < r and order[j][0] == order[i][0]:
            j += 1
        share = sum(p[i:j]) / (j - i)
        out += [(share, order[k][1]) for k in range(i, j)]
        i = j
    return out


def p_beats(values: list[float], dist: list[tuple[float, float]]) -> float:
    """P(a uniformly drawn value of ``values`` > random search's test accuracy); ties half."""
    return statistics.fmean(sum(q * (1.0 if v > t else 0.5 if v == t else 0.0)
                                for q, t in dist) for v in values)


def verdict(values: list[float], dist: list[tuple[float, float]], seed: int = 0
            ) -> tuple[float, float, float, str]:
    """(P(beats), 95 % bootstrap low, high, 'beats' / 'loses' / 'cannot tell')."""
    per = [p_beats([v], dist) for v in values]
    p = statistics.fmean(per)
    rng = random.Random(seed)
    boots = sorted(statistics.fmean(rng.choices(per, k=len(per))) for _ in range(BOOTSTRAP))
    lo, hi = boots[int(0.025 * BOOTSTRAP)], boots[int(0.975 * BOOTSTRAP) - 1]
    word = "cannot tell" if len(values) < MIN_SEEDS else \
        "beats" if lo > 0.5 else "loses" if hi < 0.5 else "cannot tell"
    return p, lo, hi, word


def median(xs: list[float]) -> float:
    """The median of the finite values (NaN without any)."""
    xs = [x for x in xs if isinstance(x, float) and math.isfinite(x)]
    return statistics.median(xs) if xs else math.nan


def budget(search_s: float, eval_s: float, random_eval_s: float, r: int
           ) -> tuple[int, bool] | None:
    """(n, capped): random cells one search plus its retraining buys, within 1..r; None
    without the timings."""
    if not all(math.isfinite(x) for x in (search_s, eval_s, random_eval_s)) or random_eval_s <= 0:
        return None
    n = max(1, round((search_s + eval_s) / random_eval_s))
    return min(n, r), n > r


def columns(groups: dict[str, list[float]], search_s: dict[str, float],
            eval_s: dict[str, float], randoms: dict[str, dict[str, Any]]) -> dict[str, dict]:
    """Per group the columns of the module docstring (empty without ≥ 2 random cells with a
    validation accuracy). ``groups``: group -> its retrained cells' test accuracies;
    ``search_s``/``eval_s``: the group's median seconds per search / per retraining;
    ``randoms``: the random cells (``test_acc``, ``eval_val_acc``, ``seconds``)."""
    cells = [(c["eval_val_acc"], c["test_acc"]) for c in randoms.values()
             if isinstance(c.get("eval_val_acc"), float) and math.isfinite(c["eval_val_acc"])]
    # a random cell retrained with k seeds cost k retrainings (its eval_val_acc is their mean)
    secs = [c["seconds"] * c.get("eval_seeds", 1) for c in randoms.values()
            if isinstance(c.get("seconds"), float) and math.isfinite(c["seconds"])]
    if len(cells) < 2:
        return {}
    rand_s = median(secs)
    out = {}
    for g, vals in groups.items():
        b = budget(search_s.get(g, math.nan), eval_s.get(g, math.nan), rand_s, len(cells))
        if b is None:  # no timings: no budget, no verdict
            continue
        n, capped = b
        dist = best_of(cells, n)
        row = {"random_search_n": n, "random_search_capped": capped,
               "random_search_test_acc": sum(q * t for q, t in dist)}
        if vals:
            p, lo, hi, word = verdict(vals, dist)
            row.update(p_beats_random_search=p, p_beats_random_search_low=lo,
                       p_beats_random_search_high=hi, vs_random_search=word)
        out[g] = row
    return out


def section_lines(df) -> list[str]:
    """The report's table: each group against random search at its budget (none without
    the columns: no random cells with a validation accuracy)."""
    if "vs_random_search" not in df.columns:
        return []
    rows = df[df["vs_random_search"].apply(lambda v: isinstance(v, str))]
    if rows.empty:
        return []
    lines = ["Against random search at the same budget: the best of n of the study's random "
             "cells by the retrained validation accuracy (`eval_val_acc`), n = what one search "
             "and its retraining cost in random-cell retrainings (medians of this study's "
             "runs); its expected test accuracy, and P(a found cell scores above it) with a "
             "95 % bootstrap interval over search seeds (the random cells held fixed; "
             "`raydnas.reduce.equal_budget`).", "",
             "| group | budget n | random search test_acc | group test_acc | P(beats) | 95 % CI | "
             "verdict |", "|---|---:|---:|---:|---:|---|---|"]
    for _, r in rows.sort_values("p_beats_random_search", ascending=False).iterrows():
        n = f"{int(r['random_search_n'])}" + (" (all cells: more needed)"
                                               if r["random_search_capped"] else "")
        word = r["vs_random_search"]
        lines.append(f"| {r['group']} | {n} | {fmt_num(r['random_search_test_acc'], 4)} | "
                     f"{fmt_num(r['test_acc_mean'], 4)} | "
                     f"{fmt_num(r['p_beats_random_search'], 2)} | "
                     f"[{fmt_num(r['p_beats_random_search_low'], 2)}, "
                     f"{fmt_num(r['p_beats_random_search_high'], 2)}] | "
                     + (f"**{word}**" if word != "cannot tell" else word) + " |")
    return lines + [""]
