"""The study's decision: which group is best by the truth, how sure, and what more would decide
(``df.attrs["decision"]``; the report's first section).

For every study with evaluations (:mod:`raydnas.reduce.decide` has the statistics):

* ``p_best`` (column): the bootstrap probability that the group has the highest mean retrained
  test accuracy (its search seeds resampled);
* ``seeds_to_tell`` (column): search seeds each that would tell the group from the leader
  (highest mean) with a two-sided Welch test at 95 % confidence and 80 % power, from the
  observed means and variances;
* a fixed study is *decided* when every other group is significantly below the leader (the
  race's test, once, on every seed: Welch, all pairs, Bonferroni, 95 %); otherwise the sentence
  names the groups not significantly below it and the seeds each that would tell the leader
  from the closest of them (the bootstrap rank intervals of the truth's table are shown beside,
  but with few seeds they are too narrow to decide on).

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

from ..results.load import USED, Trial
from .decide import CONFIDENCE, eliminate, p_best, seeds_to_tell
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
                metric: str, partial: dict[str, int] | None = None
                ) -> dict[str, dict[int, float | None]]:
    """Per group, search seed → the race metric of its retrained cell, as the live race saw it:
    None where the search failed, found no cell, or its evaluations all failed (a finished
    search without a finished evaluation and none still running); absent while it runs."""
    partial = partial or {}
    out: dict[str, dict[int, float | None]] = {}
    for g, ts in members.items():
        vals: dict[int, float | None] = {}
        for t in ts:
            if not isinstance(t.seed, int):
                continue
            v = truth.get(t.trial_id, {}).get(metric)
            if isinstance(v, (int, float)) and math.isfinite(v):
                vals[t.seed] = float(v)
            elif t.status == "failed" or (t.status in USED and not partial.get(t.trial_id)):
                vals[t.seed] = None
        out[g] = vals
    return out


def study_decision(df: pd.DataFrame, used: dict[str, list[Trial]],
                   members: dict[str, list[Trial]], truth: dict[str, dict[str, Any]],
                   exp_path: Path, partial: dict[str, int] | None = None) -> dict[str, Any]:
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
        race = replay(rules, race_values(members, truth, rules.metric, partial))
        d = race.decision()
        out["race"] = {**d, "rules": rules.to_dict(), "rounds": round_table(race),
                       "out": dict(race.out)}
        out["decided"], out["sentence"] = d["decided"], d["sentence"]
        if leader is not None:  # what the test split says (reported, never raced on)
            r = df.set_index("group").loc[leader]
            out["test_note"] = (f"By the retrained test accuracy (reported, not raced on): "
                                f"{leader} leads, 95 % rank interval "
                                f"[{int(r['test_rank_ci_low'])}, {int(r['test_rank_ci_high'])}].")
        return out
    out.update(_fixed_sentence(df, test, leader, tell))
    return out


def _fixed_sentence(df: pd.DataFrame, test: dict[str, list[float]], leader: str | None,
                    tell: dict[str, float]) -> dict[str, Any]:
    """A fixed study decides with the race's test on every seed, once: the leader is the best
    when every other group is significantly below it (Welch, all pairs, Bonferroni, α 0.05)."""
    live = {g: v for g, v in test.items() if v}
    if leader is None:
        return {"decided": False, "sentence": "no group has a finished evaluation yet."}
    if len(live) == 1:
        return {"decided": False, "sentence": f"only {leader} has finished evaluations: "
                f"nothing to compare it with."}
    r = eliminate(live, 1 - CONFIDENCE)
    close = [g for g in live if g != leader and leader not in r.worse_than.get(g, [])]
    n = len(live)
    if not close:
        return {"decided": True,
                "sentence": f"{leader} is the best of {n} by the retrained test accuracy at 95 % "
                            f"(Welch, every pair, Bonferroni; {len(live[leader])} seeds)."}
    needed = [(tell[g], min(len(live[g]), len(live[leader]))) for g in close
              if not math.isnan(tell[g])]
    more = ""
    if needed:
        worst, have = max(needed)  # the closest rival needs the most seeds
        more = ("; the differences are too small to tell apart with any affordable number of "
                "seeds" if math.isinf(worst) else
                f"; about {max(1, int(worst) - have)} more seeds each would decide")
    return {"decided": False, "undecided": [leader, *close],
            "sentence": f"undecided by the retrained test accuracy between "
                        f"{', '.join([leader, *close])} (not significantly below {leader} at 95 %, "
                        f"Welch, every pair, Bonferroni){more}."}
