"""Write the report: ``report.md`` (people), ``report.csv`` and ``report.json`` (machines)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..results.load import Trial
from . import data_axis, equal_budget, pareto, variants
from .decision_report import decision_section
from .formats import (
    fmt_num,
    fmt_pct,
    fmt_share,
    mean_std,
    write_csv,
    write_json,
)
from .limits import shown

# Lazy imports: the figures (matplotlib) load only when plots are asked for.

if TYPE_CHECKING:
    import pandas as pd

def _stopped(r: Any) -> str:
    """``2/3 (dead 2)``: the group's stopped searches and why ('—' when none stopped)."""
    n = int(r.get("n_stopped") or 0)
    return "—" if not n else f"{n}/{r['n']} ({r.get('stopped_reasons') or 'scheduler'})"


TABLE = [  # (header, function of row)
    ("n", lambda r: f"{r['n']}/{r['n_trials']}"),
    ("stopped", _stopped),
    ("val_acc", lambda r: mean_std(r, "val_acc")),
    ("discrete_val_acc", lambda r: mean_std(r, "discrete_val_acc")),
    ("gap", lambda r: mean_std(r, "discretization_gap")),
    ("tuned", lambda r: mean_std(r, "discrete_val_acc_tuned")),
    ("dist. to discrete", lambda r: mean_std(r, "distance_to_discrete")),
    ("consensus", lambda r: fmt_num(r["consensus"], 2)),
    ("distinct", lambda r: str(r["distinct_genotypes"])),
    ("modal", lambda r: f"{r['modal_count']}/{r['n']}"),
    ("collapse", lambda r: fmt_share(r["collapse_rate"], r["n"])),
    ("param-free", lambda r: fmt_share(r["param_free_rate"], r["n"])),
    ("dead", lambda r: fmt_share(r["dead_rate"], r["n"])),
    ("undecided", lambda r: fmt_share(r["undecided_rate"], r["n"])),
    ("α margin", lambda r: mean_std(r, "alpha_margin_mean")),
    ("gap reliable", lambda r: fmt_share(r["gap_reliability"], r["n"])),
    ("arch params", lambda r: mean_std(r, "arch_params", 0)),
    ("param-free ops", lambda r: mean_std(r, "param_free_ops", 1)),
    ("stable from epoch", lambda r: mean_std(r, "stabilization_epoch", 1)
     + (f" (n={r['stabilization_n']})" if r.get("stabilization_n", r["n"]) != r["n"] else "")),
    ("α steps", lambda r: mean_std(r, "alpha_steps", 0)),
    ("search s", lambda r: mean_std(r, "search_seconds", 1)),
]


def validity_lines(df: "pd.DataFrame") -> list[str]:
    """Each proxy's validity on this study in one line, and a plain sentence when the proxy
    the table is sorted by fails (Spearman ≤ 0 or p > 0.1)."""
    pv = df.attrs.get("proxy_validity") or {}
    col = (df.attrs.get("sort") or {}).get("column", "")
    out = []
    parts = [f"`{k}` ρ = {fmt_num(v['spearman'], 2)} (n = {v['n']}, "
             f"p = {fmt_num(v['spearman_p'], 3)})"
             for k, v in pv.items() if v["n"]]
    if parts:
        out.append("Proxy validity on this study (Spearman rank correlation with the retrained "
                   "test accuracy over the evaluated search trials): " + "; ".join(parts) + ".")
    for k, v in pv.items():
        if col == f"{k}_mean" and k != "eval_val_acc":
            fails = not v["n"] or math.isnan(v["spearman"]) or v["spearman"] <= 0 \
                or v["spearman_p"] > 0.1
            if fails:
                out.append(f"**The table below is sorted by `{k}`, a proxy that fails on this "
                           f"study (ρ = {fmt_num(v['spearman'], 2)}, p = "
                           f"{fmt_num(v['spearman_p'], 3)}): its order says nothing about which "
                           "cells are good.** Sort by `test_acc` (the default) instead.")
    return out


