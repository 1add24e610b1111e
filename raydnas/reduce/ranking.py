"""Methods ranked across benchmarks (Demšar, JMLR 2006): one study per benchmark, each giving a
score per method (by default the retrained cells' mean test accuracy), ranked together.

* **Ranks per benchmark**: 1 = the best score, ties share the mean of their ranks. A method
  without a score on a benchmark (its searches or retrainings failed, or it was not run there)
  counts as what it is: it shares the worst ranks, never dropped.
* **Mean rank** over the N benchmarks, with a 95 % bootstrap interval (benchmarks resampled).
* **Friedman's test** that all k methods rank alike: χ²_F = [12/(N k (k+1)) Σ_j R_j² −
  3N(k+1)] / C, R_j the rank sums, C = 1 − Σ(t³ − t)/(N(k³ − k)) the tie correction (t the
  sizes of tied groups), χ² with k − 1 degrees of freedom (scipy's ``friedmanchisquare``).
* **Nemenyi's critical difference** CD = q_α √(k(k+1)/(6N)), q_α the studentized range's
  1 − α quantile for k means and infinite df over √2: two methods whose mean ranks differ by
  more than CD differ at level α (all pairs, one family). Drawn as Demšar's diagram.
* **Agreement of the benchmarks**: Kendall's τ-b between every two benchmarks' rankings, and
  their mean.
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
from typing import Any

from scipy import stats

from .formats import fmt_num

# Lazy imports: matplotlib for the figure only.

BOOTSTRAP = 2000


def ranks(scores: dict[str, float | None], methods: list[str]) -> dict[str, float]:
    """One benchmark's ranks (1 = highest score; ties and missing scores share mean ranks,
    the missing ones after every scored method)."""
    ok = {m: scores[m] for m in methods
          if isinstance(scores.get(m), (int, float)) and math.isfinite(scores[m])}
    order = sorted(ok, key=lambda m: -ok[m])
    out: dict[str, float] = {}
    i = 0
    while i < len(order):
        j = i
        while j < len(order) and ok[order[j]] == ok[order[i]]:
            j += 1
        for m in order[i:j]:
            out[m] = (i + 1 + j) / 2
        i = j
    missing = [m for m in methods if m not in ok]
    for m in missing:
        out[m] = (len(ok) + 1 + len(methods)) / 2
    return out


def friedman(table: list[dict[str, float]], methods: list[str]) -> tuple[float, float]:
    """(χ²_F with the tie correction, p) of per-benchmark rank tables (module docstring)."""
    n, k = len(table), len(methods)
    sums = [sum(t[m] for t in table) for m in methods]
    stat = 12.0 / (n * k * (k + 1)) * sum(s * s for s in sums) - 3.0 * n * (k + 1)
    ties = sum(c ** 3 - c for t in table
               for c in _counts([t[m] for m in methods]))
    corr = 1.0 - ties / (n * (k ** 3 - k))
    stat = stat / corr if corr > 0 else math.nan
    return stat, float(stats.chi2.sf(stat, k - 1)) if math.isfinite(stat) else math.nan


def _counts(values: list[float]) -> list[int]:
    seen: dict[float, int] = {}
    for v in values:
        seen[v] = seen.get(v, 0) + 1
    return list(seen.values())


def critical_difference(k: int, n: int, alpha: float = 0.05) -> float:
    """Nemenyi's CD for k methods on n benchmarks."""
    q = float(stats.studentized_range.ppf(1 - alpha, k, math.inf)) / math.sqrt(2)
    return q * math.sqrt(k * (k + 1) / (6.0 * n))


def kendall(a: dict[str, float], b: dict[str, float], methods: list[str]) -> float:
    """Kendall's τ-b between two benchmarks' rankings of ``methods``."""
    return float(stats.kendalltau([a[m] for m in methods], [b[m] for m in methods]).statistic)


def rank_suite(scores: dict[str, dict[str, float | None]], alpha: float = 0.05,
               seed: int = 0) -> dict[str, Any]:
    """The whole ranking of ``scores`` (benchmark -> method -> score; higher is better)."""
    benches = list(scores)
    methods = sorted({m for s in scores.values() for m in s})
    if len(benches) < 2 or len(methods) < 2:
        raise ValueError("a ranking across benchmarks needs >= 2 benchmarks and >= 2 methods")
    table = [ranks(scores[b], methods) for b in benches]
    mean = {m: statistics.fmean(t[m] for t in table) for m in methods}
    rng = random.Random(seed)
    boots = {m: [] for m in methods}
    for _ in range(BOOTSTRAP):
        pick = rng.choices(table, k=len(table))
        for m in methods:
            boots[m].append(statistics.fmean(t[m] for t in pick))
    ci = {m: (sorted(v)[int(0.025 * BOOTSTRAP)], sorted(v)[int(0.975 * BOOTSTRAP) - 1])
          for m, v in boots.items()}
    stat, p = friedman(table, methods) if len(methods) >= 3 else (math.nan, math.nan)
    cd = critical_difference(len(methods), len(benches), alpha)
    taus = {f"{a} ~ {b}": kendall(table[i], table[j], methods)
            for (i, a), (j, b) in itertools.combinations(enumerate(benches), 2)}
    order = sorted(methods, key=lambda m: (mean[m], m))
    return {"benchmarks": benches, "methods": order, "ranks": dict(zip(benches, table)),
            "mean_rank": mean, "mean_rank_ci": ci, "friedman": stat, "friedman_p": p,
            "alpha": alpha, "cd": cd,
            "differ": [[a, b] for a, b in itertools.combinations(order, 2)
                       if abs(mean[a] - mean[b]) > cd],
            "missing": {b: [m for m in methods if not isinstance(scores[b].get(m), (int, float))
                            or not math.isfinite(scores[b][m])] for b in benches},
            "kendall": taus,
            "kendall_mean": _nanmean(list(taus.values()))}


