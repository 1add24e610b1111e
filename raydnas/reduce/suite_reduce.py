"""The report of a suite (``sweep.benchmarks``): every benchmark reduced on its own, then the
methods ranked across the benchmarks.

``report/<benchmark>/`` holds each benchmark's full report (its truth table, random baseline,
calibration, race and decision, as for a one-benchmark study). ``report/report.md`` opens with
the ranking across benchmarks (:func:`raydnas.reduce.ranking.rank_suite`: mean rank with a
bootstrap interval, Friedman, Nemenyi's critical difference, the CD diagram ``cd.png``, Kendall
τ between the benchmarks), then whether each method beats random search at equal budget on each
benchmark, and each benchmark's decision. ``report.csv``/``report.json`` hold every benchmark's
rows with a ``benchmark`` column. A method a benchmark could not run (``sweep.skip_invalid``)
or whose searches all failed there has no value there and shares the worst ranks.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from ..errors import ConfigError
from ..results.load import Experiment, Trial, not_an_experiment
from .formats import records, write_csv
from .ranking import cd_figure, rank_markdown, rank_suite
from .report import write_reports

#: the score the suite ranks by: the retrained test accuracy, else (nothing retrained) the proxy
TRUTH, PROXY = "test_acc_mean", "discrete_val_acc_mean"
#: the RSPS preset, compared with every method on its benchmark
RSPS = "random_ws"


def is_suite(exp: Experiment) -> bool:
    """Whether the experiment's trials come from several benchmarks."""
    return any(t.config.get("benchmark") for t in exp.trials + exp.evaluations)


def _study_file(exp: Experiment) -> dict[str, Any]:
    f = Path(exp.path) / "raydnas_study.json"
    try:
        doc = json.loads(f.read_text()) if f.is_file() else {}
    except (OSError, ValueError):
        doc = {}
    return doc if isinstance(doc, dict) else {}


def skipped_pairs(exp: Experiment) -> dict[str, dict[str, str]]:
    """benchmark -> method -> why ``sweep.skip_invalid`` left that pair out."""
    return {b: v for b, v in (_study_file(exp).get("skipped") or {}).items() if v}


def benchmark_names(exp: Experiment) -> list[str]:
    """The suite's benchmarks in the order of its config (``raydnas_study.json``), then any
    other found in trials."""
    names = list(_study_file(exp).get("benchmarks") or {})
    found = {t.config.get("benchmark") for t in exp.trials + exp.evaluations} - {None}
    return [n for n in names if n in found] + sorted(found - set(names))


def split(exp: Experiment) -> dict[str, Experiment]:
    """One experiment per benchmark: its search and evaluation trials."""
    def of(ts: list[Trial], b: str) -> list[Trial]:
        return [t for t in ts if t.config.get("benchmark") == b]
    return {b: replace(exp, name=f"{exp.name}/{b}", trials=of(exp.trials, b),
                       evaluations=of(exp.evaluations, b)) for b in benchmark_names(exp)}