def verdict_section(df: "pd.DataFrame") -> list[str]:
    """The report's first section: the truth (retrained test accuracy, percentile among random
    cells, calibration) or, without evaluations, that no claim on cell quality is made."""
    t = df.attrs.get("truth") or {}
    lines = ["## Verdict: the truth", ""]
    if not t.get("evaluations"):
        lines += ["**No claim on cell quality is made.** No found cell of this experiment has "
                  "been trained from scratch, and the search's own numbers are proxies: "
                  "`discrete_val_acc` (inherited weights) scores parameter-free cells (pools, "
                  "skips) highest because they need no trained weights, so it can rank a "
                  "collapsed method first. Run `raydnas evaluate "
                  f"{df.attrs.get('experiment')} --random 10 --calibrate` (or add an "
                  "`evaluate:` block and `sweep.baseline` to the study), then reduce again."
                  + (f" {t['partial']} evaluation(s) still running." if t.get("partial")
                     else ""), ""]
        lines += _baseline_lines(t)
        return lines
    label = f"`{t['protocol']}`" + (" — **SHORT budget: a first ranking, not the paper's "
                                    "protocol**" if t.get("short") else "")
    lines += [f"Protocol {label}; {t['evaluations']} finished evaluation(s) of found cells"
              + (f", {t['partial']} unfinished (partial: not in the numbers)"
                 if t.get("partial") else "") + ". Per group: the retrained cells' test "
              "accuracy, mean ± std over search seeds (evaluation seeds averaged first), its 95 % "
              "bootstrap interval, the rank (1 = best) with its 95 % bootstrap interval, the "
              "mean percentile of its cells among the random cells, and the retrained cells' "
              "accuracy on the protocol's fixed validation part (what selection may use).", ""]
    lines += validity_lines(df) + [""]
    lines += _baseline_lines(t)
    lines += ["| rank | group | evaluated | test_acc | 95 % CI | rank CI | percentile among "
              "random | eval_val_acc | collapsed | param-free | dead | stopped | eval params |",
              "|---:|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    order = sorted(range(len(df)), key=lambda i: (math.isnan(df.iloc[i]["test_rank"]),
                                                   df.iloc[i]["test_rank"]))
    k = shown(df)
    for i in order[:k]:
        r = df.iloc[i]
        ci = (f"[{fmt_num(r['test_acc_ci_low'])}, {fmt_num(r['test_acc_ci_high'])}]"
              if not math.isnan(r["test_acc_ci_low"]) else "n/a")
        rci = (f"[{int(r['test_rank_ci_low'])}, {int(r['test_rank_ci_high'])}]"
               if not math.isnan(r["test_rank_ci_low"]) else "n/a")
        rank = "n/a" if math.isnan(r["test_rank"]) else str(int(r["test_rank"]))
        lines.append(f"| {rank} | {r['group']} | {r['n_evaluated']}/{r['n']} | "
                     f"{mean_std(r, 'test_acc')} | {ci} | {rci} | "
                     f"{fmt_pct(r.get('random_percentile_mean'))} | "
                     f"{fmt_num(r.get('eval_val_acc_mean'))} | "
                     f"{fmt_share(r['collapse_rate'], r['n'])} | "
                     f"{fmt_share(r['param_free_rate'], r['n'])} | "
                     f"{fmt_share(r['dead_rate'], r['n'])} | {_stopped(r)} | "
                     f"{fmt_num(r['eval_params_mean'], 0)} |")
    lines.append("")
    lines += _more(df, "by the truth's rank") + equal_budget.section_lines(df)
    lines += variants.section_lines(df)
    return lines


def _more(df: "pd.DataFrame", order: str) -> list[str]:
    """The line that says how many groups a table leaves out, and where they are."""
    k = shown(df)
    if k >= len(df):
        return []
    return [f"*The first {k} of {len(df)} groups {order}; all {len(df)} are in `report.csv` and "
            f"`report.json` (`raydnas reduce --top 0` lists them all here).*", ""]


