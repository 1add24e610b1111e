"""The truth beside the proxies: test accuracies of retrained cells (``raydnas evaluate``) joined
to the search trials, a ranking of the groups with bootstrap intervals, and proxy validity.

Definitions (columns of the report):

* ``test_acc_mean/_std/_min/_max``: over the group's search seeds that have at least one
  finished evaluation, of each seed's test accuracy (its evaluation seeds averaged first), at
  the last epoch of the protocol. ``n_evaluated``: how many search seeds that is;
  ``n_eval_partial``: evaluations started but not finished (not in the numbers).
* ``eval_params_mean``: weights of the evaluated network (without DARTS's auxiliary head);
  ``eval_macs_mean``: its multiply-adds on one training image, on the input it was trained on
  (the data axis' choice, if any).
* ``test_acc_ci_low/_high``: a 95 % percentile bootstrap interval of the group's mean test
  accuracy (search seeds resampled with replacement, 2,000 replicates, seeded);
  ``test_rank`` (1 = best mean; tied means share the better rank) and
  ``test_rank_ci_low/_high``: the 2.5 / 97.5 percentiles of the group's rank over the same
  replicates (every group resampled in each). Overlapping rank intervals mean the data do not
  order those groups.
* proxy validity (``df.attrs["proxy_validity"]``): across every evaluated search trial, the
  Spearman and Kendall rank correlations (with n and p-values) between each proxy
  (``discrete_val_acc``, ``val_acc``, ``discrete_val_acc_tuned``) at the trial's last epoch and
  its test accuracy. Does the cheap number order cells the way the truth does?

* ``random_percentile`` (per evaluated search trial) and ``random_percentile_mean`` (per group,
  over its evaluated seeds): the cell's percentile among the study's random cells
  (``sweep.baseline``), evaluated under the same protocol (``raydnas.reduce.baseline``).
* ``eval_val_acc_mean``: the retrained cell's accuracy on the protocol's fixed validation part
  (the validation truth a study may select on).

Evaluations of random cells (``role: random``) and of reference cells (``role: reference``)
belong to no search trial: they form the baseline and the calibration
(``df.attrs["truth"]["baseline"]`` / ``["calibration"]``).

Test accuracy is only ever reported here; no part of raydnas selects or tunes on it.
"""

from __future__ import annotations

import json
import math
import random
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from ..evaluation.protocol import VARIANT_SEP
from ..results.load import Trial
from .baseline import cell_value
from .stats import summary

# Lazy imports: scipy loads only when rank correlations are computed.

PROXIES = ("discrete_val_acc", "val_acc", "discrete_val_acc_tuned", "eval_val_acc")
BOOTSTRAP = 2000


