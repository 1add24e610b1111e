"""The report's PNGs (matplotlib, Agg backend, imported only here).

* ``acc_vs_gap.png``: every seed's discrete accuracy against its discretization gap, one
  colour per group, the group mean with ±1 std bars.
* ``reliability.png``: consensus, collapse rate and gap reliability per group (proxies, in
  neutral colours; a group whose cells are mostly parameter-free says so beside its gap).
* ``truth.png``, ``rank_intervals.png``: the truth (:mod:`raydnas.reduce.truth_plots`).
* ``cell_<NN>.png``: each group's modal genotype as a cell diagram (one panel per cell type).
* ``alpha_<NN>.png``: the op weights a(α) of each group's modal run (final epoch) with 4 digits,
  coloured by their deviation from the edge's uniform share on a fixed scale (≥ ±0.05), chosen
  ops outlined.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..results.genotype import trial_genotype
from ..results.load import USED, Trial
from .cell_plot import cell_diagram, pyplot
from .limits import shown
from .stats import trial_values
from .truth_plots import draw_truth

# Lazy imports: matplotlib loads only when a figure is drawn.

if TYPE_CHECKING:
    import pandas as pd


def _wrap(label: str, width: int = 48) -> str:
    """The whole label on as many lines as it needs (never cut: groups differ at the end)."""
    return textwrap.fill(label, width, break_long_words=True, break_on_hyphens=False)


def _two_lines(label: str, width: int = 44) -> str:
    """Method on the first line(s), point and hyperparameters below, nothing cut."""
    method, _, rest = label.partition(" ")
    return _wrap(method, width) + ("\n" + _wrap(rest, width) if rest else "")


def acc_vs_gap(df: "pd.DataFrame", members: dict[str, list[Trial]], path: Path,
               gap_threshold: float) -> None:
    """``acc_vs_gap.png``: discrete accuracy against the discretization gap per seed and group."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    colors = plt.get_cmap("tab10")
    for i, r in df.iterrows():
        ts = [t for t in members[r["group"]] if t.status in USED]
        if not ts:
            continue
        vals = [trial_values(t) for t in ts]
        xs = [v["discretization_gap"] for v in vals]
        ys = [v["discrete_val_acc"] for v in vals]
        c = colors(i % 10)
        ax.scatter(xs, ys, color=c, alpha=0.55, s=36,
                   label=f"{i + 1}. {_wrap(r['group'], 90)} (n={r['n']})")
        xm, ym = r["discretization_gap_mean"], r["discrete_val_acc_mean"]
        xe, ye = r["discretization_gap_std"], r["discrete_val_acc_std"]
        ax.errorbar([xm], [ym], xerr=None if math.isnan(xe) else [xe],
                    yerr=None if math.isnan(ye) else [ye], fmt="D", color=c, ms=8,
                    mec="black", capsize=4, lw=1.5)
        ax.annotate(str(i + 1), (xm, ym), textcoords="offset points", xytext=(7, 7),
                    fontsize=9, weight="bold", color=c)
    ax.axvline(gap_threshold, color="grey", ls="--", lw=1)
    ax.text(gap_threshold, ax.get_ylim()[1], f" gap < {gap_threshold:g}: reliable",
            va="top", ha="left", fontsize=8, color="grey")
    ax.set_xlabel("discretization gap (supernet val_acc − discrete val_acc)")
    ax.set_ylabel("discrete val_acc (derived cell, inherited weights)")
    ax.set_title("Accuracy vs discretization gap (dots: seeds; diamonds: mean ± std)")
    ax.grid(alpha=0.3)
    # the legend below the axes: it never covers a point
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=1,
              frameon=False)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def reliability(df: "pd.DataFrame", path: Path) -> None:
    """``reliability.png``: consensus, collapse rate and gap reliability per group."""
    plt = pyplot()
    n = len(df)
    labels = [f"{i + 1}. {_two_lines(g)}" for i, g in enumerate(df["group"])]
    lines = max(lab.count("\n") + 1 for lab in labels) if labels else 1
    fig, axes = plt.subplots(1, 3, figsize=(14, 1.5 + 0.3 * lines * n), dpi=110, sharey=True)
    ys = list(range(n))[::-1]
    thr = df.attrs.get("collapse_threshold", 0.5)
    # proxies, in neutral colours: none of them says a cell is good (a parameter-free cell can
    # have a small gap and a perfect consensus); red marks the failure share
    panels = [("consensus", "genotype consensus\n(mean pairwise Jaccard)", "tab:gray"),
              ("collapse_rate", f"collapse rate (normal cell: ≥ {thr:g} of\nits live ops "
               "parameter-free)", "tab:red"),
              ("gap_reliability", "gap reliability (share with a small gap;\na proxy: "
               "says nothing of quality)", "tab:gray")]
    for ax, (col, title, color) in zip(axes, panels):
        vals = [0.0 if math.isnan(v) else v for v in df[col]]
        ax.barh(ys, vals, color=color, alpha=0.8)
        for y, v, r in zip(ys, df[col], df.to_dict(orient="records")):
            if col == "consensus":
                text = ("n/a (1 seed)" if math.isnan(v) else f"{v:.2f}") + \
                    f"  modal {r['modal_count']}/{r['n']}, {r['distinct_genotypes']} distinct"
            else:
                text = "n/a" if math.isnan(v) else f"{v:.2f}"
            free = r.get("param_free_rate")
            if col == "gap_reliability" and isinstance(free, float) and free >= 0.5:
                text += f"  (param-free cells in {free:.0%} of seeds)"
            ax.text(0.02, y, text, va="center", fontsize=8)
        ax.set_xlim(0, 1.05)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(ys)
    axes[0].set_yticklabels(labels, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def alpha_heatmap(final: dict[str, Any], genotype, title: str, path: Path) -> bool:
    """Heatmaps of ``final.json``'s ``op_weights``; False when the run has none."""
    weights = final.get("op_weights") or {}
    ops = final.get("ops") or []
    edges = [tuple(e) for e in final.get("edges") or []]
    if not weights or not ops:
        return False
    plt = pyplot()
    from matplotlib.patches import Rectangle

    cts = list(weights)
    n_e = max(len(w) for w in weights.values())
    fig, axes = plt.subplots(1, len(cts), figsize=(1.6 + 1.1 * len(ops) * len(cts),
                                                   1.6 + 0.42 * n_e), dpi=110, squeeze=False)
    for ax, ct in zip(axes[0], cts):
        w = weights[ct]
        # colour: each weight's deviation from its edge's uniform share (1/ops, of the edge's
        # total), on a fixed symmetric scale of at least ±0.05, so init noise stays pale and
        # only real preferences show; text: the weight with 4 digits
        dev = []
        for rowv in w:
            tot = sum(max(v, 0.0) for v in rowv) or 1.0
            dev.append([max(v, 0.0) / tot - 1.0 / len(rowv) for v in rowv])
        span = max(0.05, max(abs(d) for r in dev for d in r))
        im = ax.imshow(dev, cmap="RdBu_r", aspect="auto", vmin=-span, vmax=span)
        for e, rowv in enumerate(w):
            for o, v in enumerate(rowv):
                ax.text(o, e, f"{v:.4f}", ha="center", va="center", fontsize=7,
                        color="white" if abs(dev[e][o]) > 0.6 * span else "black")
        chosen = set()
        if genotype is not None and ct in genotype.cells:
            for j, node in enumerate(genotype.cells[ct]):
                for op, src in node:
                    chosen.add(((src, genotype.inputs + j), op))
        for e, edge in enumerate(edges[: len(w)]):
            for o, op in enumerate(ops):
                if (edge, op) in chosen:
                    ax.add_patch(Rectangle((o - 0.5, e - 0.5), 1, 1, fill=False, ec="black",
                                           lw=2))
        ax.set_xticks(range(len(ops)))
        ax.set_xticklabels(ops, rotation=40, ha="right", fontsize=8)
        ax.set_yticks(range(len(w)))
        ax.set_yticklabels([f"{a}→{b}" for a, b in edges[: len(w)]] or None, fontsize=8)
        ax.set_title(f"{ct} cell: a(α) (outlined: chosen)", fontsize=9)
        cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        cb.set_label("share of the edge − uniform share", fontsize=7)
    fig.suptitle(textwrap.fill(title, 110), fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def proxy_vs_truth(df: "pd.DataFrame", members: dict[str, list[Trial]], path: Path) -> bool:
    """Every evaluated trial's proxy (discrete_val_acc) against its test accuracy, one colour
    per group, with the rank correlations in the title. False if nothing was evaluated."""
    truth_attrs = df.attrs.get("truth") or {}
    if not truth_attrs.get("evaluations"):
        return False
    truth = truth_attrs.get("per_trial") or {}
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5.5), dpi=110)
    colors = plt.get_cmap("tab10")
    for i, r in df.iterrows():
        pts = [(t.last.get("discrete_val_acc"), truth[t.trial_id]["test_acc"])
               for t in members[r["group"]] if t.status in USED and t.trial_id in truth
               and isinstance(t.last.get("discrete_val_acc"), (int, float))]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=colors(i % 10), s=40,
                       alpha=0.75, label=f"{i + 1}. {_wrap(r['group'], 70)}")
    pv = (df.attrs.get("proxy_validity") or {}).get("discrete_val_acc") or {}
    rho, tau, n = pv.get("spearman", math.nan), pv.get("kendall", math.nan), pv.get("n", 0)
    label = truth_attrs.get("protocol") or "?"
    if truth_attrs.get("short"):
        label += ", SHORT budget"
    ax.set_title(f"Proxy vs truth ({label}): Spearman {rho:.2f}, Kendall {tau:.2f}, n={n}",
                 fontsize=10)
    ax.set_xlabel("discrete_val_acc (derived cell, inherited weights, BN re-estimated)")
    ax.set_ylabel("test accuracy (retrained from scratch)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2,
              frameon=False)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return True


