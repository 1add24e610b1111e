"""What the stop rules would have saved on a finished study, and what they would have cost.

Replays ``raydnas.search.stop_rules`` on every search trial's recorded history (``metrics.jsonl``)
of an experiment that ran without them: the epoch each rule set would have stopped it, the search
time after that epoch (saved), and, where the study retrained its cells, the retrained test
accuracy of the stopped trials' full-run cells against all found cells (the cost in verdict: a
rule that stops searches whose cells retrain well throws good cells away). The stopped
search's cell at its stop epoch was not retrained, so this is the verdict of the full run, not
of the stopped cell.

Usage::

    python benchmarks/stop_rules_replay.py EXPERIMENT [--set dead=true collapsed=1.0 ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RULE_SETS = {
    "dead": {"dead": True},
    "collapsed 1.0": {"collapsed": 1.0},
    "collapsed 0.75": {"collapsed": 0.75},
    "margin stalled 3": {"margin_stall_epochs": 3},
    "all (dead, collapsed 1.0, stalled 3)": {"dead": True, "collapsed": 1.0,
                                             "margin_stall_epochs": 3},
}


def replay(exp: Path) -> list[dict]:
    import yaml

    from raydnas.config.experiment import from_dict
    from raydnas.model.genotype import parse_genotype
    from raydnas.reduce.truth import load_evaluations, per_trial
    from raydnas.results.load import load_experiment
    from raydnas.search.stop_rules import check

    ex = load_experiment(exp)
    evals = load_evaluations(exp, ex.evaluations)
    protos = [e["protocol"] for e in evals if e["complete"]]
    truth, _ = per_trial(evals, max(set(protos), key=protos.count)) if protos else ({}, None)
    accs = {tid: v["test_acc"] for tid, v in truth.items() if v.get("test_acc") is not None}
    all_accs = sorted(accs.values())
    rows = []
    for name, rules in RULE_SETS.items():
        stop = from_dict({"space": "tiny", "data": {"dataset": "digits"}, "stop": rules},
                         "<replay>").stop
        stopped, saved, total, stopped_accs, methods = 0, 0.0, 0.0, [], {}
        for t in ex.trials:
            hist = t.epochs
            if not hist:
                continue
            cfg = yaml.safe_load((t.path / "config.yaml").read_text()) if t.path else {}
            epochs = int((cfg or {}).get("epochs", len(hist)))
            secs = [float(h.get("epoch_seconds") or 0.0) for h in hist]
            total += sum(secs)
            for i, m in enumerate(hist):
                g = parse_genotype(m["genotype"])
                if check(stop, hist[:i], m, g, epochs) is not None:
                    stopped += 1
                    saved += sum(secs[i + 1:])
                    methods[t.method] = methods.get(t.method, 0) + 1
                    if t.trial_id in accs:
                        stopped_accs.append(accs[t.trial_id])
                    break
        pct = [100.0 * sum(a <= x for a in all_accs) / len(all_accs) for x in stopped_accs]
        rows.append({"rules": name, "stopped": stopped, "trials": len(ex.trials),
                     "search_s_saved": saved, "search_s_total": total,
                     "stopped_test_acc_median": (statistics.median(stopped_accs)
                                                 if stopped_accs else None),
                     "all_test_acc_median": statistics.median(all_accs) if all_accs else None,
                     "stopped_percentile_median": statistics.median(pct) if pct else None,
                     "methods": methods})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("experiment")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    rows = replay(Path(a.experiment))
    for r in rows:
        print(json.dumps(r))
    if a.out:
        Path(a.out).write_text(json.dumps(rows, indent=1) + "\n")
    print("| rules | stopped | search time saved | stopped cells' test_acc (median) | "
          "all cells' | stopped cells' percentile among found |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        share = 100 * r["search_s_saved"] / r["search_s_total"]
        print(f"| {r['rules']} | {r['stopped']}/{r['trials']} | {r['search_s_saved']:.0f} s of "
              f"{r['search_s_total']:.0f} s ({share:.0f} %) | {_f(r['stopped_test_acc_median'])} "
              f"| {_f(r['all_test_acc_median'])} | {_f(r['stopped_percentile_median'], 0)} |")


def _f(v, d=3) -> str:
    return "—" if v is None else f"{v:.{d}f}"

if __name__ == "__main__":
    main()
