"""``raydnas rank EXPERIMENT EXPERIMENT...``: methods ranked across benchmarks (one study each)."""

from __future__ import annotations

import argparse

# Lazy imports: the ranking's library code (pandas, scipy) loads when the command runs, not
# for `--help`.


def _run(args: argparse.Namespace) -> int:
    from ..reduce.formats import fmt_num
    from ..reduce.suite import rank_experiments

    r = rank_experiments(args.experiments, args.out, args.metric, args.alpha)
    print(f"raydnas rank: {len(r['methods'])} methods on {len(r['benchmarks'])} benchmarks by "
          f"{r['metric']}: Friedman p {fmt_num(r['friedman_p'], 4)}, CD {fmt_num(r['cd'], 2)}, "
          f"mean Kendall τ {fmt_num(r['kendall_mean'], 2)}")
    for i, m in enumerate(r["methods"]):
        lo, hi = r["mean_rank_ci"][m]
        print(f"{i + 1:>3}. {m}: mean rank {r['mean_rank'][m]:.2f} [{lo:.2f}, {hi:.2f}]")
    print(f"report: {r['out_dir']}/rank.md")
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """The ``raydnas rank`` subcommand."""
    p = subparsers.add_parser(
        "rank", help="rank methods across benchmarks (one study per benchmark)",
        description="Reduce several experiments (the same methods, one benchmark each) and "
                    "rank their methods together: mean ranks, Friedman's test, Nemenyi's "
                    "critical-difference diagram and the benchmarks' agreement (Kendall τ).")
    p.add_argument("experiments", nargs="+", help="experiment directories (or URIs)")
    p.add_argument("--out", default="runs/rank", help="output directory (default runs/rank)")
    p.add_argument("--metric", default="test_acc_mean",
                   help="the report.csv column to rank by, higher is better "
                        "(default test_acc_mean: the retrained cells' test accuracy)")
    p.add_argument("--alpha", type=float, default=0.05,
                   help="level of the critical difference (default 0.05)")
    p.set_defaults(func=_run)
    return p
