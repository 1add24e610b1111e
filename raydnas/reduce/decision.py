"""The study's decision: which group is best by the truth, how sure, and what more would decide
(``df.attrs["decision"]``; the report's first section).

For every study with evaluations (:mod:`raydnas.reduce.decide` has the statistics):

* ``p_best`` (column): the bootstrap probability that the group has the highest mean retrained
  test accuracy (its search seeds resampled);
* ``seeds_to_tell`` (column): search seeds each that would tell the group from the leader
  (highest mean) with a two-sided Welch test at 95 % confidence and 80 % power, from the
  observed means and variances;
* a fixed study is *decided* when the leader's 95 % rank interval is [1, 1]; otherwise the
  sentence names the groups whose rank interval reaches 1 and the seeds each that would tell the
  leader from the closest of them.

A raced study (``sweep.race``, read from the experiment's ``raydnas_study.json``) adds the race:
:func:`raydnas.reduce.race.replay` on the recorded validation truth gives the round-by-round
table and the race's decision, which is the sentence then.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from ..results.load import Trial
from .decide import p_best, seeds_to_tell
from .race import RaceRules, replay, round_table


def race_rules(exp_path: Path) -> RaceRules | None:
    """The race of the study that made this experiment (None: not raced, or no study file)."""
    f = Path(exp_path) / "raydnas_study.json"
    try:
        race = json.loads(f.read_text()).get("race") if f.is_file() else None
    except (OSError, ValueError):
        return None
    return RaceRules(**race) if isinstance(race, dict) else None


def race_values(members: dict[str, list[Trial]], truth: dict[str, dict[str, Any]],
                metric: str) -> dict[str, dict[int, float | None]]:
    """Per group, search seed → the race metric of its retrained cell (None: the search failed;
    absent: no finished evaluation yet)."""
    out: dict[str, dict[int, float | None]] = {}
    for g, ts in members.items():
        vals: dict[int, float | None] = {}
        for t in ts:
            if not isinstance(t.seed, int):
                continue
            v = truth.get(t.trial_id, {}).get(metric)
            if isinstance(v, (int, float)) and math.isfinite(v):
                vals[t.seed] = float(v)
            elif t.status == "failed":
                vals[t.seed] = None
        out[g] = vals
    return out


def study_decision(df: pd.DataFrame, used: dict[str, list[Trial]],
                   members: dict[str, list[Trial]], truth: dict[str, dict[str, Any]],
                   exp_path: Path) -> dict[str, Any]:
    """Adds the ``p_best`` and ``seeds_to_tell`` columns to ``df``; returns the decision."""
    test = {g: [truth[t.trial_id]["test_acc"] for t in used[g] if t.trial_id in truth]
            for g in df["group"]}
    live = {g: v for g, v in test.items() if v}
    pb = p_best(test) if live else {g: math.nan for g in test}
    leader = max(live, key=lambda g: sum(live[g]) / len(live[g])) if live else None
    tell = {g: (math.nan if leader is None or g == leader else seeds_to_tell(v, test[leader]))
            for g, v in test.items()}
    df["p_best"] = [pb[g] for g in df["group"]]
    df["seeds_to_tell"] = [tell[g] for g in df["group"]]
    out: dict[str, Any] = {"leader": leader, "groups": len(live), "race": None,
                           "power": [{"group": g, "n": len(test[g]), "seeds_to_tell": tell[g],
                                      "p_best": pb[g]} for g in df["group"] if g != leader],
                           "p_best": pb}
    rules = race_rules(exp_path)
    if rules is not None:
        race = replay(rules, race_values(members, truth, rules.metric))
        d = race.decision()
        out["race"] = {**d, "rules": rules.to_dict(), "rounds": round_table(race),
                       "out": dict(race.out)}
        out["decided"], out["sentence"] = d["decided"], d["sentence"]
        return out
    out.update(_fixed_sentence(df, test, leader, tell))
    return out


def _fixed_sentence(df: pd.DataFrame, test: dict[str, list[float]], leader: str | None,
                    tell: dict[str, float]) -> dict[str, Any]:
    if leader is None:
        return {"decided": False, "sentence": "no group has a finished evaluation yet."}
    row = df.set_index("group")
    n = len([g for g, v in test.items() if v])
    if row.loc[leader, "test_rank_ci_high"] == 1 and n > 1:
        return {"decided": True,
                "sentence": f"{leader} is the best of {n} by the truth (95 % rank interval "
                            f"[1, 1], {len(test[leader])} seeds)."}
    close = [g for g in row.index if g != leader and test[g]
             and row.loc[g, "test_rank_ci_low"] == 1]
    needed = [tell[g] for g in close if not math.isnan(tell[g])]
    more = ""
    if needed:
        worst = max(needed)  # the closest rival needs the most seeds
        have = min(len(test[g]) for g in [leader, *close])
        more = ("; the differences are too small to tell apart with any affordable number of "
                "seeds" if math.isinf(worst) else
                f"; about {max(0, int(worst) - have)} more seeds each would decide")
    who = ", ".join([leader, *close]) if close else leader
    return {"decided": False, "undecided": [leader, *close],
            "sentence": f"undecided between {who} (their 95 % rank intervals reach 1){more}."
            if close else f"{leader} leads, but its rank interval is not [1, 1]{more}."}
