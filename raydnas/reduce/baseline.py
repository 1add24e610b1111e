"""Does an evaluation protocol tell cells apart? The random-cell baseline and the reference
cells of a study (``sweep.baseline``, ``evaluate: {calibrate: true}``, ``raydnas evaluate
--random N --calibrate``), reduced to percentiles and verdicts.

Definitions (every evaluation here is one cell trained from scratch under one protocol):

* a cell's value is its test accuracy, the mean over its finished evaluation seeds;
* its **noise** is the standard error of that value:
  se² = s²/k + p(1 − p)/n, with s² the sample variance over its k evaluation seeds (0 for
  k = 1) and p(1 − p)/n the binomial variance of an accuracy p on n test images (a finite test
  set is noise too);
* two cells are **told apart** when their values differ by more than 2·√(se₁² + se₂²);
* **percentile among random cells** of a value x: 100 · (#{random < x} + ½ #{random = x}) / N
  (mid-rank; 50 = a typical random cell);
* the random cells' **spread** is the sample std of the live (not dead) random cells' values; the
  protocol **cannot separate cells** when that spread is below twice the median noise of those
  cells: the random cells differ less than one cell's measurement varies;
* the **calibration** passes when the ``conv`` reference cell is told apart from, and above,
  every parameter-free reference cell that was evaluated: ``skip_path`` (the identity cell),
  ``all_pool`` and ``all_skip``.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from ..model.cells import PARAM_FREE_REFERENCES, REFERENCE_NAMES

#: cells told apart beyond this many standard errors of their difference
Z = 2.0


def cell_value(accs: list[float], n_test: int | None) -> dict[str, float]:
    """A cell's mean test accuracy over its evaluation seeds and its standard error."""
    k = len(accs)
    mean = sum(accs) / k
    var_seeds = statistics.variance(accs) if k > 1 else 0.0
    binom = mean * (1 - mean) / n_test if n_test else 0.0
    return {"test_acc": mean, "eval_seeds": k, "seed_std": math.sqrt(var_seeds) if k > 1
            else math.nan, "se": math.sqrt(var_seeds / k + binom)}


def told_apart(a: dict[str, float], b: dict[str, float]) -> tuple[float, float, bool]:
    """(a − b, the threshold Z·√(se_a² + se_b²), whether a is above b beyond it)."""
    diff = a["test_acc"] - b["test_acc"]
    thr = Z * math.sqrt(a["se"] ** 2 + b["se"] ** 2)
    return diff, thr, diff > thr


def percentile(x: float, pool: list[float]) -> float:
    """Mid-rank percentile of ``x`` among ``pool`` (NaN for an empty pool)."""
    if not pool or x is None or math.isnan(x):
        return math.nan
    below = sum(v < x for v in pool)
    ties = sum(v == x for v in pool)
    return 100.0 * (below + 0.5 * ties) / len(pool)


