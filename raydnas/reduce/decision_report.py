"""The report's first section: the decision (:mod:`raydnas.reduce.decision`), its pictures,
the power to tell each group from the leader, and a raced study's rounds."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from .formats import fmt_num


def _seeds(n: float) -> str:
    if isinstance(n, float) and math.isnan(n):
        return "n/a (fewer than 2 seeds)"
    return "more than 1000" if math.isinf(n) else f"about {int(n)}"


def decision_lines(df: pd.DataFrame) -> list[str]:
    """The decision in one sentence, and the race's cost (what ``raydnas reduce`` and the sweep
    summary print). Empty without evaluations. A suite: the ranking across its benchmarks and
    each benchmark's decision."""
    if "benchmarks" in df.attrs:
        return suite_lines(df)
    d = df.attrs.get("decision")
    if not d:
        return []
    lines = [f"Decision: {d['sentence']}"]
    race = d.get("race")
    if race:
        lines.append(f"Race: {race['searches']} searches in {len(race['rounds'])} round(s) "
                     f"(a fixed {race['rules']['max_seeds']}-seed study: "
                     f"{race['fixed_searches']}); out: "
                     + (", ".join(f"{m} (round {r})" for m, r in race["out"].items()) or "none"))
    if d.get("test_note"):
        lines.append(d["test_note"])
    return lines


def suite_lines(df: pd.DataFrame) -> list[str]:
    """A suite's lines: mean ranks, Friedman p and the CD; then each benchmark's decision."""
    r = df.attrs.get("suite")
    lines = []
    if r:
        lines.append(f"Ranking across {len(r['benchmarks'])} benchmarks (mean rank by "
                     f"{r['metric']}): " + ", ".join(f"{m} {r['mean_rank'][m]:.2f}"
                                                     for m in r["methods"])
                     + f"; Friedman p = {fmt_num(r['friedman_p'], 3)}, critical difference "
                     f"{fmt_num(r['cd'], 2)}, Kendall τ {fmt_num(r['kendall_mean'], 2)}")
    for b, v in df.attrs["benchmarks"].items():
        if v.get("decision"):
            lines.append(f"  {b}: {v['decision']['sentence']}")
    return lines


def decision_section(df: pd.DataFrame, plots: dict[str, Any]) -> list[str]:
    """``## Decision``: the sentence, the truth's figures, power and P(best), the race."""
    d = df.attrs.get("decision")
    if not d:
        return []
    lines = ["## Decision", "", f"**{d['sentence']}**", ""]
    if d.get("test_note"):
        lines += [d["test_note"], ""]
    for name in ("truth", "rank_intervals"):
        if name in plots:
            lines += [f"![{name}]({plots[name]})", ""]
    if d.get("leader") and d.get("power"):
        lines += [f"Power (by the retrained test accuracy; leader **{d['leader']}**, "
                  f"P(best) {fmt_num(d['p_best'].get(d['leader']), 2)}): the search seeds each "
                  "that would tell a group from the leader with Welch's test at 95 % confidence "
                  "and 80 % power, from the observed means and variances (a planning estimate: "
                  "the variances are themselves estimated from few seeds).", "",
                  "| group | seeds now | P(best) | to tell it from the leader |",
                  "|---|---:|---:|---|"]
        for p in d["power"]:
            lines.append(f"| {p['group']} | {p['n']} | {fmt_num(p['p_best'], 2)} | "
                         f"{_seeds(p['seeds_to_tell'])} seeds each |")
        lines.append("")
    race = d.get("race")
    if race:
        r = race["rules"]
        alpha = race["rounds"][0]["alpha"] if race["rounds"] else math.nan
        lines += [f"Raced on `{r['metric']}` (the retrained cells' validation accuracy): "
                  f"{r['min_seeds']} seeds each to start, {r['seeds_per_round']} more per "
                  f"round for the methods in contention, at most {r['max_seeds']}; a method "
                  f"significantly below {r['top_k']} other(s) (Welch, all pairs, Bonferroni) "
                  "is out, "
                  f"each round at α {fmt_num(alpha, 4)}"
                  f" ({r['alpha_spending']} spending of {1 - r['confidence']:.2g}). "
                  f"{race['searches']} searches; a fixed study: {race['fixed_searches']}.", "",
                  "| round | seeds each | contenders | leader / boundary | "
                  "out (the comparison that put it out) |",
                  "|---:|---:|---:|---|---|"]
        for row in race["rounds"]:
            lines.append(f"| {row['round']} | {row['seeds']} | {row['contenders']} | "
                         f"{row['boundary']} | {row['eliminated']} |")
        lines.append("")
    return lines