def _baseline_lines(t: dict[str, Any]) -> list[str]:
    """The calibration and random-baseline sentences and tables."""
    lines = []
    cal = t.get("calibration")
    if cal:
        lines += [cal["sentence"], "", "| reference cell | what | eval seeds | test_acc | "
                  "noise (se) | below conv by | told apart |", "|---|---|---:|---:|---:|---:|---|"]
        for name, c in cal["cells"].items():
            cmp = cal["comparisons"].get(name)
            lines.append(f"| {name} | {c.get('what') or ''} | {c['eval_seeds']} | "
                         f"{fmt_num(c['test_acc'], 4)} | {fmt_num(c['se'], 4)} | "
                         + (f"{fmt_num(cmp['diff'], 4)} "
                            f"(threshold {fmt_num(cmp['threshold'], 4)}) | "
                            f"{'yes' if cmp['told_apart'] else '**no**'} |" if cmp else "— | — |"))
        lines.append("")
    b = t.get("baseline")
    if b and b.get("n"):
        lines += [f"Random baseline: {b['n']} cells drawn uniformly from the space "
                  f"({b['n_dead']} dead), test_acc min {fmt_num(b['min'], 4)}, median "
                  f"{fmt_num(b['median'], 4)}, max {fmt_num(b['max'], 4)}. {b['sentence']}", ""]
    elif t.get("evaluations"):
        lines += ["No random baseline: percentiles are n/a (add `sweep.baseline: {random: N}` "
                  "or run `raydnas evaluate EXPERIMENT --random N`).", ""]
    return lines


