"""Joining the truth to a study's table: the retrained cells' test accuracy, the bootstrap
ranking, the random baseline, calibration, proxy validity, random search at equal budget and
the decision (``raydnas.reduce.truth``, ``.baseline``, ``.equal_budget``, ``.decision``)."""

from __future__ import annotations

import math

import pandas as pd

from ..errors import ConfigError
from ..results.load import USED, Experiment, Trial
from . import equal_budget, variants
from .baseline import calibration, percentile, random_summary
from .decision import study_decision
from .truth import (
    bootstrap,
    choose_protocol,
    group_truth,
    load_evaluations,
    per_trial,
    proxy_validity,
    role_cells,
)


def join_truth(df: "pd.DataFrame", members: dict[str, list[Trial]], exp: Experiment,
                protocol: str | None) -> None:
    """Test accuracy columns, bootstrap ranking and proxy validity (raydnas.reduce.truth)."""
    evals = load_evaluations(exp.path, exp.evaluations)
    proto = choose_protocol(evals, protocol)
    if protocol is not None and not any(e["protocol"] == protocol for e in evals):
        raise ConfigError("raydnas reduce", "--protocol", protocol,
                          "a protocol evaluated under " + str(exp.path / "evaluation")
                          + (": " + ", ".join(sorted({str(e['protocol']) for e in evals}))
                             if evals else " (none there; run raydnas evaluate first)"))
    truth, partial = per_trial(evals, proto)
    randoms = role_cells(evals, proto, "random")
    pool = [c["test_acc"] for c in randoms.values()]
    for v in truth.values():
        v["random_percentile"] = percentile(v["test_acc"], pool)
    refs = role_cells(evals, proto, "reference")
    used = {label: [t for t in ts if t.status in USED] for label, ts in members.items()}
    rows = [group_truth(used[g], truth, partial) for g in df["group"]]
    tests = {g: r["_test_values"] for g, r in zip(df["group"], rows)}
    for r, b in zip(rows, bootstrap([r.pop("_test_values") for r in rows])):
        r.update(b)
    searched = dict(zip(df["group"], df.get("search_seconds_mean", [math.nan] * len(df))))
    retrained = {g: equal_budget.median([truth[t.trial_id].get("eval_seconds", math.nan)
                             * truth[t.trial_id]["eval_seeds"] for t in used[g]
                             if t.trial_id in truth]) for g in df["group"]}
    vs_random = equal_budget.columns(tests, searched, retrained, randoms)
    for r, g in zip(rows, df["group"]):
        r.update(vs_random.get(g, {}))
    for k in dict.fromkeys(k for r in rows for k in r):
        df[k] = [r.get(k, math.nan) for r in rows]
    sens = variants.sensitivity(evals, proto, used)
    variants.add_columns(df, sens)
    all_used = [t for ts in used.values() for t in ts]
    df.attrs["truth"] = {
        "protocol": proto,
        "short": any(e["short"] for e in evals if e["protocol"] == proto),
        "evaluations": sum(1 for e in evals if e["protocol"] == proto and e["complete"]
                           and not e.get("role")),
        "baseline": {**random_summary(randoms), "cells": randoms} if randoms else None,
        "calibration": calibration(refs) if refs else None,
        "partial": sum(partial.values()),
        "protocols": sorted({str(e["protocol"]) for e in evals}),
        "per_trial": truth,
        "variants": sens,
    }
    df.attrs["proxy_validity"] = proxy_validity(all_used, truth) if truth else {}
    df.attrs["decision"] = study_decision(df, used, members, truth, exp.path, partial)
