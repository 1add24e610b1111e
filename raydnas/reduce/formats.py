"""How the report writes numbers (``n/a`` for undefined, never ``nan``) and its machine files
(``report.csv``, ``report.json``)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


LIST_COLUMNS = ("seeds", "dead_seeds", "param_free_seeds", "data_choices")


def fmt_num(v: Any, digits: int = 3) -> str:
    """``v`` with ``digits`` decimals; ``n/a`` for None or NaN."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, float) and abs(v) >= 1000:
        return f"{v:,.0f}"
    if isinstance(v, float) and v == int(v) and abs(v) >= 10:
        return f"{int(v):,}"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def mean_std(row: Any, m: str, digits: int = 3) -> str:
    """``mean ± std`` of metric ``m`` in a report row (``n/a`` when missing)."""
    mean, std = row[f"{m}_mean"], row[f"{m}_std"]
    if isinstance(mean, float) and math.isnan(mean):
        return "n/a"
    return f"{fmt_num(float(mean), digits)} ± {fmt_num(float(std), digits)}"


def fmt_share(v: float, n: int) -> str:
    """A share of ``n`` seeds as a fraction; ``n/a`` when undefined."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.2f} ({round(v * n)}/{n})"


def plain(v: Any) -> Any:
    """JSON-safe: NaN -> None, numpy scalars -> Python."""
    if hasattr(v, "item") and not isinstance(v, (list, dict, str)):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, list):
        return [plain(x) for x in v]
    return v


def records(df: "pd.DataFrame") -> list[dict[str, Any]]:
    """The report's rows as JSON-ready dicts (NaN → None)."""
    return [{k: plain(v) for k, v in r.items()} for r in df.to_dict(orient="records")]


def write_csv(df: "pd.DataFrame", path: Path) -> None:
    """``report.csv``: one row per group, list columns joined."""
    flat = df.copy()
    for c in LIST_COLUMNS:
        if c in flat.columns:
            flat[c] = [json.dumps(plain(v)) for v in flat[c]]
    flat.to_csv(path, index=False)


def write_json(df: "pd.DataFrame", path: Path) -> None:
    """``report.json``: the experiment, the sort, counts and every group's row."""
    doc = {
        "experiment": df.attrs.get("experiment"),
        "sort": df.attrs.get("sort"),
        "collapse_threshold": df.attrs.get("collapse_threshold"),
        "gap_threshold": df.attrs.get("gap_threshold"),
        "counts": df.attrs.get("counts"),
        "truth": {k: v for k, v in (df.attrs.get("truth") or {}).items() if k != "per_trial"},
        "proxy_validity": {k: {kk: plain(vv) for kk, vv in v.items()}
                           for k, v in (df.attrs.get("proxy_validity") or {}).items()},
        "groups": records(df),
        "excluded": [{k: v for k, v in e.items() if k != "describe"}
                     for e in df.attrs.get("excluded", [])],
    }
    path.write_text(json.dumps(doc, indent=1, default=str) + "\n")


def fmt_pct(v: Any) -> str:
    """A percentile without decimals; ``n/a`` when undefined."""
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.0f}"
