"""``raydnas evaluate SOURCE``: train found cells from scratch, report test accuracy."""

from __future__ import annotations

import argparse

from .errors import ConfigError


def _seeds(text: str) -> list[int]:
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        else:
            seeds = list(range(int(text)))
    except ValueError:
        seeds = []
    if not seeds or any(s < 0 for s in seeds):
        raise ConfigError("--seeds", "seeds", text,
                          "a number of evaluation seeds (3: seeds 0, 1, 2) or a list 0,4,7")
    return seeds


def _overrides(items: list[str]) -> dict:
    import yaml

    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError("--set", item, item,
                              "KEY=VALUE, e.g. --set epochs=2 or --set data.root=~/data")
        k, _, v = item.partition("=")
        out[k.strip()] = yaml.safe_load(v) if v.strip() else ""
    return out


def _run(args: argparse.Namespace) -> int:
    from .evaluation import plan, run_evaluation

    jobs, skipped = plan(args.source, genotype=args.genotype, space=args.space,
                         protocol=args.protocol, seeds=_seeds(args.seeds),
                         overrides=_overrides(args.set), out=args.out,
                         train=not args.benchmark)
    for line in skipped:
        print(f"  skipped: {line}")
    if not jobs:
        raise ConfigError("raydnas evaluate", "SOURCE", args.source or args.genotype,
                          "an experiment with at least one finished trial")
    if args.benchmark:
        from .evaluation.benchmark import run_lookups

        rows = run_lookups(jobs, args.benchmark)
        print(f"== NAS-Bench-201 lookup ({args.benchmark}) ==")
        for j, out, res in rows:
            if res is None:
                continue
            extra = ", ".join(f"{k} {v:.4f}" for k, v in res.items() if k.endswith("acc")
                              and k != "test_acc")
            print(f"{j.meta.get('trial_id')}  {j.meta.get('method')}  search seed "
                  f"{j.meta.get('search_seed')}: CIFAR-10 test_acc {res['test_acc']:.4f} "
                  f"({extra})  ({out})")
        return 0
    p = jobs[0].job.protocol
    print(f"raydnas evaluate: {len(jobs)} evaluation(s), protocol {p.label}", flush=True)
    rows = []
    for i, pl in enumerate(jobs, 1):
        j = pl.job
        if args.fresh and (pl.out / "checkpoint.pt").exists():
            (pl.out / "checkpoint.pt").unlink()
        print(f"[{i}/{len(jobs)}] {j.meta.get('trial_id')} ({j.meta.get('method')}, search seed "
              f"{j.meta.get('search_seed')}) eval seed {j.seed} -> {pl.out}", flush=True)
        m = run_evaluation(j, pl.out, device=args.device, threads=args.threads,
                           log=print if not args.quiet else (lambda s: None))
        rows.append((j, pl.out, m))
    print(f"\n== test accuracy ({p.label}) ==")
    for j, out, m in rows:
        print(f"{j.meta.get('trial_id')}  {j.meta.get('method')}  search seed "
              f"{j.meta.get('search_seed')}  eval seed {j.seed}: test_acc {m['test_acc']:.4f}  "
              f"params {m['eval_params']:,}  ({out})")
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    from .evaluation import KEYS, PROTOCOLS

    p = subparsers.add_parser(
        "evaluate", help="train found cells from scratch and report their test accuracy",
        description="Train the stand-alone network of each found cell from scratch with a "
                    "paper's protocol and measure it on the dataset's test split (the only "
                    "command that reads it). Running it again continues where it stopped.")
    p.add_argument("source", nargs="?", default=None,
                   help="a sweep experiment directory (every finished trial) or a search run "
                        "directory (raydnas search --out DIR)")
    p.add_argument("--genotype", default=None,
                   help="evaluate this genotype string instead (DARTS Genotype(...) or NB201 "
                        "|op~i|+...)")
    p.add_argument("--space", default=None,
                   help="the genotype's search space (default nb201 for NB201 strings, darts "
                        "otherwise)")
    p.add_argument("--protocol", default=None, choices=sorted(PROTOCOLS),
                   help="training protocol (default: the short one of the cell's macro)")
    p.add_argument("--seeds", default="1", help="evaluation seeds: a count (3: 0,1,2) or a list")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help=f"override a protocol key ({', '.join(KEYS)}) or data.KEY (repeatable)")
    p.add_argument("--out", default=None, help="output directory (--genotype only)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--fresh", action="store_true", help="start over instead of continuing")
    p.add_argument("--benchmark", default=None, metavar="FILE",
                   help="look NAS-Bench-201-space cells up in this NAS-Bench-201 file through "
                        "the official API (pip install 'raydnas[benchmark]') instead of training")
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    p.set_defaults(func=_run)
    return p
