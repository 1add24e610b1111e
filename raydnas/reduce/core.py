"""``reduce``: from an experiment directory to one row per group and the report files."""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from ..axes import AXIS_NAMES
from ..errors import ConfigError, require_int
from ..results.load import USED, Experiment, Trial, load_experiment, not_an_experiment
from ..results.remote import is_uri
from . import pareto
from .join import join_truth
from .limits import DEFAULT_TOP
from .report import write_reports
from .stats import DEFAULT_COLLAPSE_THRESHOLD, DEFAULT_GAP_THRESHOLD, METRICS, group_row
from .suite_reduce import is_suite, reduce_suite

# Lazy imports: pyarrow.fs loads only for a storage URI (s3://...).

# Sort keys where larger is better (sorted descending unless the key starts with "+").
HIGHER_IS_BETTER = {"val_acc_mean", "discrete_val_acc_mean", "consensus", "modal_count",
                    "gap_reliability", "n", "val_acc_min", "discrete_val_acc_min",
                    "val_acc_max", "discrete_val_acc_max", "discrete_val_acc_tuned_mean",
                    "discrete_val_acc_tuned_min", "discrete_val_acc_tuned_max",
                    "test_acc_mean", "test_acc_min", "test_acc_max", "n_evaluated",
                    "eval_val_acc_mean", "random_percentile_mean"}
#: with finished evaluations the report is sorted by the truth, else by the search's proxy
DEFAULT_SORT = "auto"
TRUTH_SORT, PROXY_SORT = "test_acc", "discrete_val_acc"
#: sort keys that need finished evaluations
TRUTH_KEYS = ("test_acc", "eval_val_acc", "random_percentile", "test_rank")
STATUSES = ("complete", "stopped", "failed", "running", "missing")


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def group_label(method: str, point: Any, hps: dict[str, Any]) -> str:
    """A group's label: the method, its Optuna point and hyperparameters."""
    parts = [method]
    if point is not None:
        parts.append(f"point {point}")
    parts += [f"{k}={_fmt_value(v)}" for k, v in hps.items()]
    return " ".join(parts)


def sort_columns(df: "pd.DataFrame") -> list[str]:
    """The columns the report can be sorted by (numeric ones and every metric)."""
    cols = [c for c in df.columns if df[c].dtype.kind in "fiub" and c != "modal_seed"]
    return sorted(set(cols) | set(METRICS))


def resolve_sort(key: str, df: "pd.DataFrame") -> tuple[str, bool]:
    """``KEY``, ``+KEY`` (ascending) or ``-KEY`` (descending); a bare metric means its mean;
    ``auto``: ``test_acc`` when evaluations finished, else ``discrete_val_acc``."""
    evaluated = "n_evaluated" in df.columns and bool((df["n_evaluated"] > 0).any())
    if key == "auto":
        key = TRUTH_SORT if evaluated else PROXY_SORT
    direction = None
    if key[:1] in "+-":
        direction, key = key[0], key[1:]
    if not evaluated and any(key.startswith(k) for k in TRUTH_KEYS):
        raise ConfigError("raydnas reduce", "--sort", key,
                          "a search metric or column: no evaluation of this experiment has "
                          "finished, so there is no truth to sort by (run raydnas evaluate "
                          "EXPERIMENT first)")
    col = f"{key}_mean" if key in METRICS or key in ("test_acc", "eval_val_acc",
                                                     "random_percentile") else key
    allowed = sort_columns(df)
    if col not in allowed or col not in df.columns or df[col].dtype.kind not in "fiub":
        raise ConfigError("raydnas reduce", "--sort", key,
                          "one of " + ", ".join(a for a in allowed if not a.endswith(
                              ("_mean", "_std", "_min", "_max"))) + " (a metric means its mean; "
                          "also METRIC_std/_min/_max; prefix + or - for ascending/descending, "
                          "e.g. --sort=-consensus)")
    ascending = (direction == "+") if direction else col not in HIGHER_IS_BETTER
    return col, ascending


