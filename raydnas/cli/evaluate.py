"""``raydnas evaluate SOURCE``: train found cells from scratch, report test accuracy."""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from ..errors import ConfigError
from .common import add_set_option

# Lazy imports: the library (torch, Ray) loads when the command runs; parsing and `--help` import
# neither.


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
    from ..config.overrides import parse_override

    return dict(parse_override(item) for item in items)


def _run_remote(args: argparse.Namespace) -> int:
    """An experiment on remote storage (``s3://...``): its small files are copied to a local
    folder and its cells evaluated there (finished evaluations are not run again); what the
    evaluation wrote goes to ``<experiment>/evaluation/``, also when it stops early."""

    from ..results.remote import fetch_remote, upload_dir

    uri = args.source.rstrip("/")
    cache = Path(tempfile.mkdtemp(prefix="raydnas-evaluate-"))
    try:
        local = fetch_remote(uri, cache, where="raydnas evaluate")
        try:
            return _run(argparse.Namespace(**{**vars(args), "source": str(local)}))
        finally:
            if (local / "evaluation").is_dir():
                upload_dir(local / "evaluation", f"{uri}/evaluation")
                print(f"evaluations written to {uri}/evaluation", flush=True)
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def _run(args: argparse.Namespace) -> int:
    from ..evaluation import plan, run_evaluation
    from ..results.remote import is_uri

    if args.source is not None and is_uri(args.source):
        return _run_remote(args)

    jobs, skipped = plan(args.source, genotype=args.genotype, space=args.space,
                         protocol=args.protocol, seeds=_seeds(args.seeds),
                         overrides=_overrides(args.set), out=args.out,
                         train=not args.benchmark, random=args.random,
                         calibrate=args.calibrate)
    for line in skipped:
        print(f"  skipped: {line}")
    if not jobs:
        raise ConfigError("raydnas evaluate", "SOURCE", args.source or args.genotype,
                          "an experiment with at least one finished trial")
    if args.benchmark:
        from ..evaluation.benchmark import run_lookups

        rows = run_lookups(jobs, args.benchmark)
        print(f"== NAS-Bench-201 lookup ({args.benchmark}) ==")
        for j, out, res in rows:
            if res is None:
                continue
            extra = ", ".join(f"{k} {v:.4f}" for k, v in res.items() if k.endswith("acc")
                              and k != "test_acc")
            print(f"{j.meta.get('search_trial_id')}  {j.meta.get('method')}  search seed "
                  f"{j.meta.get('search_seed')}: CIFAR-10 test_acc {res['test_acc']:.4f} "
                  f"({extra})  ({out})")
        return 0
    p = jobs[0].job.protocol
    print(f"raydnas evaluate: {len(jobs)} evaluation(s), protocol {p.label}", flush=True)
    if args.fresh:
        for pl in jobs:
            for name in ("checkpoint.pt", "checkpoint.prev.pt", "final.json"):
                if (pl.out / name).exists():
                    (pl.out / name).unlink()
    if _is_experiment(args.source) and not args.no_ray:
        from ..sweep.eval_trials import run_evaluation_trials

        rows = run_evaluation_trials(jobs, resources={"cpu": args.cpus_per_trial,
                                                      "gpu": args.gpus_per_trial},
                                     address=args.address, num_cpus=args.num_cpus,
                                     quiet=args.quiet)
        _table(p, rows)
        _verdicts(rows)
        return 0 if all(m is not None for _, _, m in rows) else 1
    rows = []
    for i, pl in enumerate(jobs, 1):
        j = pl.job
        print(f"[{i}/{len(jobs)}] {j.meta.get('search_trial_id')} ({j.meta.get('method')}, "
              "search seed "
              f"{j.meta.get('search_seed')}) eval seed {j.seed} -> {pl.out}", flush=True)
        m = run_evaluation(j, pl.out, device=args.device, threads=args.threads,
                           log=print if not args.quiet else (lambda s: None))
        rows.append((j, pl.out, m))
    _table(p, rows)
    _verdicts(rows)
    return 0


def _verdicts(rows) -> None:
    """Print the calibration and random-baseline verdicts of what just ran
    (:func:`raydnas.reduce.baseline.verdicts`) and write them as calibration.json."""
    from ..reduce.baseline import verdicts, write_verdicts

    doc = verdicts(rows)
    for line in doc["lines"]:
        print("\n" + line if line.startswith("Calibration") else line)
    path = write_verdicts(doc)
    if path is not None:
        print(f"(written to {path}; raydnas reduce shows it in the report)")


def _is_experiment(source: str | None) -> bool:
    return source is not None and not (Path(source) / "config.yaml").is_file()


def _table(p, rows) -> None:
    print(f"\n== test accuracy ({p.label}) ==")
    for j, out, m in rows:
        who = (f"{j.meta.get('search_trial_id')}  {j.meta.get('method')}  search seed "
               f"{j.meta.get('search_seed')}  eval seed {j.seed}")
        if m is None:
            print(f"{who}: not finished  ({out})")
        else:
            print(f"{who}: test_acc {m['test_acc']:.4f}  params {m['eval_params']:,}  ({out})")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """The ``raydnas evaluate`` subcommand."""
    from ..evaluation import KEYS, PROTOCOLS

    p = subparsers.add_parser(
        "evaluate", help="train found cells from scratch and report their test accuracy",
        description="Train the stand-alone network of each found cell from scratch with a "
                    "paper's protocol and measure it on the dataset's test split (the only "
                    "command that reads it). Running it again continues where it stopped.")
    p.add_argument("source", nargs="?", default=None,
                   help="a sweep experiment directory or storage URI such as "
                        "s3://bucket/sweeps/name (every finished trial), or a search run "
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
    add_set_option(p, f"override a protocol key ({', '.join(KEYS)}) or data.KEY "
                      "(repeatable)", metavar="KEY=VALUE")
    p.add_argument("--out", default=None, help="output directory (--genotype only)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default 1, as an evaluation trial of 1 CPU: the "
                        "count changes the numbers)")
    p.add_argument("--fresh", action="store_true", help="start over instead of continuing")
    p.add_argument("--no-ray", action="store_true",
                   help="evaluate an experiment's cells one after another in this process "
                        "instead of as Ray Tune trials")
    p.add_argument("--address", default=None, help="join a running Ray cluster ('auto')")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray")
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="Ray resources per trial")
    p.add_argument("--gpus-per-trial", type=float, default=0.0,
                   help="Ray GPUs per trial (0.25 packs 4 evaluations on one GPU)")
    p.add_argument("--benchmark", default=None, metavar="FILE",
                   help="look NAS-Bench-201-space cells up in this NAS-Bench-201 file through "
                        "the official API (pip install 'raydnas[benchmark]') instead of training")
    p.add_argument("--random", type=int, default=0, metavar="N",
                   help="also train N cells drawn uniformly from the space (the random "
                        "baseline: the report gives each found cell its percentile among them)")
    p.add_argument("--calibrate", action="store_true",
                   help="also train the space's 5 reference cells (conv: the best known conv "
                        "cell; one_path: one conv edge; skip_path: one skip edge; all_pool; "
                        "all_skip) and say whether the protocol tells them apart on this data")
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    p.set_defaults(func=_run)
    return p