def _read_eval(d: Path, epochs: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
    """An evaluation's record from its directory (``epochs``: its metrics, when already read)."""
    final = d / "final.json"
    if final.is_file():
        try:
            f = json.loads(final.read_text())
        except json.JSONDecodeError:
            return None
        m = f.get("metrics") or {}
        return {"trial_id": f.get("search_trial_id"),
                "protocol": (f.get("protocol") or {}).get("name"),
                "short": bool((f.get("protocol") or {}).get("short")),
                "eval_seed": f.get("eval_seed"), "test_acc": m.get("test_acc"),
                "eval_val_acc": m.get("eval_val_acc"), "test_n": m.get("test_n"),
                "eval_params": m.get("eval_params"), "eval_macs": m.get("eval_macs"),
                "epoch": m.get("epoch"),
                "complete": bool(f.get("complete")), "dir": str(d), "role": f.get("role"),
                "reference": f.get("reference"), "what": f.get("reference_what"),
                "genotype": f.get("genotype"), "dead": f.get("cell_dead"),
                "seconds": _seconds(epochs if epochs is not None
                                    else _rows(d / "metrics.jsonl"))}
    return None


def _rows(metrics: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file (none if it is missing or unreadable)."""
    try:
        lines = metrics.read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            out.append(row)
    return out


def _seconds(epochs: list[dict[str, Any]]) -> float:
    """The sum of ``epoch_seconds`` over an evaluation's epochs (NaN without a record)."""
    secs = [float(s) for e in epochs if isinstance(s := e.get("epoch_seconds"), (int, float))]
    return sum(secs) if secs else math.nan


def load_evaluations(exp_path: Path, trials: list[Trial] = ()) -> list[dict[str, Any]]:
    """Every evaluation below ``<experiment>/evaluation/<protocol>/`` (``raydnas evaluate``),
    and those of the experiment's own evaluation trials (a study's ``evaluate:`` stage)."""
    out = []
    root = Path(exp_path) / "evaluation"
    if root.is_dir():
        for proto in sorted(p for p in root.iterdir() if p.is_dir()):
            for d in sorted(p for p in proto.iterdir() if p.is_dir()):
                r = _read_eval(d)
                if r is not None:
                    out.append(r)
    for t in trials:
        r = _read_eval(t.path, t.epochs) if t.path is not None else None  # metrics read once
        if r is not None:
            out.append(r)
        elif t.epochs:  # started, no final.json yet
            c = t.config
            out.append({"trial_id": c.get("search_trial_id"), "protocol": c.get("protocol"),
                        "short": False, "eval_seed": c.get("eval_seed"), "test_acc": None,
                        "eval_val_acc": None, "test_n": None,
                        "eval_params": None, "eval_macs": None, "epoch": t.last.get("epoch"),
                        "complete": False,
                        "dir": str(t.path), "role": c.get("role"),
                        "reference": c.get("reference"), "what": None,
                        "genotype": c.get("genotype"), "dead": None, "seconds": math.nan})
    return out


def choose_protocol(evals: list[dict[str, Any]], protocol: str | None) -> str | None:
    """The named protocol, else the one with the most finished evaluations. A retraining
    variant (``<protocol>@<variant>``) counts for its protocol: it is never the truth."""
    if protocol is not None:
        return protocol
    done = Counter(str(e["protocol"]).split(VARIANT_SEP)[0] for e in evals if e["complete"])
    own = Counter(e["protocol"] for e in evals if e["complete"])
    return max(done, key=lambda p: (own[p], done[p])) if done else None


def per_trial(evals: list[dict[str, Any]], protocol: str | None
              ) -> tuple[dict[str, dict[str, Any]], Counter]:
    """Per search trial id: mean test accuracy over its finished evaluation seeds; and the
    number of unfinished evaluations per trial."""
    acc: dict[str, list[float]] = {}
    params: dict[str, list[float]] = {}
    macs: dict[str, list[float]] = {}
    vals: dict[str, list[float]] = {}
    secs: dict[str, list[float]] = {}
    partial: Counter = Counter()
    for e in evals:
        if e["protocol"] != protocol or e["trial_id"] is None or e.get("role"):
            continue
        if not e["complete"] or not isinstance(e["test_acc"], (int, float)):
            partial[e["trial_id"]] += 1
            continue
        acc.setdefault(e["trial_id"], []).append(float(e["test_acc"]))
        if isinstance(e["eval_params"], (int, float)):
            params.setdefault(e["trial_id"], []).append(float(e["eval_params"]))
        if isinstance(e.get("eval_macs"), (int, float)):
            macs.setdefault(e["trial_id"], []).append(float(e["eval_macs"]))
        if isinstance(e.get("eval_val_acc"), (int, float)):
            vals.setdefault(e["trial_id"], []).append(float(e["eval_val_acc"]))
        secs.setdefault(e["trial_id"], []).append(e.get("seconds", math.nan))
    out = {t: {"test_acc": sum(v) / len(v), "eval_seeds": len(v),
               "eval_seconds": statistics.fmean(secs[t]),
               "eval_params": (sum(params[t]) / len(params[t])) if params.get(t) else math.nan,
               "eval_macs": statistics.fmean(macs[t]) if macs.get(t) else math.nan,
               "eval_val_acc": (sum(vals[t]) / len(vals[t])) if vals.get(t) else math.nan}
           for t, v in acc.items()}
    return out, partial


def role_cells(evals: list[dict[str, Any]], protocol: str | None, role: str
               ) -> dict[str, dict[str, Any]]:
    """The finished random (``role="random"``) or reference (``"reference"``) cells of a
    protocol: id (the reference's name for reference cells) -> ``cell_value`` plus the
    genotype, ``dead`` and (reference cells) ``what``."""
    acc: dict[str, list[float]] = {}
    val: dict[str, list[float]] = {}
    secs: dict[str, list[float]] = {}
    info: dict[str, dict[str, Any]] = {}
    for e in evals:
        if e["protocol"] != protocol or e.get("role") != role or not e["complete"] \
                or not isinstance(e["test_acc"], (int, float)):
            continue
        key = e.get("reference") if role == "reference" else e["trial_id"]
        acc.setdefault(key, []).append(float(e["test_acc"]))
        v = e.get("eval_val_acc")
        val.setdefault(key, []).append(float(v) if isinstance(v, (int, float)) else math.nan)
        secs.setdefault(key, []).append(e.get("seconds", math.nan))
        info[key] = {"genotype": e.get("genotype"), "dead": bool(e.get("dead")),
                     "what": e.get("what"), "test_n": e.get("test_n")}
    return {k: {**cell_value(v, info[k]["test_n"]), **info[k],
                "eval_val_acc": statistics.fmean(val[k]), "seconds": statistics.fmean(secs[k])}
            for k, v in sorted(acc.items())}


def group_truth(trials: list[Trial], truth: dict[str, dict[str, Any]],
                partial: Counter) -> dict[str, Any]:
    """A group's evaluation columns: test accuracy over search seeds, counts and parameters."""
    vals = [truth[t.trial_id]["test_acc"] for t in trials if t.trial_id in truth]
    row = {f"test_acc_{k}": v for k, v in summary(vals).items()}
    params = [truth[t.trial_id]["eval_params"] for t in trials if t.trial_id in truth]
    row["eval_params_mean"] = summary(params)["mean"]
    macs = [truth[t.trial_id].get("eval_macs", math.nan) for t in trials if t.trial_id in truth]
    row["eval_macs_mean"] = summary(macs)["mean"]
    ev = [truth[t.trial_id].get("eval_val_acc", math.nan) for t in trials if t.trial_id in truth]
    row["eval_val_acc_mean"] = summary(ev)["mean"]
    pct = [truth[t.trial_id].get("random_percentile", math.nan) for t in trials
           if t.trial_id in truth]
    row["random_percentile_mean"] = summary(pct)["mean"]
    row["n_evaluated"] = len(vals)
    row["n_eval_partial"] = sum(partial.get(t.trial_id, 0) for t in trials)
    row["_test_values"] = vals
    return row


def bootstrap(rows: list[list[float]], seed: int = 0, reps: int = BOOTSTRAP
              ) -> list[dict[str, float]]:
    """Percentile intervals of each group's mean and rank (1 = highest mean); groups without
    values get NaN."""
    rng = random.Random(seed)
    means = [[] for _ in rows]
    ranks = [[] for _ in rows]
    live = [i for i, v in enumerate(rows) if v]
    for _ in range(reps):
        m = {}
        for i in live:
            v = rows[i]
            m[i] = sum(v[rng.randrange(len(v))] for _ in v) / len(v)
            means[i].append(m[i])
        for i in live:  # competition ranking: tied means share the better rank
            ranks[i].append(1 + sum(m[j] > m[i] for j in live))
    point = {i: sum(rows[i]) / len(rows[i]) for i in live}
    point_rank = {i: 1 + sum(point[j] > point[i] for j in live) for i in live}

    def pct(xs: list[float], q: float) -> float:
        xs = sorted(xs)
        return xs[min(len(xs) - 1, max(0, int(round(q * (len(xs) - 1)))))]

    out = []
    for i in range(len(rows)):
        if i not in point:
            out.append({k: math.nan for k in ("test_acc_ci_low", "test_acc_ci_high", "test_rank",
                                              "test_rank_ci_low", "test_rank_ci_high")})
            continue
        out.append({"test_acc_ci_low": pct(means[i], 0.025),
                    "test_acc_ci_high": pct(means[i], 0.975),
                    "test_rank": float(point_rank[i]),
                    "test_rank_ci_low": float(pct(ranks[i], 0.025)),
                    "test_rank_ci_high": float(pct(ranks[i], 0.975))})
    return out


def proxy_validity(trials: list[Trial], truth: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Spearman and Kendall correlations of every proxy with the test accuracy
    (``eval_val_acc``, the retrained cell's validation accuracy, is the selection truth's own
    check: it should agree with the test accuracy)."""
    from scipy.stats import kendalltau, spearmanr

    out: dict[str, Any] = {}
    for proxy in PROXIES:
        xs, ys = [], []
        for t in trials:
            v = truth.get(t.trial_id, {}).get(proxy) if proxy == "eval_val_acc" \
                else t.last.get(proxy)
            if t.trial_id in truth and isinstance(v, (int, float)) and not isinstance(v, bool) \
                    and math.isfinite(v):
                xs.append(float(v))
                ys.append(truth[t.trial_id]["test_acc"])
        if len(xs) < 3 or len(set(xs)) < 2 or len(set(ys)) < 2:
            out[proxy] = {"n": len(xs), "spearman": math.nan, "spearman_p": math.nan,
                          "kendall": math.nan, "kendall_p": math.nan}
            continue
        s, k = spearmanr(xs, ys), kendalltau(xs, ys)
        out[proxy] = {"n": len(xs), "spearman": float(s.statistic),
                      "spearman_p": float(s.pvalue), "kendall": float(k.statistic),
                      "kendall_p": float(k.pvalue)}
    return out