def reduce_suite(exp: Experiment,
                 one: Callable[[Experiment], tuple[pd.DataFrame, dict[str, list[Trial]]]],
                 out: Path | None, *, plots: bool = True) -> pd.DataFrame:
    """Reduce each benchmark with ``one`` (writing its report in ``out/<benchmark>/``), rank
    across them, write the suite's report in ``out``; returns every row with ``benchmark``."""
    tables: dict[str, pd.DataFrame] = {}
    for b, sub in split(exp).items():
        if not sub.trials:
            continue
        try:
            df, members = one(sub)
        except ConfigError as e:  # e.g. --protocol: say which benchmark lacks it
            raise ConfigError(e.file, e.key, e.value, f"{e.allowed} (benchmark {b})") from None
        if out is not None:
            (out / b).mkdir(parents=True, exist_ok=True)
            df.attrs["files"] = write_reports(df, members, out / b, plots=plots)
        tables[b] = df
    if not tables:
        raise not_an_experiment(exp.source)
    metric = TRUTH if any(TRUTH in d.columns and d[TRUTH].notna().any()
                          for d in tables.values()) else PROXY
    scores = {b: {m: _finite(v) for m, v in zip(d["method"], d[metric])}
              for b, d in tables.items()}
    rank = None
    if len(scores) >= 2 and len({m for s in scores.values() for m in s}) >= 2:
        rank = rank_suite(scores)
        rank["metric"], rank["scores"] = metric, scores
    parts = []
    for b, d in tables.items():
        x = d.assign(benchmark=b)
        x.attrs = {}  # pandas compares attrs when concatenating: keep them apart
        parts.append(x)
    df = pd.concat(parts, ignore_index=True)
    df = df[["benchmark"] + [c for c in df.columns if c != "benchmark"]]
    df.attrs.update({"experiment": exp.source, "name": exp.name, "suite": rank,
                     "benchmarks": {b: {"decision": d.attrs.get("decision"),
                                        "counts": d.attrs.get("counts")}
                                    for b, d in tables.items()},
                     "counts": {k: sum((d.attrs.get("counts") or {}).get(k, 0)
                                       for d in tables.values())
                                for k in next(iter(tables.values())).attrs.get("counts", {})},
                     "excluded": [dict(e, describe=f"[{b}] {e['describe']}")
                                  for b, d in tables.items() for e in d.attrs["excluded"]],
                     "files": []})
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        files = ["report.md", "report.csv", "report.json"]
        if rank is not None and plots:
            cd_figure(rank, out / "cd.png")
            files.append("cd.png")
        (out / "report.md").write_text(
            "\n".join(markdown(df, tables, rank, plots, skipped_pairs(exp))) + "\n")
        write_csv(df, out / "report.csv")
        doc = {"experiment": exp.source, "counts": df.attrs["counts"], "suite": rank,
               "skipped": skipped_pairs(exp), "groups": records(df)}
        (out / "report.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
        df.attrs["files"] = files + [f"{b}/{f}" for b, d in tables.items()
                                     for f in d.attrs["files"]]
    return df


def _finite(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def equal_budget_lines(tables: dict[str, pd.DataFrame]) -> list[str]:
    """Per method and benchmark: the verdict against random search at equal budget (the best of
    as many random cells, by validation accuracy, as the method's search cost) and the difference
    in mean test accuracy to random search with weight sharing (``random_ws``)."""
    methods = list(dict.fromkeys(m for d in tables.values() for m in d["method"]))
    lines = ["## Against random search at equal budget", "",
             "Each cell: the verdict against random search (the best of n random cells by "
             "`eval_val_acc`, n from the method's search and retraining time; see each "
             "benchmark's report), then the mean test accuracy minus that of random search with "
             f"weight sharing (`{RSPS}`, RSPS).", "",
             "| method | " + " | ".join(tables) + " |", "|---|" + "---|" * len(tables)]
    for m in methods:
        cells = []
        for d in tables.values():
            row = d[d["method"] == m]
            if row.empty:
                cells.append("not run")
                continue
            r = row.iloc[0]
            word = r.get("vs_random_search")
            word = word if isinstance(word, str) else "—"
            rs = d[d["method"] == RSPS]
            delta = (r.get(TRUTH, math.nan) - rs.iloc[0].get(TRUTH, math.nan)
                     if not rs.empty and m != RSPS else math.nan)
            cells.append(word + ("" if math.isnan(delta) else f"; {delta:+.3f} vs {RSPS}"))
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def markdown(df: pd.DataFrame, tables: dict[str, pd.DataFrame], rank: dict | None,
             plots: bool, skipped: dict[str, dict[str, str]]) -> list[str]:
    """The suite's report.md."""
    lines = [f"# raydnas suite: {df.attrs['name']}", "",
             f"{len(tables)} benchmarks: " + ", ".join(f"[{b}]({b}/report.md)" for b in tables)
             + ". Each benchmark's own report (truth table, random baseline, calibration, "
             "decision) is in its folder.", ""]
    if rank is None:
        lines += ["No ranking across benchmarks: it needs at least 2 benchmarks and 2 methods "
                  "with results.", ""]
    else:
        body = rank_markdown(rank)
        if not plots:
            body = [ln for ln in body if ln != "![cd](cd.png)"]
        lines += ["## Ranking across benchmarks", ""] + body[2:] + [""]
        if rank["metric"] == PROXY:
            lines += ["No retrained cell finished: ranked by the search's own "
                      "`discrete_val_acc`, which makes no claim on cell quality.", ""]
    lines += equal_budget_lines(tables) + ["", "## Each benchmark's decision", ""]
    for b, d in tables.items():
        dec = d.attrs.get("decision") or {}
        var = (d.attrs.get("truth") or {}).get("variants")
        lines.append(f"- **{b}**: " + (dec.get("sentence") or "no retrained cells, no decision")
                     + ("" if not var else " Retraining variants: " + (
                         f"the rank of {', '.join(var['sensitive'])} depends on them."
                         if var["sensitive"] else "no rank depends on them.")))
    if skipped:
        lines += ["", "Not run (`sweep.skip_invalid`; ranked last there): "
                  + "; ".join(f"{m} on {b} ({why})" for b, v in skipped.items()
                              for m, why in v.items()) + "."]
    c = df.attrs["counts"]
    lines += ["", f"Search trials: {sum(c.values())} ("
              + ", ".join(f"{v} {k}" for k, v in c.items() if v) + ")."]
    return lines