def proxy_validity_section(df: "pd.DataFrame", plots: dict[str, Any]) -> list[str]:
    """Every proxy's rank correlation with the truth, as a table."""
    t = df.attrs.get("truth") or {}
    if not t.get("evaluations"):
        return []
    lines = ["## Proxy validity", "", "Rank correlation between each proxy (last search epoch; "
             "`eval_val_acc`: the retrained cell on the protocol's validation part) and the test "
             "accuracy, over every evaluated search trial. A proxy with ρ ≤ 0 or p > 0.1 does "
             "not order cells the way the truth does on this study.", "",
             "| proxy | n | Spearman | p | Kendall | p | verdict |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for proxy, v in (df.attrs.get("proxy_validity") or {}).items():
        ok = v["n"] and not math.isnan(v["spearman"]) and v["spearman"] > 0 \
            and v["spearman_p"] <= 0.1
        lines.append(f"| {proxy} | {v['n']} | {fmt_num(v['spearman'], 2)} | "
                     f"{fmt_num(v['spearman_p'], 3)} | {fmt_num(v['kendall'], 2)} | "
                     f"{fmt_num(v['kendall_p'], 3)} | {'holds' if ok else '**fails**'} |")
    lines.append("")
    if "proxy_vs_truth" in plots:
        lines += [f"![proxy_vs_truth]({plots['proxy_vs_truth']})", ""]
    return lines


def markdown(df: "pd.DataFrame", plots: dict[str, Any]) -> str:
    """``report.md``: the verdict from the truth first, then the proxies, notes and plots."""
    a = df.attrs
    counts = a.get("counts", {})
    sort = a.get("sort", {})
    lines = [f"# raydnas reduce: {a.get('name', '')}", "",
             f"Experiment: `{a.get('experiment')}`  ",
             "Trials: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v) + "  ",
             f"Sorted by `{sort.get('column')}` "
             f"({'ascending' if sort.get('ascending') else 'descending'}).", ""]
    lines += decision_section(df, plots)
    lines += verdict_section(df)
    lines += ["## Proxies: what the search itself measured (not the truth)", "",
              f"collapsed = at least {a.get('collapse_threshold'):g} of the normal cell's live "
              "ops are parameter-free (skip_connect, pools; `none` is a missing edge); "
              "param-free = a live normal cell with no path through an op with weights; "
              "dead = a cell whose output no non-none path reaches; "
              "stopped = searches ended before their last epoch, with why (a `stop:` rule: "
              "dead, collapsed, margin_stalled, hessian; or `scheduler`): their last epoch is "
              "in the means, so read the means beside this column; "
              "undecided = mean α margin (chosen op − runner-up) below 0.05; "
              f"gap reliable = discretization gap < {a.get('gap_threshold'):g}.",
              "", "Values are mean ± sample std over seeds at each trial's last epoch "
              "(std n/a with one seed). consensus = mean pairwise Jaccard index of the seeds' "
              "chosen (edge, op) sets, intermediate nodes relabelled to a canonical order (1.0 = "
              "every seed found the same cell). Accuracies: inherited weights, BatchNorm "
              "re-estimated on fixed search-train images; tuned = the derived network after a "
              "short fine-tuning; neither is the retrained accuracy, and inherited-weight "
              "accuracy favours parameter-free cells. stable from epoch: trials "
              "that ran every epoch only.", ""]
    if not (a.get("truth") or {}).get("evaluations"):
        lines += validity_lines(df)
    head = ["#", "group"] + [h for h, _ in TABLE]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join("---:" if i != 1 else "---" for i in range(len(head))) + "|")
    for i, r in df.head(shown(df)).iterrows():
        cells = [str(i + 1), r["group"]] + [f(r) for _, f in TABLE]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines.append("")
    lines += _more(df, f"by `{sort.get('column')}`")
    for name in ("acc_vs_gap", "reliability"):
        if name in plots:
            lines += [f"![{name}]({plots[name]})", ""]
    lines += proxy_validity_section(df, plots) + pareto.section_lines(df, plots)
    lines += data_axis.section_lines(df, plots)
    lines += ["## Modal genotype of each group", ""]
    for i, r in df.head(shown(df)).iterrows():
        lines.append(f"### {i + 1}. {r['group']}")
        if not isinstance(r["modal_genotype"], str):
            lines += ["", "No finished seed.", ""]
            continue
        lines += ["", f"Found by {r['modal_count']} of {r['n']} seeds "
                  f"({r['distinct_genotypes']} distinct); drawn from trial `{r['modal_trial']}` "
                  f"(seed {r['modal_seed']}).", "", "```", r["modal_genotype"]]
        if isinstance(r.get("modal_genotype_nb201"), str):
            lines.append(r["modal_genotype_nb201"])
        lines += ["```", ""]
        for kind in ("cell", "alpha"):
            f = plots.get(f"{kind}:{r['group']}")
            if f:
                lines += [f"![{kind} {i + 1}]({f})", ""]
    excluded = a.get("excluded", [])
    lines += ["## Trials not in the statistics", ""]
    if not excluded:
        lines += ["None: every trial finished.", ""]
    else:
        lines += ["| trial | status | method | seed | epochs | reason |",
                  "|---|---|---|---:|---:|---|"]
        for e in excluded:
            reason = (e.get("error") or {"running": "no final epoch yet (running or killed)",
                                         "missing": "no results"}.get(e["status"], ""))
            lines.append(f"| {e['trial_id']} | {e['status']} | {e['method']} | {e['seed']} | "
                         f"{e['epochs']} | {str(reason).replace('|', '/')} |")
        lines.append("")
    return "\n".join(lines)


def write_reports(df: "pd.DataFrame", members: dict[str, list[Trial]], out: Path, *,
                  plots: bool = True) -> list[str]:
    """Write every report file into ``out``; returns their names."""
    drawn: dict[str, Any] = {}
    for old in ("pareto.png", "data_cost.png"):  # from an earlier reduce that drew them
        (out / old).unlink(missing_ok=True)
    if plots and not df.empty:
        from .plots import draw_all

        drawn = draw_all(df, members, out)
        if pareto.figure(df, out / "pareto.png"):
            drawn["pareto"] = "pareto.png"
        if data_axis.figure(df, members, out / "data_cost.png"):
            drawn["data_cost"] = "data_cost.png"
    (out / "report.md").write_text(markdown(df, drawn))
    write_csv(df, out / "report.csv")
    write_json(df, out / "report.json")
    return ["report.md", "report.csv", "report.json"] + sorted(set(drawn.values()))
