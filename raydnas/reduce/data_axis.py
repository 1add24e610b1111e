"""The report's data-axis section (``data_search``): per group, the input configuration its
seeds chose, how many agree, and the accuracy and cost of what was found."""

from __future__ import annotations

import pandas as pd

from .formats import fmt_num


def section_lines(df: pd.DataFrame) -> list[str]:
    """``## Data axis`` (nothing when no group searched its input): every group, those with a
    fixed input beside those that searched it."""
    if "data_choice" not in df.columns or not df["data_choice"].notna().any():
        return []
    acc = "test_acc_mean" if "test_acc_mean" in df.columns and df["test_acc_mean"].notna().any() \
        else "discrete_val_acc_mean"
    lines = ["## Data axis", "",
             "The input configuration each group's seeds chose (argmax a(γ) at their last "
             f"epoch; `data_search`), the share of seeds that agree, `{acc}`, and the costs "
             "on the chosen input alone, at its own side: the retrained network's parameters "
             "and multiply-adds on one image (`eval_params`, `eval_macs`), and the search's "
             "derived cells' multiply-adds and latency (`cell_flops`, `cell_latency_ms`: "
             "counted in the supernet, at its op widths, e.g. 1/K of the channels with "
             "PC-DARTS's partial channels).", "",
             "| group | chosen input | seeds agreeing | every seed | " + acc
             + " | eval_params | eval_macs | cell_flops | cell_latency_ms |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|"]
    for _, r in df.iterrows():
        if isinstance(r.get("data_choice"), str):
            chosen = (f"{r['data_choice']} | {r['data_choice_share']:.0%} | "
                      + ", ".join(str(c) for c in r["data_choices"] if c))
        else:  # a fixed-input group, for comparison
            chosen = "(as loaded) | — | —"
        lines.append(f"| {r['group']} | {chosen} | "
                     + f"{fmt_num(r.get(acc), 4)} | {fmt_num(r.get('eval_params_mean'), 0)} | "
                     f"{fmt_num(r.get('eval_macs_mean'), 0)} | "
                     f"{fmt_num(r.get('cell_flops_mean'), 0)} | "
                     f"{fmt_num(r.get('cell_latency_ms_mean'), 3)} |")
    return lines + [""]
