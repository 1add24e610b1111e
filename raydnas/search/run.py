"""One complete, resumable supernet search: ``run_search(config, out_dir)``.

This is the one place where the four method axes meet: the step is in
:mod:`raydnas.search.state`, the epoch (train, discretize, measure with the protocol of
:mod:`raydnas.search.measure`, log) in :mod:`raydnas.search.epoch`; this module runs the epochs,
checkpoints and reports. Output directory: ``config.yaml``, ``split.json``, ``checkpoint.pt``,
``metrics.jsonl``, ``genotype.txt``, ``final.json``, ``tb/``.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

from .. import checkpoint as ckpt
from ..config.experiment import DEFAULT_BN_IMAGES, ExperimentConfig, load_config, revalidate
from ..data.datasets import Batches, Cycle, check_split, load_or_make_split
from ..errors import ConfigError
from .epoch import Loop, run_epoch, write_outputs
from .measure import Measurer, bn_indices
from .state import NonFiniteLoss, SearchState, resolve_device, train_step

Report = Callable[[dict, Path], None]

__all__ = ["NonFiniteLoss", "Report", "SearchState", "resolve_device", "run_search",
           "train_step"]


def _check_resume(saved: dict, cfg: ExperimentConfig, out_dir: Path) -> None:
    now = cfg.to_dict()
    for k in sorted(set(saved) | set(now)):
        if k in ("log", "sweep", "optuna", "evaluate", "measure", "speed", "threads"):
            continue  # none changes the run's state (threads: _threads decides)
        if saved.get(k) != now.get(k):
            raise ConfigError(cfg.source, k, now.get(k),
                              f"the checkpoint in {out_dir} was made with {k} = {saved.get(k)!r}; "
                              "use another --out directory or --fresh")


def _threads(cfg: ExperimentConfig, asked: int | None, saved: dict | None, log) -> int:
    """The torch threads of this run: ``asked`` (``--threads``), else the config's ``threads``,
    else the count the checkpoint was made with, else the config's default (a sweep trial's
    count). A resumed run at another count than its checkpoint's says so in one line: float
    sums over threads differ, so the continuation is no longer bit-exact."""
    before = (saved or {}).get("threads")
    explicit = asked if asked is not None else cfg.threads
    n = explicit if explicit is not None else before if before is not None \
        else cfg.default_threads()
    if before is not None and n != before:
        log(f"threads: this search continues at {n} thread(s), its checkpoint was made at "
            f"{before}: the continuation is no longer bit-exact (give threads {before} to "
            "keep it)")
    return n


def run_search(cfg: ExperimentConfig | str | Path, out_dir: str | Path, *,
               report: Report | None = None,
               resume: bool = True, device: str | torch.device | None = "auto",
               restore: str | Path | None = None, threads: int | None = None,
               log: Callable[[str], None] | None = None,
               stop_after_epochs: int | None = None, progress: bool = False) -> dict[str, Any]:
    """Run (or continue) one search; returns the last epoch's metrics.

    Example::

        from raydnas import load_config, run_search
        m = run_search(load_config("configs/quickstart.yaml", {"epochs": 2}), "runs/q2")
        print(m["genotype"], m["discrete_val_acc"])

    Args:
        cfg: a validated experiment config (:func:`raydnas.load_config`), or a YAML path.
        out_dir: where checkpoints, metrics, genotype and TensorBoard logs go.
        report: called after every epoch with the metrics and the checkpoint's path.
        resume: continue from ``out_dir/checkpoint.pt`` if it exists.
        restore: continue from this checkpoint file instead (e.g. one Ray Tune handed back).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``, ...
        threads: torch intra-op threads (default: the config's ``threads``, else the count
            the checkpoint was made with, else a sweep trial's count; recorded in
            ``config.yaml``, ``final.json`` and TensorBoard's hparams).
        stop_after_epochs: stop (resumably) once this many epochs are complete.
        progress: a progress bar with ETAs on a terminal (stderr a TTY) instead of step lines.
    """
    log = log or (lambda s: print(s, flush=True))
    cfg = load_config(cfg) if isinstance(cfg, (str, Path)) else revalidate(cfg)
    out = Path(out_dir)
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                or threads < 1):
        raise ConfigError("run_search", "threads", threads, "an integer >= 1, or None")
    dev = resolve_device(device)  # bad device or data: an error before any directory exists
    st = SearchState(cfg, dev)
    fresh_dir = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _run(st, cfg, out, dev, report, resume, restore, log, stop_after_epochs,
                    progress, threads)
    except ConfigError:
        # a setup error found only now (split sizes): leave nothing behind, never finished work
        if fresh_dir and not (out / ckpt.CHECKPOINT_NAME).exists():
            shutil.rmtree(out, ignore_errors=True)
        raise


def _run(st: SearchState, cfg: ExperimentConfig, out: Path, dev: torch.device,
         report: Report | None, resume: bool, restore: str | Path | None, log,
         stop_after_epochs: int | None, progress: bool, threads: int | None
         ) -> dict[str, Any]:
    n = len(st.dataset)
    split = load_or_make_split(out / "split.json", n, cfg.data.val_fraction, cfg.seed)
    bs = cfg.data.batch_size
    train_b = Batches(st.dataset, split["train"], bs, cfg.seed, True, cfg.data.num_workers)
    val_eval_idx = split["val"] or split["train"]
    val_b = Batches(st.dataset, val_eval_idx, bs, cfg.seed + 1, True, cfg.data.num_workers)
    check_split(cfg.source, cfg.data.dataset, n, cfg.data.val_fraction, bs,
                st.gradient.needs_val, cfg.measure.bn_images)
    st.steps_per_epoch = len(train_b)
    val = Cycle(val_b) if split["val"] else None
    ms = cfg.measure
    n_bn = ms.bn_images if ms.bn_images is not None else min(DEFAULT_BN_IMAGES,
                                                             len(split["train"]))
    measurer = Measurer(st.dataset, bn_indices(split["train"], n_bn, cfg.seed), val_b, bs, dev,
                        ms.samples, cfg.seed)
    loop = Loop(train_b, val_b, val, measurer,
                 Batches(st.dataset, split["train"], bs, cfg.seed + 2, True, cfg.data.num_workers),
                 interactive=progress and sys.stderr.isatty(), started=time.perf_counter())

    ckpt_path = out / ckpt.CHECKPOINT_NAME
    saved_config = None
    source = Path(restore) if restore else (ckpt_path if resume and ckpt_path.is_file() else None)
    if source is not None:
        saved, source = ckpt.load_or_previous(source, map_location=dev, log=log)
        _check_resume(saved["config"], cfg, out)
        st.load_state_dict(saved["state"])
        if val is not None:
            val.load_state_dict(saved["val_iter"])
        ckpt.set_rng_state(saved["rng"])
        saved_config = saved["config"]
        done = st.epoch >= cfg.epochs or (st.history and st.history[-1].get("early_stop"))
        if done:
            log(f"already finished: {out} holds all {st.epoch} epoch(s) of this search "
                "(nothing to do; --fresh starts over)")
        else:
            log(f"resuming from {source} after epoch {st.epoch}/{cfg.epochs}")
    n_threads = _threads(cfg, threads, saved_config, log)
    torch.set_num_threads(n_threads)
    cfg.threads = n_threads  # recorded: config.yaml, the checkpoint, final.json, TensorBoard
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    metrics = st.history[-1] if st.history else {}
    tb = None
    if cfg.log.tensorboard and st.epoch < cfg.epochs and not metrics.get("early_stop"):
        from .tblog import TBLogger, run_hparams  # a finished search opens no new event file

        tb = TBLogger(out / "tb", purge_step=st.epoch + 1 if st.epoch else None)
        tb.hparams(run_hparams(cfg))
    prev_genotype = metrics.get("genotype")
    try:
        while st.epoch < cfg.epochs and not metrics.get("early_stop"):
            if stop_after_epochs is not None and st.epoch >= stop_after_epochs:
                break
            metrics = run_epoch(st, loop, log, prev_genotype)
            loop.epochs_run += 1
            prev_genotype = metrics["genotype"]
            st.history.append(metrics)
            state = {"state": st.state_dict(), "config": cfg.to_dict(),
                     "val_iter": val.state_dict() if val is not None else {},
                     "rng": ckpt.rng_state()}
            ckpt.save(state, ckpt_path)
            write_outputs(out, st, metrics, loop.genotype, loop.probs)
            if tb is not None:
                tb.epoch(metrics["epoch"], metrics, st.model.op_probs(), list(st.space.ops),
                         cfg.log.histograms, st.space.edges)
            if report is not None:
                report(metrics, ckpt_path)
            if metrics.get("early_stop"):
                log(f"early stop after epoch {metrics['epoch']}: {metrics['early_stop']}")
                break
    finally:
        if tb is not None:
            tb.close()
    return metrics
