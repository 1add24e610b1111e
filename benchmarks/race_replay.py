"""How often a race names the right method, and what it spends, replayed on a fixed study.

Reads a finished fixed-seed study with an evaluation stage (e.g. ``configs/decisive_study.yaml
--set sweep.race=null sweep.seeds=10 --name decisive_fixed``): per method and search seed the
retrained cell's ``eval_val_acc`` (its evaluation seeds averaged), the truth a race runs on.

The reference answer is the fixed study's own: the leader by mean ``eval_val_acc`` over all its
seeds, *separated* when every other method is significantly below it with every seed (Welch,
all pairs, Bonferroni at 1 − confidence: one look, no spending). A replay runs
:func:`raydnas.reduce.race.replay` with the race rules on the same values, the seeds taken in a
shuffled order. It is **right** when it names the reference leader where the reference is
separated, or says "undecided" where it is not; its compute is the searches it used over the
fixed study's (each search brings its evaluations along).

A field where the methods do differ: ``--shift NAME=DELTA`` adds DELTA to every value of
method NAME (``others``: every method but the fixed study's leader) before the replay, a
what-if on the study's own seed-to-seed noise (not a measurement of those methods).

Usage::

    python benchmarks/race_replay.py EXPERIMENT [--replays 200] [--min-seeds 3]
        [--shift others=-0.02] [--futility 2] [--out benchmarks/results/race_replay.json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def values_of(exp: Path, metric: str = "eval_val_acc") -> dict[str, dict[int, float | None]]:
    """method -> search seed -> the retrained cell's ``metric`` (None: failed)."""
    from raydnas.reduce.decision import race_values
    from raydnas.reduce.truth import choose_protocol, load_evaluations, per_trial
    from raydnas.results.load import load_experiment

    e = load_experiment(exp)
    evals = load_evaluations(e.path, e.evaluations)
    truth, _ = per_trial(evals, choose_protocol(evals, None))
    members: dict[str, list] = {}
    for t in e.trials:
        members.setdefault(t.method, []).append(t)
    return race_values(members, truth, metric)


def reference(values: dict[str, dict[int, float | None]], confidence: float) -> dict:
    from raydnas.reduce.decide import eliminate

    full = {m: [v for v in vs.values() if v is not None] for m, vs in values.items()}
    r = eliminate(full, 1 - confidence)
    leader = max(r.means, key=r.means.get)
    separated = all(leader in r.worse_than.get(m, []) or m in r.failed
                    for m in full if m != leader)
    return {"leader": leader, "separated": separated, "means": r.means,
            "seeds": {m: len(v) for m, v in full.items()},
            "out_with_all_seeds": sorted(r.eliminated)}


def shifted(values: dict[str, dict[int, float | None]],
            shifts: list[str]) -> dict[str, dict[int, float | None]]:
    """``values`` with ``NAME=DELTA`` added to a method's values (``others``: all but the
    leader by mean)."""
    means = {m: statistics.fmean([v for v in vs.values() if v is not None])
             for m, vs in values.items() if any(v is not None for v in vs.values())}
    leader = max(means, key=means.get)
    out = {m: dict(vs) for m, vs in values.items()}
    for spec in shifts:
        name, _, delta = spec.partition("=")
        names = [m for m in values if m != leader] if name == "others" else [name]
        if any(n not in values for n in names):
            sys.exit(f"--shift: {name!r} is not a method; allowed: others, {', '.join(values)}")
        try:
            d = float(delta)
        except ValueError:
            sys.exit(f"--shift: {spec!r}: DELTA {delta!r} is not a number (NAME=DELTA)")
        for n in names:
            out[n] = {s: (v + d if v is not None else None) for s, v in out[n].items()}
    return out


def run(values: dict[str, dict[int, float | None]], replays: int, rules, seed: int = 0) -> dict:
    from raydnas.reduce.race import replay

    ref = reference(values, rules.confidence)
    seeds = sorted({s for vs in values.values() for s in vs})
    fixed = sum(len(vs) for vs in values.values())
    rng = random.Random(seed)
    right, named, undecided, share, rounds = 0, {}, 0, [], []
    for _ in range(replays):
        order = seeds[:]
        rng.shuffle(order)
        race = replay(rules, values, seed_order=order)
        d = race.decision()
        share.append(race.searches() / fixed)
        rounds.append(len(race.rounds))
        if d["decided"]:
            named[d["best"]] = named.get(d["best"], 0) + 1
        else:
            undecided += 1
        right += (d["decided"] and d["best"] == ref["leader"]) if ref["separated"] \
            else (not d["decided"])
    return {"rules": rules.to_dict(), "replays": replays, "reference": ref,
            "right": right / replays, "named": named, "undecided": undecided / replays,
            "compute_share_median": statistics.median(share),
            "compute_share_mean": statistics.fmean(share),
            "rounds_median": statistics.median(rounds), "fixed_searches": fixed}


def main() -> None:
    from raydnas.reduce.race import RaceRules

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("experiment")
    ap.add_argument("--replays", type=int, default=200)
    ap.add_argument("--min-seeds", type=int, default=3)
    ap.add_argument("--shift", action="append", default=[], metavar="NAME=DELTA")
    ap.add_argument("--futility", type=float, default=None,
                    help="sweep.race.futility of the replayed races (default: off)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    values = shifted(values_of(Path(a.experiment)), a.shift)
    max_seeds = max(len(v) for v in values.values())
    out = {"experiment": a.experiment, "methods": sorted(values), "shift": a.shift, "runs": []}
    for spend in ("bonferroni", "none"):
        rules = RaceRules(min_seeds=a.min_seeds, max_seeds=max_seeds, alpha_spending=spend,
                          futility=a.futility)
        res = run(values, a.replays, rules)
        out["runs"].append(res)
        ref = res["reference"]
        print(f"alpha_spending {spend}: right {res['right']:.0%} of {a.replays} replays "
              f"(reference: {ref['leader']}, {'separated' if ref['separated'] else 'NOT separated'}"
              f" with {max_seeds} seeds), undecided {res['undecided']:.0%}, named {res['named']}, "
              f"compute {res['compute_share_median']:.0%} median of the fixed study's "
              f"{res['fixed_searches']} searches")
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
