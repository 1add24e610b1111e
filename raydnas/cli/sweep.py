"""``raydnas sweep CONFIG``: the sub-command (loaded by ``raydnas.cli.main.build_parser``)."""

from __future__ import annotations

import argparse

from .common import add_set_option

# Lazy imports: the sweep code (torch, Ray) loads when the command runs, not for `--help`.


def _sweep(args: argparse.Namespace) -> int:
    from ..sweep import run_sweep

    s = run_sweep(args.config, overrides=args.set, resume=args.resume,
                  retry_failed=args.retry_failed, address=args.address, storage=args.storage,
                  name=args.name, reduce=not args.no_reduce, num_cpus=args.num_cpus,
                  quiet=args.quiet)
    return s.exit_code


def add_parser(subparsers) -> None:
    """The ``raydnas sweep`` subcommand."""
    p = subparsers.add_parser(
        "sweep", help="run every method x seed (and Optuna points) as one Ray Tune experiment",
        description="Run a study config as one Ray Tune experiment. Running the same command "
                    "again continues an interrupted experiment.")
    p.add_argument("config", help="experiment YAML with a sweep: (and optionally optuna:) block")
    add_set_option(p, "override config values: --set epochs=20 data.batch_size=64 (several "
                      "after one --set, or --set repeated)")
    p.add_argument("--resume", action="store_true",
                   help="continue an existing experiment (error if there is none)")
    p.add_argument("--retry-failed", action="store_true",
                   help="when continuing, also rerun failed trials from their last checkpoint")
    p.add_argument("--address", default=None,
                   help="join a running Ray cluster ('auto'); default: start a local Ray")
    p.add_argument("--storage", default=None, help="override sweep.storage (path or s3://...)")
    p.add_argument("--name", default=None, help="override sweep.name")
    p.add_argument("--num-cpus", type=int, default=None,
                   help="CPUs of the local Ray (default: all of this machine)")
    p.add_argument("--no-reduce", action="store_true", help="do not run raydnas reduce at the end")
    p.add_argument("--quiet", action="store_true", help="no progress table")
    p.set_defaults(func=_sweep)
