"""The Pareto front of a multi-objective study (``optuna.metric`` a list, e.g. accuracy and
latency or parameters): which groups (method + Optuna point) no other group beats on every
objective at once, by the means over seeds of the report's columns.

A group dominates another when it is at least as good on every objective and strictly better
on one (``max`` objectives higher, ``min`` lower); groups with a missing value are left out.
The objectives are read from the study file (``raydnas_study.json``, written by ``raydnas
sweep``). The report lists the front and draws the first two objectives (``pareto.png``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from .formats import fmt_num

# Lazy imports: matplotlib for the figure only.


def objectives(exp_path: Path) -> list[tuple[str, str]]:
    """(metric, mode) of the study's Optuna objectives when there are two or more, else []."""
    f = Path(exp_path) / "raydnas_study.json"
    try:
        o = (json.loads(f.read_text()) if f.is_file() else {}).get("optuna") or {}
    except (OSError, ValueError):
        return []
    metrics, modes = o.get("metric"), o.get("mode")
    if not isinstance(metrics, list) or len(metrics) < 2 or not isinstance(modes, list):
        return []
    return list(zip(metrics, modes))


def dominates(a: tuple[float, ...], b: tuple[float, ...], modes: list[str]) -> bool:
    """Whether ``a`` is at least as good as ``b`` everywhere and better somewhere."""
    better = [(x - y) if m == "max" else (y - x) for x, y, m in zip(a, b, modes)]
    return all(d >= 0 for d in better) and any(d > 0 for d in better)


def front(points: list[tuple[float, ...] | None], modes: list[str]) -> list[bool]:
    """Per point: on the front (no other point dominates it); None or NaN points are not."""
    ok = [p is not None and all(isinstance(v, (int, float)) and math.isfinite(v) for v in p)
          for p in points]
    return [ok[i] and not any(ok[j] and dominates(points[j], points[i], modes)
                              for j in range(len(points)) if j != i)
            for i in range(len(points))]


def column(metric: str) -> str:
    """The report column of an objective: its mean over seeds."""
    return f"{metric}_mean"


def compute(df: pd.DataFrame, exp_path: Path) -> dict[str, Any] | None:
    """The front of ``df``'s groups on the study's objectives (None: not multi-objective);
    adds the ``pareto`` column."""
    objs = objectives(exp_path)
    if not objs:
        return None
    cols = [column(m) for m, _ in objs]
    missing = [c for c in cols if c not in df.columns]
    if missing:
        return {"objectives": objs, "missing": missing, "front": []}
    pts = [tuple(float(r[c]) for c in cols) for _, r in df.iterrows()]
    on = front(pts, [m for _, m in objs])
    df["pareto"] = on
    return {"objectives": objs, "missing": [], "front": [g for g, o in zip(df["group"], on) if o]}


def section_lines(df: pd.DataFrame, plots: dict[str, Any]) -> list[str]:
    """``## Pareto front``: the groups no other group beats on every objective."""
    p = df.attrs.get("pareto")
    if not p:
        return []
    names = ", ".join(f"`{m}` ({mode})" for m, mode in p["objectives"])
    lines = ["## Pareto front", "", f"Objectives (the study's `optuna.metric`): {names}; "
             "by each group's mean over seeds. A group is on the front when no other group is "
             "at least as good on every objective and better on one.", ""]
    if p["missing"]:
        return lines + [f"Not drawn: the report has no {', '.join(p['missing'])} column.", ""]
    cols = [column(m) for m, _ in p["objectives"]]
    lines += ["| group | " + " | ".join(m for m, _ in p["objectives"]) + " | on the front |",
              "|---|" + "---:|" * len(cols) + "---|"]
    for _, r in df.iterrows():
        lines.append(f"| {r['group']} | " + " | ".join(fmt_num(r[c], 4) for c in cols)
                     + f" | {'**yes**' if r.get('pareto') else ''} |")
    lines.append("")
    if "pareto" in plots:
        lines += [f"![pareto]({plots['pareto']})", ""]
    return lines


def figure(df: pd.DataFrame, path: Path) -> bool:
    """``pareto.png``: every group on the first two objectives, the front joined."""
    p = df.attrs.get("pareto")
    if not p or p["missing"]:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (mx, _), (my, _) = p["objectives"][:2]
    x, y = df[column(mx)].astype(float), df[column(my)].astype(float)
    on = df.get("pareto", pd.Series([False] * len(df))).astype(bool)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.scatter(x[~on], y[~on], color="0.6", label="dominated")
    fr = sorted(zip(x[on], y[on]))
    ax.plot([a for a, _ in fr], [b for _, b in fr], "o-", color="C3", label="Pareto front")
    for g, a, b, o in zip(df["group"], x, y, on):
        if o:
            ax.annotate(str(g)[:24], (a, b), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    ax.set_xlabel(mx)
    ax.set_ylabel(my)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
