"""Retraining sensitivity (``evaluate.variants``): the ranking of the groups under the study's
protocol and under each variant of it (another learning rate, epochs, weight decay…), how much
the rankings agree, and which groups' rank depends on the variant.

Every found and random cell is retrained under the protocol and under each variant (evaluation
trials whose protocol is named ``<protocol>@<variant>``). Per protocol, a group's score is the
mean over its search seeds of the retrained test accuracy (evaluation seeds averaged first);
only search trials retrained under the protocol and under every variant that has finished any
retraining are compared (the same seeds in every column). Ranks are 1 = best, ties share (and a
group without a value shares the worst) as in :func:`raydnas.reduce.ranking.ranks`. Agreement
is Kendall's τ-b between the protocol's ranking and each variant's. A group is
**variant-sensitive** when its rank moves by 2 or more places between two of them (with 3 or
more groups), or it is best under one and not under another.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import pandas as pd

from ..evaluation.protocol import VARIANT_SEP
from ..results.load import Trial
from .formats import fmt_num
from .ranking import kendall, ranks
from .truth import per_trial, role_cells

#: rank places a group must move between two protocols to be flagged
MOVE = 2


def variant_names(evals: list[dict[str, Any]], protocol: str | None) -> list[str]:
    """The variants of ``protocol`` that have evaluations, in name order."""
    if protocol is None:
        return []
    pre = f"{protocol}{VARIANT_SEP}"
    return sorted({str(e["protocol"])[len(pre):] for e in evals
                   if str(e["protocol"]).startswith(pre)})


def sensitivity(evals: list[dict[str, Any]], protocol: str | None,
                used: dict[str, list[Trial]]) -> dict[str, Any] | None:
    """The groups' scores and ranks under the protocol and each variant; None without
    variants."""
    names = variant_names(evals, protocol)
    if not names:
        return None
    groups = list(used)
    cols = [protocol] + [f"{protocol}{VARIANT_SEP}{n}" for n in names]
    truths = {c: per_trial(evals, c)[0] for c in cols}
    # a variant without any finished retraining yet is left out; the others are compared on
    # the search trials retrained under every one of them (the same seeds in every column)
    unfinished = [c.split(VARIANT_SEP, 1)[1] for c in cols[1:] if not truths[c]]
    cols = [protocol] + [c for c in cols[1:] if truths[c]]
    if len(cols) < 2 or not truths[protocol]:
        return None
    names = [c.split(VARIANT_SEP, 1)[1] for c in cols[1:]]
    common = set.intersection(*(set(truths[c]) for c in cols))
    scores: dict[str, dict[str, float | None]] = {}
    randoms: dict[str, float | None] = {}
    for c in cols:
        truth = truths[c]
        scores[c] = {}
        for g, ts in used.items():
            v = [truth[t.trial_id]["test_acc"] for t in ts if t.trial_id in common]
            scores[c][g] = statistics.fmean(v) if v else None
        rc = [x["test_acc"] for x in role_cells(evals, c, "random").values()]
        randoms[c] = statistics.fmean(rc) if rc else None
    table = {c: ranks(scores[c], groups) for c in cols}
    rng = {g: max(table[c][g] for c in cols) - min(table[c][g] for c in cols) for g in groups}
    best = {c: {g for g in groups if table[c][g] == min(table[c].values())} for c in cols}
    lead_moves = {g for g in groups if any(g in best[c] for c in cols)
                  and not all(g in best[c] for c in cols)}
    sensitive = [g for g in groups if (len(groups) >= 3 and rng[g] >= MOVE) or g in lead_moves]
    return {"protocol": protocol, "variants": names, "columns": cols, "scores": scores,
            "ranks": table, "random_mean": randoms, "rank_range": rng,
            "sensitive": sensitive, "leader_changes": bool(lead_moves),
            "unfinished": unfinished, "compared": len(common),
            "kendall": {n: kendall(table[protocol], table[c], groups)
                        for n, c in zip(names, cols[1:])}}


def add_columns(df: pd.DataFrame, s: dict[str, Any] | None) -> None:
    """``variant_rank_range`` and ``variant_sensitive`` (with variants only)."""
    if s is None:
        return
    df["variant_rank_range"] = [s["rank_range"].get(g, math.nan) for g in df["group"]]
    df["variant_sensitive"] = [g in s["sensitive"] for g in df["group"]]


def section_lines(df: pd.DataFrame) -> list[str]:
    """``## Retraining sensitivity``: the table and the sentence (nothing without variants)."""
    s = (df.attrs.get("truth") or {}).get("variants")
    if not s:
        return []
    cols = s["columns"]
    head = [s["protocol"]] + [c.split(VARIANT_SEP, 1)[1] for c in cols[1:]]
    lines = ["## Retraining sensitivity", "",
             f"Every cell retrained under `{s['protocol']}` and {len(s['variants'])} "
             "variant(s) of it (`evaluate.variants`): mean test accuracy over search seeds "
             f"on the {s['compared']} search trials retrained under all of them "
             + (f"(not yet finished: {', '.join(s['unfinished'])}) " if s["unfinished"] else "")
             + "(rank, 1 = best). A group is flagged when its rank moves by "
             f"{MOVE} or more places between two of them, or it leads under one and not "
             "under another.", "",
             "| group | " + " | ".join(head) + " | rank range | flagged |",
             "|---|" + "---:|" * len(cols) + "---:|---|"]
    for g in df["group"]:
        if g not in s["rank_range"]:
            continue
        cells = [f"{fmt_num(s['scores'][c].get(g), 4)} ({s['ranks'][c][g]:g})" for c in cols]
        lines.append(f"| {g} | " + " | ".join(cells)
                     + f" | {s['rank_range'][g]:g} | {'**yes**' if g in s['sensitive'] else ''} |")
    lines.append("| random cells (mean) | " + " | ".join(
        fmt_num(s["random_mean"][c], 4) for c in cols) + " | | |")
    taus = ", ".join(f"{n}: {fmt_num(t, 2)}" for n, t in s["kendall"].items())
    lines += ["", f"Agreement with the protocol's ranking (Kendall τ-b): {taus}. "
              + (f"**The ranking depends on the retraining recipe** for "
                 f"{', '.join(s['sensitive'])}" if s["sensitive"] else
                 "No group's rank depends on the variant")
              + (" (the best group changes)." if s["leader_changes"] else "."), ""]
    return lines
