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
from ..device import resolve_device
from ..errors import ConfigError
from ..resumable import ResumableRun, restore_from, run_epochs
from .epoch import Loop, run_epoch, write_outputs
from .measure import Measurer, bn_indices
from .state import NonFiniteLoss, SearchState, train_step
from .tblog import TBLogger, run_hparams

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

    run = SearchRun(st, loop, val, out, log)
    saved = restore_from(run, out, resume=resume, restore=restore, map_location=dev, log=log)
    n_threads = _threads(cfg, threads, saved["config"] if saved else None, log)
    torch.set_num_threads(n_threads)
    cfg.threads = n_threads  # recorded: config.yaml, the checkpoint, final.json, TensorBoard
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return run_epochs(run, out, report=report, log=log, stop_after_epochs=stop_after_epochs)


class SearchRun(ResumableRun):
    """A search as a :class:`~raydnas.resumable.ResumableRun`: its state, batches and files."""

    def __init__(self, st: SearchState, loop: Loop, val: Cycle | None, out: Path, log) -> None:
        self.st, self.loop, self.val, self.out, self.log = st, loop, val, out, log
        self.total_epochs = st.cfg.epochs

    @property
    def history(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return self.st.history

    def run_epoch(self) -> dict[str, Any]:
        prev = self.history[-1]["genotype"] if self.history else None
        m = run_epoch(self.st, self.loop, self.log, prev)
        self.loop.epochs_run += 1
        return m

    def state_dict(self) -> dict[str, Any]:
        return {"state": self.st.state_dict(), "config": self.st.cfg.to_dict(),
                "val_iter": self.val.state_dict() if self.val is not None else {},
                "rng": ckpt.rng_state()}

    def load_state_dict(self, saved: dict[str, Any], source: Path) -> None:
        _check_resume(saved["config"], self.st.cfg, self.out)
        self.st.load_state_dict(saved["state"])
        if self.val is not None:
            self.val.load_state_dict(saved["val_iter"])
        ckpt.set_rng_state(saved["rng"])

    def write_outputs(self, record: dict[str, Any]) -> None:
        write_outputs(self.out, self.st, record, self.loop.genotype, self.loop.probs)

    def open_log(self, purge_step: int | None) -> Any:
        if not self.st.cfg.log.tensorboard:
            return None
        tb = TBLogger(self.out / "tb", purge_step=purge_step)
        tb.hparams(run_hparams(self.st.cfg))
        return tb

    def log_epoch(self, writer: Any, record: dict[str, Any]) -> None:
        cfg, st = self.st.cfg, self.st
        writer.epoch(record["epoch"], record, st.model.op_probs(), list(st.space.ops),
                     cfg.log.histograms, st.space.edges)
