"""The report's first pictures: the truth itself, not a proxy.

* ``truth.png``: per group (ordered by the truth's rank, best at the top), each search seed's
  retrained test accuracy as a dot and the group mean as a bar, over the distribution of the
  study's random cells (their box and dots in the bottom row, their middle 50 % shaded behind
  every row); the reference cells as labelled vertical lines.
* ``rank_intervals.png``: per group its rank (1 = best) and the 95 % bootstrap rank interval,
  with P(best) beside it: groups whose intervals overlap are not ordered by the data.
"""

from __future__ import annotations

import math
import random
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pandas as pd

from ..results.load import USED, Trial
from .cell_plot import pyplot


def _order(df: pd.DataFrame) -> list[int]:
    return sorted(range(len(df)), key=lambda i: (math.isnan(df.iloc[i]["test_rank"]),
                                                 df.iloc[i]["test_rank"], i))


def _seed_values(df: pd.DataFrame, members: dict[str, list[Trial]]) -> dict[str, list[float]]:
    truth = (df.attrs.get("truth") or {}).get("per_trial") or {}
    return {g: [truth[t.trial_id]["test_acc"] for t in members[g]
                if t.status in USED and t.trial_id in truth] for g in df["group"]}


def _horizontal() -> dict[str, Any]:
    """A horizontal boxplot's keyword: ``orientation`` from matplotlib 3.10 (``vert``, which
    older versions take, is deprecated in 3.11)."""
    major, minor = (int(x) for x in version("matplotlib").split(".")[:2])
    return {"orientation": "horizontal"} if (major, minor) >= (3, 10) else {"vert": False}


def truth_figure(df: pd.DataFrame, members: dict[str, list[Trial]], path: Path) -> bool:
    """Draw ``truth.png``; False when nothing was evaluated."""
    t = df.attrs.get("truth") or {}
    if not t.get("evaluations"):
        return False
    vals = _seed_values(df, members)
    order = [i for i in _order(df) if vals[df.iloc[i]["group"]]]
    rand = [c["test_acc"] for c in ((t.get("baseline") or {}).get("cells") or {}).values()]
    refs = (t.get("calibration") or {}).get("cells") or {}
    plt = pyplot()
    rows = len(order) + (1 if rand else 0)
    fig, ax = plt.subplots(figsize=(9, 1.6 + 0.42 * rows), dpi=110)
    jitter = random.Random(0)
    bottom = len(order)  # the random cells' row, below every group (best group at the top)
    if rand:
        q1, q3 = (sorted(rand)[int(round(q * (len(rand) - 1)))] for q in (0.25, 0.75))
        ax.axvspan(q1, q3, color="0.85", zorder=0)
        ax.boxplot([rand], positions=[bottom], widths=0.5, showfliers=False, **_horizontal())
        ax.scatter(rand, [bottom + jitter.uniform(-0.15, 0.15) for _ in rand], s=12,
                   color="0.4", zorder=3)
    labels = []
    for y, i in enumerate(order):
        g = df.iloc[i]["group"]
        v = vals[g]
        rank = df.iloc[i]["test_rank"]
        ax.scatter(v, [y + jitter.uniform(-0.12, 0.12) for _ in v], s=22, color="tab:blue",
                   zorder=3)
        ax.plot([sum(v) / len(v)] * 2, [y - 0.3, y + 0.3], color="black", lw=2, zorder=4)
        labels.append(f"{'' if math.isnan(rank) else int(rank)}. {g[:60]}")
    if rand:
        labels.append(f"random cells ({len(rand)}; shaded: their middle 50 %)")
    for k, (name, c) in enumerate(refs.items()):
        ax.axvline(c["test_acc"], color="tab:red", lw=1, ls="--", zorder=1)
        ax.text(c["test_acc"], -0.55 - 0.3 * (k % 2), f" {name}", color="tab:red",
                fontsize=7, va="bottom")
    ax.set_yticks(range(rows))
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_ylim(rows - 0.4, -1.3 if refs else -0.6)  # inverted: the best group at the top
    label = f"{t.get('protocol')}" + (", SHORT budget" if t.get("short") else "")
    ax.set_xlabel(f"retrained test accuracy ({label}); dots: search seeds, bar: mean; "
                  "dashed: reference cells")
    ax.set_title("The truth: each method's retrained cells against random cells", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return True


def rank_figure(df: pd.DataFrame, path: Path) -> bool:
    """Draw ``rank_intervals.png``; False when nothing was evaluated."""
    if not (df.attrs.get("truth") or {}).get("evaluations") or "test_rank" not in df:
        return False
    order = [i for i in _order(df) if not math.isnan(df.iloc[i]["test_rank"])]
    if not order:
        return False
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 1.4 + 0.38 * len(order)), dpi=110)
    n = len(order)
    for y, i in enumerate(order):
        r = df.iloc[i]
        lo, hi = r["test_rank_ci_low"], r["test_rank_ci_high"]
        ax.plot([lo, hi], [y, y], color="tab:blue", lw=3, solid_capstyle="round")
        ax.scatter([r["test_rank"]], [y], color="black", zorder=3, s=25)
        pb = r.get("p_best", math.nan)
        note = "" if pb is None or (isinstance(pb, float) and math.isnan(pb)) \
            else f"P(best) {pb:.2f}"
        ax.text(n + 0.6, y, note, va="center", fontsize=8)
    ax.set_yticks(range(n))
    ax.set_yticklabels([f"{df.iloc[i]['group'][:60]}" for i in order], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0.5, n + 2.5)
    ax.set_xticks(range(1, n + 1))
    ax.set_xlabel("rank by retrained test accuracy (1 = best): point and 95 % bootstrap interval")
    ax.set_title("Rank intervals: overlapping intervals are not ordered by the data",
                 fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return True


def draw_truth(df: pd.DataFrame, members: dict[str, list[Trial]], out: Path) -> dict[str, Any]:
    """Both figures into ``out``: {key: file name} for those drawn."""
    files = {}
    if truth_figure(df, members, out / "truth.png"):
        files["truth"] = "truth.png"
    if rank_figure(df, out / "rank_intervals.png"):
        files["rank_intervals"] = "rank_intervals.png"
    return files
