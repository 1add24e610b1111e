"""The ``raydnas`` command: ``search``, ``validate``, ``sweep``, ``evaluate``, ``reduce``,
``wait-head``.

Bad input exits with status 2 and one line; nothing is started.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import ConfigError
from .common import add_set_option, plural, split_set_values

# Lazy imports: each command's library code (torch, Ray) loads when it runs; `--help` imports
# neither.


def _search(args: argparse.Namespace) -> int:
    from ..config.experiment import load_config

    cfg = load_config(args.config, args.set)
    out = Path(args.out).expanduser() if args.out else Path("runs") / Path(args.config).stem
    if args.fresh:
        from ..checkpoint import previous

        for f in (out / "checkpoint.pt", previous(out / "checkpoint.pt")):
            if f.exists():
                f.unlink()
    from ..search.run import resolve_device, run_search

    resolve_device(args.device)  # a missing GPU: one line before the banner
    print(f"raydnas search: {cfg.source} -> {out} "
          f"(method {'/'.join(cfg.method().values())}, seed {cfg.seed})", flush=True)
    m = run_search(cfg, out, device=args.device, threads=args.threads, progress=True)
    print("\n== done ==")
    if m:
        print(f"epochs {m['epoch']}/{cfg.epochs}  val_acc {m['val_acc']:.4f}  "
              f"discrete_val_acc {m['discrete_val_acc']:.4f}"
              + (f"  tuned {m['discrete_val_acc_tuned']:.4f}"
                 if "discrete_val_acc_tuned" in m else "")
              + f"  arch_params {m['arch_params']:,}  alpha_steps {m['alpha_steps']}")
        if "alpha_margin_mean" in m:
            from ..search.metrics import DECIDED_MARGIN

            print(f"alpha margin (chosen op - runner-up, mean over edges) "
                  f"{m['alpha_margin_mean']:.3f}, min {m['alpha_margin_min']:.3f}"
                  + ("" if m["decided"] else
                     f"; the cell was selected by {m['selected_by']}, not read off α"
                     if m.get("selected_by") in ("pt", "random_ws") else
                     f"\nUNDECIDED: the op weights are still within {DECIDED_MARGIN} of each "
                     "other; this genotype is mostly initialization noise, not a search result "
                     "(more epochs, or a larger optim.a_lr)"))
    print(f"genotype:     {out / 'genotype.txt'}")
    print((out / "genotype.txt").read_text().rstrip())
    print(f"metrics:      {out / 'metrics.jsonl'}  (final: {out / 'final.json'})")
    finished = bool(m) and (m.get("epoch", 0) >= cfg.epochs or bool(m.get("early_stop")))
    print(f"checkpoint:   {out / 'checkpoint.pt'}  "
          + ("(finished; --fresh starts over)" if finished
             else "(run the same command again to continue)"))
    print(f"TensorBoard:  tensorboard --logdir {out / 'tb'}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from ..config.experiment import load_config

    cfg = load_config(args.config, args.set)
    line = (f"{cfg.source}: OK (space {cfg.space}, method {'/'.join(cfg.method().values())}, "
            f"{plural(cfg.epochs, 'epoch')}, dataset {cfg.data.dataset})")
    if cfg.sweep is not None or cfg.optuna is not None or cfg.evaluate is not None:
        from ..sweep import validate_study

        st = validate_study(cfg)
        pts = (f" x up to {st.optuna.n_trials} Optuna points" if st.optuna is not None else "")
        seeds = (f"{st.race.min_seeds} to {st.race.max_seeds} raced seed(s)" if st.race
                 else f"{len(st.seeds)} seed(s)")
        line += (f"\nstudy: {len(st.methods)} method(s) x {seeds}{pts} = "
                 f"{'at most ' if st.race else ''}{st.search_trials()} search trials, each "
                 "method's config checked")
        if st.evaluate is not None:
            line += (f"; + {st.search_trials() * len(st.evaluate.seeds)} evaluation trials "
                     f"({st.evaluate.protocol.label})")
            if st.baseline_trials():
                line += (f" + {st.baseline_trials()} of the baseline ({st.evaluate.random} "
                         f"random cells" + (", the reference cells" if st.evaluate.calibrate
                                            else "") + ")")
    print(line)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``raydnas`` argument parser with every subcommand."""
    from .. import __version__

    p = argparse.ArgumentParser(
        prog="raydnas",
        description="Studies of differentiable architecture search (DARTS and its descendants): "
                    "search, sweep (Ray Tune), evaluate found cells, reduce to a report.")
    p.add_argument("--version", action="version", version=f"raydnas {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("search", help="run one search (no Ray)")
    s.add_argument("config", help="experiment YAML (e.g. configs/quickstart.yaml)")
    s.add_argument("--out", help="output directory (default runs/<config name>)")
    add_set_option(s, "override config values: --set epochs=20 data.batch_size=64 (several "
                      "after one --set, or --set repeated)")
    s.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    s.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: the config's threads, else what a sweep "
                        "trial of it uses: sweep.resources.cpu, 1 without a sweep block; the "
                        "count changes the numbers and is recorded)")
    s.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
    s.set_defaults(func=_search)
    v = sub.add_parser("validate", help="check a config without running anything")
    v.add_argument("config", help="experiment or study YAML to check")
    add_set_option(v, "override config values: --set epochs=20 regularizer.rho=0.01")
    v.set_defaults(func=_validate)
    for mod in ("sweep", "evaluate", "reduce", "rank", "wait_head"):  # ImportError: a bug
        __import__(f"raydnas.cli.{mod}", fromlist=["add_parser"]).add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """The ``raydnas`` command: exit status 0, 1 (failures), 2 (bad input) or 130."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(split_set_values(argv))
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