def draw_all(df: "pd.DataFrame", members: dict[str, list[Trial]], out: Path) -> dict[str, str]:
    """Draw every PNG into ``out``; returns {key: file name} (``cell:<group>``, ...)."""
    files: dict[str, str] = {}
    for old in [*out.glob("cell_*.png"), *out.glob("alpha_*.png")]:
        old.unlink()  # from an earlier reduce with other groups
    full, df = df, df.head(shown(df))  # a large study: its first groups (the CSV has all)
    df.attrs = full.attrs
    acc_vs_gap(df, members, out / "acc_vs_gap.png", df.attrs.get("gap_threshold", 0.05))
    files["acc_vs_gap"] = "acc_vs_gap.png"
    reliability(df, out / "reliability.png")
    files["reliability"] = "reliability.png"
    files.update(draw_truth(full, members, out))
    if proxy_vs_truth(full, members, out / "proxy_vs_truth.png"):  # every evaluated trial
        files["proxy_vs_truth"] = "proxy_vs_truth.png"
    for i, r in df.iterrows():
        if not isinstance(r["modal_trial"], str):
            continue
        t = next(t for t in members[r["group"]] if t.trial_id == r["modal_trial"])
        g = trial_genotype(t)
        title = f"{i + 1}. {r['group']}: modal genotype ({r['modal_count']}/{r['n']} seeds), " \
                f"seed {r['modal_seed']}"
        if g is not None:
            name = f"cell_{i + 1:02d}.png"
            cell_diagram(g, title, out / name)
            files[f"cell:{r['group']}"] = name
        if t.final and t.final.get("metrics", {}).get("epoch") == t.last.get("epoch"):
            name = f"alpha_{i + 1:02d}.png"
            if alpha_heatmap(t.final, g, title, out / name):
                files[f"alpha:{r['group']}"] = name
    return files