def _nanmean(xs: list[float]) -> float:
    """The mean of the finite values (a benchmark with every method tied has no τ)."""
    xs = [x for x in xs if math.isfinite(x)]
    return statistics.fmean(xs) if xs else math.nan


def cliques(order: list[str], mean: dict[str, float], cd: float) -> list[tuple[str, str]]:
    """Demšar's bars: maximal runs of methods (in mean-rank order) within CD of each other."""
    out: list[tuple[int, int]] = []
    for i in range(len(order)):
        j = i
        while j + 1 < len(order) and mean[order[j + 1]] - mean[order[i]] <= cd:
            j += 1
        if j > i and not any(a <= i and j <= b for a, b in out):
            out.append((i, j))
    return [(order[a], order[b]) for a, b in out]


def cd_figure(result: dict[str, Any], path) -> None:
    """Demšar's critical-difference diagram of :func:`rank_suite`'s result, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order, mean, cd = result["methods"], result["mean_rank"], result["cd"]
    k = len(order)
    bars = cliques(order, mean, cd)
    fig, ax = plt.subplots(figsize=(8, 1.6 + 0.32 * k + 0.2 * len(bars)))
    ax.set_xlim(0.5, k + 0.5)
    ax.set_ylim(-(k + len(bars) + 1), 2)
    ax.hlines(0, 1, k, color="black")
    for r in range(1, k + 1):
        ax.vlines(r, 0, 0.2, color="black")
        ax.text(r, 0.35, str(r), ha="center", va="bottom", fontsize=8)
    shown = min(cd, k - 1)  # a CD wider than the axis: drawn to its end, said in the label
    ax.hlines(1.3, 1, 1 + shown, color="black", lw=2)
    ax.text(1 + shown / 2, 1.45, f"CD = {cd:.2f}" + (" (wider than the axis)" if cd > k - 1
                                                      else ""), ha="center", va="bottom",
            fontsize=8)
    for i, m in enumerate(order):
        y = -(i + 1)
        ax.vlines(mean[m], y, 0, color="0.4", lw=0.8)
        ax.plot([mean[m]], [0], "o", color="black", ms=3)
        ax.text(mean[m] + 0.05, y, f"{m} ({mean[m]:.2f})", va="center", fontsize=8)
    for i, (a, b) in enumerate(bars):
        y = -(k + 1 + i) * 1.0 + 0.5
        ax.hlines(y, mean[a] - 0.05, mean[b] + 0.05, color="tab:blue", lw=3)
    ax.set_title(f"Mean rank over {len(result['benchmarks'])} benchmarks (1 = best); bars: "
                 f"no difference by Nemenyi at {1 - result['alpha']:.0%}", fontsize=9)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def rank_markdown(r: dict[str, Any]) -> list[str]:
    """rank.md: mean ranks, Friedman, the CD diagram, agreement, per-benchmark scores."""
    b, m = r["benchmarks"], r["methods"]
    lines = [f"# raydnas rank: {len(m)} methods on {len(b)} benchmarks", "",
             f"By `{r['metric']}` (higher is better), ranked per benchmark (1 = best; a method "
             "without a value shares the worst ranks). Friedman χ² = "
             f"{fmt_num(r['friedman'], 2)}, p = {fmt_num(r['friedman_p'], 4)}; Nemenyi's "
             f"critical difference at {1 - r['alpha']:.0%}: {fmt_num(r['cd'], 2)} ranks. "
             + (f"Differ: {'; '.join(f'{x} ≠ {y}' for x, y in r['differ'])}."
                if r["differ"] else "No two methods differ by more than the critical "
                                    "difference."), "", "![cd](cd.png)", "",
             "| method | mean rank | 95 % CI | " + " | ".join(b) + " |",
             "|---|---:|---|" + "---:|" * len(b)]
    for x in m:
        lo, hi = r["mean_rank_ci"][x]
        cells = [(f"{fmt_num(r['scores'][k].get(x), 4)} ({r['ranks'][k][x]:g})"
                  if r["scores"][k].get(x) is not None else f"— ({r['ranks'][k][x]:g})")
                 for k in b]
        lines.append(f"| {x} | {r['mean_rank'][x]:.2f} | [{lo:.2f}, {hi:.2f}] | "
                     + " | ".join(cells) + " |")
    lines += ["", f"Agreement of the benchmarks' rankings: mean Kendall τ "
              f"{fmt_num(r['kendall_mean'], 2)} ("
              + ", ".join(f"{k}: {fmt_num(v, 2)}" for k, v in r["kendall"].items()) + ")."]
    miss = {k: v for k, v in r["missing"].items() if v}
    if miss:
        lines += ["", "Without a value (ranked last there): "
                  + "; ".join(f"{k}: {', '.join(v)}" for k, v in miss.items()) + "."]
    return lines