def random_summary(cells: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The random baseline's numbers and its verdict (module docstring). ``cells``: id ->
    cell_value(...) plus ``dead``."""
    vals = [c["test_acc"] for c in cells.values()]
    live = [c for c in cells.values() if not c.get("dead")]
    out: dict[str, Any] = {"n": len(vals), "n_dead": len(vals) - len(live)}
    if not vals:
        return out
    lv = [c["test_acc"] for c in live]
    out.update(min=min(vals), median=statistics.median(vals), max=max(vals),
               spread=statistics.stdev(lv) if len(lv) > 1 else math.nan,
               noise=statistics.median(c["se"] for c in live) if live else math.nan)
    out["separates"] = bool(len(lv) > 1 and out["spread"] >= Z * out["noise"])
    out["sentence"] = (
        f"The random cells' test accuracies spread by {out['spread']:.4f} (std of "
        f"{len(lv)} live cells) against a measurement noise of {out['noise']:.4f} per cell: "
        + ("the protocol separates cells." if out["separates"] else
           "**the protocol cannot separate cells on this data** (spread below "
           f"{Z:g} × noise); percentiles among random cells mean little here."))
    return out


def calibration(refs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The calibration verdict from the reference cells' values (name -> cell_value(...) plus
    ``what`` and ``genotype``)."""
    refs = {k: refs[k] for k in sorted(refs, key=lambda k: (
        REFERENCE_NAMES.index(k) if k in REFERENCE_NAMES else len(REFERENCE_NAMES), k))}
    out: dict[str, Any] = {"cells": refs, "comparisons": {}}
    conv = refs.get("conv")
    if conv is None or not {"all_pool", "all_skip"} <= set(refs):
        out["discriminates"] = None
        out["sentence"] = ("Calibration incomplete: the conv, all_pool and all_skip reference "
                           "cells must all have finished evaluations.")
        return out
    ok = True
    parts = []
    for other in refs:
        if other == "conv":
            continue
        diff, thr, apart = told_apart(conv, refs[other])
        out["comparisons"][other] = {"diff": diff, "threshold": thr, "told_apart": apart}
        if other in PARAM_FREE_REFERENCES:
            ok = ok and apart
            parts.append(f"{other} {refs[other]['test_acc']:.4f} ({diff:+.4f} below, "
                         f"threshold {thr:.4f}: {'told apart' if apart else 'NOT told apart'})")
    out["discriminates"] = ok
    head = (f"Calibration: the conv cell scores {conv['test_acc']:.4f}; " + "; ".join(parts)
            + ". ")
    out["sentence"] = head + (
        "The protocol discriminates cells on this data." if ok else
        "**The protocol does not discriminate cells on this data**: a parameter-free cell "
        "scores within noise of the conv cell, so no ranking of found cells by this "
        "evaluation can be trusted (use more channels/cells/epochs, `reduction: light`, or "
        "harder data).")
    return out


def verdicts(rows: list[tuple[Any, Path, dict | None]]) -> dict[str, Any]:
    """The calibration and random-baseline verdicts of evaluations that just ran: ``rows`` are
    (:class:`~raydnas.evaluation.EvalJob`, its output directory, its last metrics or None).
    Only reference and random cells count (``job.meta["role"]``); each cell's value is the
    mean over its evaluation seeds (:func:`cell_value`). Returns ``{"calibration": ...,
    "baseline": ..., "lines": [what to print], "root": the evaluations' directory}``; the
    first two only when such cells ran."""
    by: dict[tuple, list[float]] = {}
    info: dict[tuple, dict[str, Any]] = {}
    for job, out, m in rows:
        role = job.meta.get("role")
        if role and m is not None:
            key = (role, job.meta.get("reference") or job.meta["search_trial_id"])
            by.setdefault(key, []).append(m["test_acc"])
            info[key] = {"what": job.meta.get("reference_what"), "genotype": str(job.genotype),
                         "dead": bool(job.meta.get("cell_dead")), "test_n": m.get("test_n"),
                         "root": Path(out).parent}
    cells = {k: {**cell_value(v, info[k]["test_n"]),
                 **{a: b for a, b in info[k].items() if a != "root"}} for k, v in by.items()}
    refs = {k[1]: v for k, v in cells.items() if k[0] == "reference"}
    rand = {k[1]: v for k, v in cells.items() if k[0] == "random"}
    doc: dict[str, Any] = {"lines": []}
    if refs:
        doc["calibration"] = calibration(refs)
        doc["lines"].append(doc["calibration"]["sentence"].replace("**", ""))
    if rand:
        b = doc["baseline"] = random_summary(rand)
        doc["lines"].append(f"random baseline: {b['n']} cells, test_acc min {b['min']:.4f} "
                            f"median {b['median']:.4f} max {b['max']:.4f}. "
                            + b["sentence"].replace("**", ""))
    doc["root"] = next(iter(info.values()))["root"] if info else None
    return doc


def write_verdicts(doc: dict[str, Any]) -> Path | None:
    """``calibration.json`` next to the evaluations (what ``raydnas reduce`` reads), when
    :func:`verdicts` found reference or random cells; its path, else None."""
    body = {k: doc[k] for k in ("calibration", "baseline") if k in doc}
    if not body or doc.get("root") is None:
        return None
    path = Path(doc["root"]) / "calibration.json"
    path.write_text(json.dumps(body, indent=1, default=str))
    return path
