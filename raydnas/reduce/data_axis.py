"""The report's data-axis section (``data_search``): per group, the input configuration its
seeds chose, how many agree, and the accuracy and cost of what was found; ``data_cost.png``:
every retrained cell's test accuracy against its multiply-adds, one colour per group."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from .formats import fmt_num

# Lazy imports: matplotlib (through .cell_plot) loads only when a figure is drawn.


def section_lines(df: pd.DataFrame, plots: dict[str, Any] | None = None) -> list[str]:
    """``## Data axis`` (nothing when no group searched its input): every group, those with a
    fixed input beside those that searched it."""
    if not searched(df):
        return []
    acc = "test_acc_mean" if "test_acc_mean" in df.columns and df["test_acc_mean"].notna().any() \
        else "discrete_val_acc_mean"
    lines = ["## Data axis", "",
             "The input configuration each group's seeds chose (argmax a(γ) at their last "
             f"epoch; `data_search`), the share of seeds that agree, `{acc}`, and the costs "
             "on the chosen input alone, at its own side: the retrained network's parameters "
             "and multiply-adds on one image (`eval_params`, `eval_macs`), and the search's "
             "derived cells' parameters, multiply-adds and latency (`arch_params`, "
             "`cell_flops`, `cell_latency_ms`: "
             "counted in the supernet, at its op widths, e.g. 1/K of the channels with "
             "PC-DARTS's partial channels).", "",
             "| group | chosen input | seeds agreeing | every seed | " + acc
             + " | eval_params | eval_macs | arch_params | cell_flops | cell_latency_ms |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for _, r in df.iterrows():
        if isinstance(r.get("data_choice"), str):
            chosen = (f"{r['data_choice']} | {r['data_choice_share']:.0%} | "
                      + ", ".join(str(c) for c in r["data_choices"] if c))
        else:  # a fixed-input group, for comparison
            chosen = "(as loaded) | — | —"
        lines.append(f"| {r['group']} | {chosen} | "
                     + f"{fmt_num(r.get(acc), 4)} | {fmt_num(r.get('eval_params_mean'), 0)} | "
                     f"{fmt_num(r.get('eval_macs_mean'), 0)} | "
                     f"{fmt_num(r.get('arch_params_mean'), 0)} | "
                     f"{fmt_num(r.get('cell_flops_mean'), 0)} | "
                     f"{fmt_num(r.get('cell_latency_ms_mean'), 3)} |")
    lines.append("")
    if plots and "data_cost" in plots:
        lines += [f"![accuracy against cost]({plots['data_cost']})", ""]
    return lines


def searched(df: pd.DataFrame) -> bool:
    """Did any group search its input?"""
    return "data_choice" in df.columns and bool(df["data_choice"].notna().any())


def figure(df: pd.DataFrame, members: dict[str, list], path: Path) -> bool:
    """``data_cost.png``: each evaluated search trial's retrained test accuracy against its
    retrained network's multiply-adds (log scale), one colour per group, the group mean with
    ±1 std bars on both. False when no group searched its input or nothing was evaluated."""
    truth = (df.attrs.get("truth") or {}).get("per_trial") or {}
    if not searched(df) or not truth:
        return False
    from .cell_plot import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.8), dpi=110)
    drawn = False
    for i, r in df.iterrows():
        pts = [(truth[t.trial_id].get("eval_macs"), truth[t.trial_id]["test_acc"])
               for t in members.get(r["group"], []) if t.trial_id in truth]
        pts = [(x, y) for x, y in pts if isinstance(x, (int, float)) and not math.isnan(x)]
        if not pts:
            continue
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        c = f"C{i % 10}"
        ax.scatter(xs, ys, color=c, s=30, alpha=0.6)
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        sx = (sum((x - mx) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5 if len(xs) > 1 else 0
        sy = (sum((y - my) ** 2 for y in ys) / (len(ys) - 1)) ** 0.5 if len(ys) > 1 else 0
        ax.errorbar([mx], [my], xerr=[sx], yerr=[sy], fmt="s", color=c, capsize=3,
                    label=str(r["group"])[:40])
        drawn = True
    if not drawn:
        plt.close(fig)
        return False
    ax.set_xscale("log")
    ax.set_xlabel("eval_macs: multiply-adds of the retrained network on one image (its input)")
    ax.set_ylabel("test accuracy (retrained)")
    ax.set_title("Accuracy against cost", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return True