def _check_threshold(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or math.isnan(value):
        raise ConfigError("raydnas reduce", f"--{name.replace('_', '-')}", value, "a number")
    if name == "collapse_threshold" and not 0.0 <= value <= 1.0:
        raise ConfigError("raydnas reduce", "--collapse-threshold", value,
                          "a fraction in [0, 1]")


def build_table(exp: Experiment, *, collapse_threshold: float,
                gap_threshold: float) -> tuple["pd.DataFrame", dict[str, list[Trial]]]:
    """One row per group (method + point + hyperparameters); also the trials of each group."""
    groups: dict[tuple, list[Trial]] = {}
    for t in exp.trials:
        groups.setdefault(t.group_key(), []).append(t)
    hp_names = sorted({k for t in exp.trials for k in t.hyperparameters})
    rows, members = [], {}
    for key in sorted(groups, key=lambda k: (k[0], k[1], k[2])):
        ts = groups[key]
        t0 = ts[0]
        label = group_label(t0.method, t0.point, t0.hyperparameters)
        used = sorted((t for t in ts if t.status in USED), key=lambda t: str(t.seed))
        row: dict[str, Any] = {"group": label, "method": t0.method}
        for a in AXIS_NAMES:
            row[a] = t0.config.get(a, t0.method.split("/")[AXIS_NAMES.index(a)]
                                   if t0.method.count("/") == 3 else None)
        row["point"] = t0.point
        for h in hp_names:
            row[h] = t0.hyperparameters.get(h)
        row["n_trials"] = len(ts)
        for s in ("failed", "running", "missing"):
            row[f"n_{s}"] = sum(t.status == s for t in ts)
        if used:
            row.update(group_row(used, collapse_threshold=collapse_threshold,
                                 gap_threshold=gap_threshold))
        else:
            row.update({"n": 0, "seeds": [], "n_stopped": 0, "stopped_reasons": "",
                        "consensus": math.nan,
                        "distinct_genotypes": 0, "modal_count": 0, "modal_genotype": None,
                        "modal_genotype_nb201": None, "modal_trial": None, "modal_seed": None,
                        "collapse_rate": math.nan, "collapse_rate_skip_none": math.nan,
                        "param_free_rate": math.nan, "param_free_seeds": [],
                        "dead_rate": math.nan, "dead_seeds": [],
                        "stabilization_n": 0, "gap_reliability": math.nan,
                        "undecided_rate": math.nan})
            for m in METRICS:
                for k in ("mean", "std", "min", "max"):
                    row[f"{m}_{k}"] = math.nan
        rows.append(row)
        members[label] = ts
    df = pd.DataFrame(rows)
    if not df.empty:
        df.index = pd.RangeIndex(len(df))
    return df, members


def reduce(experiment: str | Path, out_dir: str | Path | None = None, *,
           sort: str = DEFAULT_SORT,
           collapse_threshold: float = DEFAULT_COLLAPSE_THRESHOLD,
           gap_threshold: float = DEFAULT_GAP_THRESHOLD,
           plots: bool = True, write: bool = True,
           protocol: str | None = None, top: int = DEFAULT_TOP) -> "pd.DataFrame":
    """Reduce a Ray Tune experiment to a cross-seed reliability report.

    Args:
        experiment: the experiment directory (``<storage_path>/<name>``) or a storage URI
            (``s3://...``, ``gs://...``, ``file://...``; read through ``pyarrow.fs``).
        out_dir: where ``report.md``, ``report.csv``, ``report.json`` and the PNGs go; default
            ``<experiment>/report/`` (for a URI: written locally, then uploaded there).
        sort: the column the table is sorted by: a metric name (its mean), any numeric column
            (``consensus``, ``collapse_rate``, ``discretization_gap_std``, ...); ``+``/``-``
            prefix forces ascending/descending. Default: ``discrete_val_acc``, best first.
        collapse_threshold: a seed has collapsed when at least this fraction of its normal
            cell's live ops is parameter-free: skip_connect or a pool (default 0.5).
        gap_threshold: a seed's discretization is reliable when its gap is below this
            (default 0.05).
        plots: also draw the PNGs (matplotlib, Agg backend).
        write: write the files (``False``: only return the table).
        protocol: the evaluation protocol whose test accuracies join the table (default: the
            one with the most finished evaluations under ``<experiment>/evaluation/``).
        top: with more groups than this, the markdown's tables, genotype sections and plots
            hold the first ``top`` (the truth's ranking, else the sort) and say how many more
            are in ``report.csv``/``report.json``, which always hold every group (0: all).

    With finished evaluations the default sort (``auto``) is the truth, ``test_acc``; without
    them ``discrete_val_acc``, and the report says that it makes no claim on cell quality.

    Returns:
        One row per group (method + Optuna point + hyperparameters), sorted. ``df.attrs`` holds
        ``experiment``, ``counts`` (trials per status), ``excluded`` (every trial that is not in
        the statistics, with its status and reason), ``sort``, ``out_dir`` and ``files``.

    Raises:
        ConfigError: not an experiment directory, unknown sort key, bad threshold.
    """
    require_int("raydnas reduce", "--top", top, 0, "an integer >= 0 (0: every group)")
    _check_threshold("collapse_threshold", collapse_threshold)
    _check_threshold("gap_threshold", gap_threshold)
    cache = Path(tempfile.mkdtemp(prefix="raydnas-reduce-")) if is_uri(experiment) else None
    try:
        exp = load_experiment(experiment, cache=cache)
        remote = is_uri(experiment) and out_dir is None
        out = None if not write else (cache / "report") if remote else (
            Path(out_dir) if out_dir is not None else exp.path / "report")

        def one(e: Experiment) -> tuple["pd.DataFrame", dict[str, list[Trial]]]:
            return _table(e, str(experiment), sort=sort, protocol=protocol, top=top,
                          collapse_threshold=collapse_threshold, gap_threshold=gap_threshold)

        if is_suite(exp):
            df = reduce_suite(exp, one, out, plots=plots)
        else:
            df, members = one(exp)
            if out is not None:
                out.mkdir(parents=True, exist_ok=True)
                df.attrs["files"] = write_reports(df, members, out, plots=plots)
        if out is not None:
            if remote:
                _upload(out, str(experiment).rstrip("/") + "/report")
            df.attrs["out_dir"] = str(experiment).rstrip("/") + "/report" if remote else str(out)
        return df
    finally:
        if cache is not None:
            shutil.rmtree(cache, ignore_errors=True)


def _table(exp: Experiment, where: str, *, sort: str, protocol: str | None, top: int,
           collapse_threshold: float, gap_threshold: float
           ) -> tuple["pd.DataFrame", dict[str, list[Trial]]]:
    """One experiment's (or one benchmark's) sorted table, with the truth joined."""
    df, members = build_table(exp, collapse_threshold=collapse_threshold,
                              gap_threshold=gap_threshold)
    if df.empty:
        raise not_an_experiment(where)
    join_truth(df, members, exp, protocol)
    df.attrs["pareto"] = pareto.compute(df, exp.path)
    col, ascending = resolve_sort(sort, df)
    df = df.sort_values(col, ascending=ascending, na_position="last", kind="stable")
    df = df.reset_index(drop=True)
    excluded = [{"trial_id": t.trial_id, "status": t.status, "method": t.method,
                 "seed": t.seed, "epochs": len(t.epochs),
                 "dir": t.path.name if t.path is not None else None, "error": t.error,
                 "describe": t.describe()}
                for t in exp.trials if t.status not in USED]
    df.attrs.update({
        "experiment": exp.source,
        "name": exp.name,
        "counts": {s: sum(t.status == s for t in exp.trials) for s in STATUSES},
        "excluded": excluded,
        "sort": {"column": col, "ascending": ascending},
        "top": top,
        "collapse_threshold": collapse_threshold,
        "gap_threshold": gap_threshold,
        "files": [],
    })
    return df, members


def _upload(local: Path, uri: str) -> None:
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(uri)
    fs.create_dir(root, recursive=True)
    for f in sorted(local.rglob("*")):  # a suite's report has a folder per benchmark
        if f.is_file():
            rel = f.relative_to(local).as_posix()
            if "/" in rel:
                fs.create_dir(f"{root}/{rel.rsplit('/', 1)[0]}", recursive=True)
            with fs.open_output_stream(f"{root}/{rel}") as dst:
                dst.write(f.read_bytes())
