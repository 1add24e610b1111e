"""``raydnas reduce EXPERIMENT``: write the cross-seed reliability report of a sweep."""

from __future__ import annotations

import argparse

from .common import plural

# Lazy imports: the report's library code (torch, pandas) loads when the command runs, not for
# `--help`.


def _run(args: argparse.Namespace) -> int:
    from ..reduce import reduce
    from ..reduce.decision_report import decision_lines
    from ..reduce.formats import fmt_num, mean_std

    df = reduce(args.experiment, args.out, sort=args.sort, top=args.top,
                collapse_threshold=args.collapse_threshold, gap_threshold=args.gap_threshold,
                plots=not args.no_plots, protocol=args.protocol)
    counts = df.attrs["counts"]
    print(f"raydnas reduce: {df.attrs['experiment']}: {plural(len(df), 'group')}; trials "
          + ", ".join(f"{v} {k}" for k, v in counts.items() if v))
    for i, r in df.iterrows():
        cons = "n/a" if r["consensus"] != r["consensus"] else f"{r['consensus']:.2f}"
        where = f"[{r['benchmark']}] " if "benchmark" in df.columns else ""
        print(f"{i + 1:>3}. {where}{r['group']}: n {r['n']}  discrete_val_acc "
              f"{mean_std(r, 'discrete_val_acc')}  gap {mean_std(r, 'discretization_gap')}  "
              f"consensus {cons}  modal {r['modal_count']}/{r['n']}")
    t = df.attrs.get("truth") or {}
    if "benchmarks" in df.attrs:  # a suite: the ranking across benchmarks, their decisions
        for line in decision_lines(df):
            print(line)
    elif t.get("evaluations"):
        print(f"truth ({t['protocol']}{', SHORT budget' if t.get('short') else ''}): "
              f"{t['evaluations']} evaluations" + (f", {t['partial']} unfinished"
                                                   if t.get("partial") else ""))
        for i, r in df.iterrows():
            if r["n_evaluated"]:
                print(f"{i + 1:>3}. {r['group']}: test_acc {mean_std(r, 'test_acc')} "
                      f"(rank {int(r['test_rank'])}, CI [{int(r['test_rank_ci_low'])}, "
                      f"{int(r['test_rank_ci_high'])}])")
        for line in decision_lines(df):
            print(line)
        for proxy, v in (df.attrs.get("proxy_validity") or {}).items():
            if v["n"]:
                print(f"  proxy {proxy}: Spearman {fmt_num(v['spearman'], 2)}, Kendall "
                      f"{fmt_num(v['kendall'], 2)} (n={v['n']})")
    for e in df.attrs["excluded"]:
        print(f"  not used: {e['describe']}")
    print(f"report: {df.attrs['out_dir']}/report.md ({len(df.attrs['files'])} files)")
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """The ``raydnas reduce`` subcommand."""
    from ..reduce.limits import DEFAULT_COLLAPSE_THRESHOLD, DEFAULT_GAP_THRESHOLD

    p = subparsers.add_parser(
        "reduce", help="cross-seed reliability report of an experiment",
        description="Read a Ray Tune experiment directory (or storage URI) written by "
                    "`raydnas sweep` and write report.md/.csv/.json and PNG plots.")
    p.add_argument("experiment", help="experiment directory (<storage_path>/<name>) or URI")
    p.add_argument("--out", default=None, help="output directory (default <experiment>/report)")
    p.add_argument("--sort", default="auto",
                   help="sort key: a metric (its mean) or any numeric column such as consensus, "
                        "collapse_rate, discretization_gap_std; prefix +/- for "
                        "ascending/descending, written --sort=-KEY (default auto: the retrained "
                        "test_acc where cells were evaluated, else discrete_val_acc; best first)")
    p.add_argument("--collapse-threshold", type=float, default=DEFAULT_COLLAPSE_THRESHOLD,
                   help="a seed has collapsed when at least this share of its normal cell's "
                        "live ops (none is a missing edge) are parameter-free: skip_connect or "
                        f"a pool (default {DEFAULT_COLLAPSE_THRESHOLD})")
    p.add_argument("--gap-threshold", type=float, default=DEFAULT_GAP_THRESHOLD,
                   help="a seed's discretization is reliable when its gap is below this "
                        f"(default {DEFAULT_GAP_THRESHOLD})")
    p.add_argument("--no-plots", action="store_true", help="write md/csv/json only")
    p.add_argument("--top", type=int, default=20,
                   help="groups shown in report.md and the plots of a large study (the truth's "
                        "ranking, else the sort; report.csv holds all; 0: all; default 20)")
    p.add_argument("--protocol", default=None,
                   help="the evaluation protocol whose test accuracies to join (default: the one "
                        "with the most finished evaluations)")
    p.set_defaults(func=_run)
    return p
