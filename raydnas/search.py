"""One complete, resumable supernet search: ``run_search(config, out_dir)``.

This is the one place where the four method axes meet. Per weight step::

    if schedule.wants_step(st):                       # may update schedule state
        α.grad ← gradient.arch_grad(st, train_batch, next val batch)   (α only)
        α-optimizer step; activation/regularizer hooks
    weight step on the train batch (clip, SGD); schedule.observe(‖∇w‖² before clipping)
    activation.after_weight_step (e.g. CRB pruning)

Single-level estimators (``gradient.joint``) take α's gradient from the weight step's backward.
Per epoch: discretize, measure supernet and derived cell on the val split (the protocol of
:mod:`raydnas.measure`), log, checkpoint, report. Output directory: ``config.yaml``, ``split.json``, ``checkpoint.pt``, ``metrics.jsonl``,
``genotype.txt``, ``final.json``, ``tb/``.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import yaml
from torch import nn

from . import allocator
from . import checkpoint as ckpt
from .config import DEFAULT_BN_IMAGES, ExperimentConfig, check_bn_images, create_axis
from .data import Batches, Cycle, Dataset, load_dataset, load_or_make_split
from .errors import ConfigError
from .genotype import derive
from .measure import Measurer, bn_indices
from .metrics import (DECIDED_MARGIN, alpha_entropy, alpha_margins, derived_params,
                      distance_to_discrete, param_free_ops)
from .network import from_supernet
from .spaces import load_space
from .supernet import Supernet

Report = Callable[[dict, Path], None]


class NonFiniteLoss(RuntimeError):
    """The search diverged (NaN or inf loss)."""


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto`` → CUDA when available, else CPU; a CUDA device that is not there is an error."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError("--device", "device", device, "auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and (not torch.cuda.is_available()
                               or (dev.index or 0) >= torch.cuda.device_count()):
        raise ConfigError("--device", "device", device,
                          f"a visible CUDA device ({torch.cuda.device_count()} visible); use cpu or auto")
    return dev


class SearchState:
    """Everything a search step touches; the axes read what they need from it."""

    def __init__(self, cfg: ExperimentConfig, device: torch.device,
                 dataset: Dataset | None = None) -> None:
        """``dataset`` replaces the one ``cfg.data`` names (benchmarks feed synthetic images)."""
        self.cfg, self.device = cfg, device
        allocator.tune()  # keep freed activation memory for the next step (raydnas/allocator.py)
        ckpt.seed_everything(cfg.seed)
        d = cfg.data
        try:
            self.dataset = dataset or load_dataset(d.dataset, d.root, d.download, d.augment,
                                                   d.image_size)
        except ConfigError as e:  # name the config file the data settings came from
            raise ConfigError(cfg.source, e.key, e.value, e.allowed) from None
        self.activation = create_axis("activation", cfg.activation, cfg.source)
        self.gradient = create_axis("gradient", cfg.gradient, cfg.source)
        self.schedule = create_axis("schedule", cfg.schedule, cfg.source)
        self.regularizer = create_axis("regularizer", cfg.regularizer, cfg.source)
        space = load_space(cfg.space)
        self.model = Supernet(space, self.activation, self.dataset.num_classes,
                              self.dataset.in_channels, cfg.model.channels, cfg.model.cells,
                              seed=cfg.seed).to(device)
        self.space = self.model.space
        self.criterion = nn.CrossEntropyLoss()
        o = cfg.optim
        #: the weight parameters, listed once (walking the module tree each step costs ~3 ms)
        self.weights = self.model.weight_parameters()
        self.w_optimizer = torch.optim.SGD(self.weights, lr=o.w_lr,
                                           momentum=o.w_momentum, nesterov=o.w_nesterov,
                                           weight_decay=o.w_weight_decay)
        if o.a_optimizer == "adam":
            self.a_optimizer = torch.optim.Adam(self.model.arch_parameters(), lr=o.a_lr,
                                                betas=tuple(o.a_betas),
                                                weight_decay=o.a_weight_decay)
        else:
            self.a_optimizer = torch.optim.SGD(self.model.arch_parameters(), lr=o.a_lr,
                                               weight_decay=o.a_weight_decay)
        self.lr_scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.w_optimizer, T_max=cfg.epochs, eta_min=o.w_lr_min)
        self.epoch = 0            # epochs completed
        self.step = 0             # weight steps taken, all epochs
        self.alpha_steps = 0      # α steps taken, all epochs
        self.steps_per_epoch = 1
        self.history: list[dict] = []
        for part in (self.activation, self.gradient, self.schedule, self.regularizer):
            if hasattr(part, "setup"):
                part.setup(self)

    # -- what the axes use --------------------------------------------------------------------
    @property
    def lr(self) -> float:
        """The current weight learning rate (ξ of DARTS, γ of iDARTS)."""
        return self.w_optimizer.param_groups[0]["lr"]

    @property
    def progress(self) -> float:
        """Fraction of the search done, t/T in [0, 1] (ticks once per weight step)."""
        return min(1.0, self.step / (self.cfg.epochs * self.steps_per_epoch))

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.criterion(self.model(x), y)

    def arch_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The α objective: criterion plus the regularizer's penalty."""
        return self.loss(x, y) + self.regularizer.penalty(self)

    # -- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "w_optimizer": self.w_optimizer.state_dict(),
            "a_optimizer": self.a_optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "axes": {"activation": self.activation.state_dict(),
                     "gradient": self.gradient.state_dict(),
                     "schedule": self.schedule.state_dict(),
                     "regularizer": self.regularizer.state_dict()},
            "counters": {"epoch": self.epoch, "step": self.step, "alpha_steps": self.alpha_steps},
            "history": self.history,
        }

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.model.load_state_dict(s["model"])
        self.w_optimizer.load_state_dict(s["w_optimizer"])
        self.a_optimizer.load_state_dict(s["a_optimizer"])
        self.lr_scheduler.load_state_dict(s["lr_scheduler"])
        for name, part in (("activation", self.activation), ("gradient", self.gradient),
                           ("schedule", self.schedule), ("regularizer", self.regularizer)):
            part.load_state_dict(s["axes"][name])
        c = s["counters"]
        self.epoch, self.step, self.alpha_steps = c["epoch"], c["step"], c["alpha_steps"]
        self.history = list(s["history"])


def _to(batch, device):
    x, y = batch
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def train_step(st: SearchState, batch, val: Cycle | None) -> tuple[float, int]:
    """One weight step, preceded by an α step when the schedule asks. Returns (loss, correct)."""
    model, grad = st.model, st.gradient
    alphas = model.arch_parameters()
    stepping = st.schedule.wants_step(st)
    if stepping and not grad.joint:
        vb = _to(val.next(), st.device) if grad.needs_val else None
        st.a_optimizer.zero_grad(set_to_none=True)
        grad.arch_grad(st, batch, vb)
        _arch_update(st)
    joint = stepping and grad.joint
    st.w_optimizer.zero_grad(set_to_none=True)
    if joint:
        st.a_optimizer.zero_grad(set_to_none=True)
    for a in alphas:  # the weight step needs no α gradient unless single-level
        a.requires_grad_(joint)
    try:
        x, y = batch
        logits = model(x)
        loss = st.criterion(logits, y)
        total = loss + st.regularizer.penalty(st) if joint else loss
        total.backward()
    finally:
        for a in alphas:
            a.requires_grad_(True)
    if not torch.isfinite(loss):
        raise NonFiniteLoss(f"non-finite training loss {float(loss)} at epoch {st.epoch}, "
                            f"step {st.step}")
    weights = st.weights
    if st.schedule.needs_grad_norm:
        sq = torch.stack([p.grad.pow(2).sum() for p in weights if p.grad is not None]).sum()
        st.schedule.observe(st, float(sq))
    nn.utils.clip_grad_norm_(weights, st.cfg.optim.w_grad_clip)
    st.w_optimizer.step()
    if joint:
        _arch_update(st)
    st.activation.after_weight_step(model)
    st.step += 1
    return float(loss.detach()), int((logits.argmax(1) == y).sum())


def _arch_update(st: SearchState) -> None:
    st.a_optimizer.step()
    st.alpha_steps += 1
    st.activation.after_arch_step(st.model)
    st.regularizer.after_arch_step(st)


def _check_resume(saved: dict, cfg: ExperimentConfig, out_dir: Path) -> None:
    now = cfg.to_dict()
    for k in sorted(set(saved) | set(now)):
        if k in ("log", "sweep", "optuna", "evaluate", "measure"):  # none changes the search
            continue
        if saved.get(k) != now.get(k):
            raise ConfigError(cfg.source, k, now.get(k),
                              f"the checkpoint in {out_dir} was made with {k} = {saved.get(k)!r}; "
                              "use another --out directory or --fresh")


def run_search(cfg: ExperimentConfig, out_dir: str | Path, *, report: Report | None = None,
               resume: bool = True, device: str | torch.device | None = "auto",
               restore: str | Path | None = None, threads: int | None = None,
               log: Callable[[str], None] | None = None,
               stop_after_epochs: int | None = None, progress: bool = False) -> dict[str, Any]:
    """Run (or continue) one search; returns the last epoch's metrics.

    Args:
        cfg: a validated experiment config.
        out_dir: where checkpoints, metrics, genotype and TensorBoard logs go.
        report: called after every epoch with the metrics and the checkpoint's path.
        resume: continue from ``out_dir/checkpoint.pt`` if it exists.
        restore: continue from this checkpoint file instead (e.g. one Ray Tune handed back).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``, ...
        threads: torch intra-op threads.
        stop_after_epochs: stop (resumably) once this many epochs are complete.
        progress: a progress bar with ETAs on a terminal (stderr a TTY) instead of step lines.
    """
    log = log or (lambda s: print(s, flush=True))
    out = Path(out_dir)
    if threads:
        torch.set_num_threads(threads)
    dev = resolve_device(device)  # bad device or data: an error before any directory exists
    st = SearchState(cfg, dev)
    fresh_dir = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _run(st, cfg, out, dev, report, resume, restore, log, stop_after_epochs,
                    progress)
    except ConfigError:
        # a setup error found only now (split sizes): leave nothing behind, never finished work
        if fresh_dir and not (out / ckpt.CHECKPOINT_NAME).exists():
            shutil.rmtree(out, ignore_errors=True)
        raise


def _run(st: SearchState, cfg: ExperimentConfig, out: Path, dev: torch.device,
         report: Report | None, resume: bool, restore: str | Path | None, log,
         stop_after_epochs: int | None, progress: bool) -> dict[str, Any]:
    n = len(st.dataset)
    split = load_or_make_split(out / "split.json", n, cfg.data.val_fraction, cfg.seed)
    bs = cfg.data.batch_size
    train_b = Batches(st.dataset, split["train"], bs, cfg.seed, True, cfg.data.num_workers)
    val_eval_idx = split["val"] or split["train"]
    val_b = Batches(st.dataset, val_eval_idx, bs, cfg.seed + 1, True, cfg.data.num_workers)
    if len(train_b) == 0 or (st.gradient.needs_val and len(val_b) == 0):
        raise ConfigError(cfg.source, "data.batch_size", bs,
                          f"at most the split sizes ({len(split['train'])} train, "
                          f"{len(split['val'])} val)")
    st.steps_per_epoch = len(train_b)
    val = Cycle(val_b) if split["val"] else None
    ms = cfg.measure
    n_bn = ms.bn_images if ms.bn_images is not None else min(DEFAULT_BN_IMAGES,
                                                             len(split["train"]))
    check_bn_images(cfg, len(split["train"]))
    measurer = Measurer(st.dataset, bn_indices(split["train"], n_bn, cfg.seed), val_b, bs, dev,
                        ms.samples, cfg.seed)
    loop = _Loop(train_b, val_b, val, measurer,
                 Batches(st.dataset, split["train"], bs, cfg.seed + 2, True, cfg.data.num_workers),
                 interactive=progress and sys.stderr.isatty(), started=time.perf_counter())

    ckpt_path = out / ckpt.CHECKPOINT_NAME
    source = Path(restore) if restore else (ckpt_path if resume and ckpt_path.is_file() else None)
    if source is not None:
        saved, source = ckpt.load_or_previous(source, map_location=dev, log=log)
        _check_resume(saved["config"], cfg, out)
        st.load_state_dict(saved["state"])
        if val is not None:
            val.load_state_dict(saved["val_iter"])
        ckpt.set_rng_state(saved["rng"])
        done = st.epoch >= cfg.epochs or (st.history and st.history[-1].get("early_stop"))
        if done:
            log(f"already finished: {out} holds all {st.epoch} epoch(s) of this search "
                "(nothing to do; --fresh starts over)")
        else:
            log(f"resuming from {source} after epoch {st.epoch}/{cfg.epochs}")
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    metrics = st.history[-1] if st.history else {}
    tb = None
    if cfg.log.tensorboard and st.epoch < cfg.epochs and not metrics.get("early_stop"):
        from .tblog import TBLogger  # a finished search opens no new event file

        tb = TBLogger(out / "tb", purge_step=st.epoch + 1 if st.epoch else None)
    prev_genotype = metrics.get("genotype")
    try:
        while st.epoch < cfg.epochs and not metrics.get("early_stop"):
            if stop_after_epochs is not None and st.epoch >= stop_after_epochs:
                break
            metrics = _epoch(st, loop, log, prev_genotype)
            loop.epochs_run += 1
            prev_genotype = metrics["genotype"]
            st.history.append(metrics)
            state = {"state": st.state_dict(), "config": cfg.to_dict(),
                     "val_iter": val.state_dict() if val is not None else {},
                     "rng": ckpt.rng_state()}
            ckpt.save(state, ckpt_path)
            _write_outputs(out, st, metrics)
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


@dataclass
class _Loop:
    """The batches and the measurer of one run."""

    train: Batches
    val_eval: Batches  # every val image once (measurement)
    val: Cycle | None  # the α steps' val batches
    measurer: Measurer
    tune: Batches  # fine-tuning of the derived network (discrete_val_acc_tuned)
    interactive: bool = False  # a progress bar with ETAs instead of step lines (a terminal)
    started: float = 0.0
    epochs_run: int = 0


def _progress(loop: _Loop, st: SearchState):
    """A tqdm bar over the epoch's steps, with the ETA of the epoch and of the whole search."""
    from tqdm import tqdm

    cfg = st.cfg
    desc = f"epoch {st.epoch + 1}/{cfg.epochs}"
    if loop.epochs_run:
        per = (time.perf_counter() - loop.started) / loop.epochs_run
        left = per * (cfg.epochs - st.epoch)
        desc += f" (search ETA {int(left // 60)}:{int(left % 60):02d})"
    return tqdm(total=len(loop.train), desc=desc, leave=False, file=sys.stderr,
                dynamic_ncols=True, mininterval=0.5)


def _epoch(st: SearchState, loop: _Loop, log, prev_genotype: str | None) -> dict[str, Any]:
    cfg, model = st.cfg, st.model
    train_b, val = loop.train, loop.val
    t0 = time.perf_counter()
    a0 = st.alpha_steps
    st.activation.start_epoch(st.epoch, cfg.epochs)
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    every = cfg.log.print_every
    bar = _progress(loop, st) if loop.interactive else None
    for i, batch in enumerate(train_b.iterate(st.epoch)):
        batch = _to(batch, st.device)
        loss, c = train_step(st, batch, val)
        loss_sum += loss * len(batch[1])
        correct += c
        seen += len(batch[1])
        if bar is not None:
            bar.set_postfix_str(f"loss {loss_sum / seen:.3f} acc {correct / seen:.3f} "
                                f"α steps {st.alpha_steps}", refresh=False)
            bar.update(1)
        elif every and ((i + 1) % every == 0 or i + 1 == len(train_b)):
            log(f"epoch {st.epoch + 1}/{cfg.epochs} step {i + 1}/{len(train_b)} "
                f"loss {loss_sum / seen:.4f} acc {correct / seen:.3f} "
                f"alpha_steps {st.alpha_steps}")
    if bar is not None:
        bar.close()
    st.lr_scheduler.step()
    st.epoch += 1
    probs = {c: p.detach() for c, p in model.op_probs().items()}
    genotype, masks = derive(probs, st.space)
    acc = loop.measurer.supernet(model, masks)
    val_loss, val_acc, disc_acc = acc["val_loss"], acc["val_acc"], acc["discrete_val_acc"]
    g = str(genotype)
    m = {
        "epoch": st.epoch,
        "train_loss": loss_sum / max(seen, 1),
        "train_acc": correct / max(seen, 1),
        "val_loss": val_loss,
        "val_acc": val_acc,
        "discrete_val_acc": disc_acc,
        "discrete_val_loss": acc["discrete_val_loss"],
        "discretization_gap": val_acc - disc_acc,
        "distance_to_discrete": distance_to_discrete(probs, masks),
        "alpha_entropy": alpha_entropy(probs),
        **_margin_metrics(alpha_margins(probs, masks, tuple(
            k for k, o in enumerate(st.space.ops) if o in st.space.exclude))),
        "genotype": g,
        "genotype_changed": prev_genotype is not None and g != prev_genotype,
        "arch_params": derived_params(model, masks),
        "param_free_ops": param_free_ops(genotype),
        "alpha_steps": st.alpha_steps,
        "alpha_steps_epoch": st.alpha_steps - a0,
        "lr": st.lr,
        "epoch_seconds": time.perf_counter() - t0,
    }
    for part in (st.activation, st.gradient, st.schedule, st.regularizer):
        if hasattr(part, "epoch_metrics"):
            m.update(part.epoch_metrics(st, genotype, m))
    if not math.isfinite(m["val_loss"]):
        raise NonFiniteLoss(f"non-finite validation loss at epoch {st.epoch}")
    tuned = ""
    if cfg.measure.tune_epochs and (st.epoch >= cfg.epochs or m.get("early_stop")):
        t1 = time.perf_counter()
        net = from_supernet(model, genotype)
        m.update(loop.measurer.tuned(net, loop.tune, cfg.measure.tune_epochs,
                                     cfg.measure.tune_lr or cfg.optim.w_lr, cfg.optim))
        del net
        m["tune_seconds"] = time.perf_counter() - t1
        tuned = f" tuned {m['discrete_val_acc_tuned']:.3f}"
    log(f"epoch {st.epoch}/{cfg.epochs} val_acc {val_acc:.3f} discrete_val_acc {disc_acc:.3f} "
        f"gap {m['discretization_gap']:+.3f}{tuned} dist {m['distance_to_discrete']:.3f} "
        f"margin {m['alpha_margin_mean']:.3f}{'' if m['decided'] else ' (undecided)'} "
        f"({m['epoch_seconds']:.1f}s)\n  genotype {g}")
    return m


def _margin_metrics(margins: list[float]) -> dict[str, Any]:
    """``alpha_margin_mean``/``_min`` over the derived cell's edges and ``decided``."""
    mean = sum(margins) / len(margins) if margins else 0.0
    return {"alpha_margin_mean": mean, "alpha_margin_min": min(margins, default=0.0),
            "decided": mean >= DECIDED_MARGIN}


def _write_outputs(out: Path, st: SearchState, metrics: dict) -> None:
    with open(out / "metrics.jsonl.tmp", "w") as f:
        for m in st.history:
            f.write(json.dumps(m) + "\n")
    (out / "metrics.jsonl.tmp").replace(out / "metrics.jsonl")
    probs = st.model.op_probs()
    genotype, _ = derive(probs, st.space)
    text = f"{genotype.to_darts()}\n"
    if genotype.inputs == 1:
        text += f"{genotype.to_nb201()}\n"
    (out / "genotype.txt").write_text(text)
    final = {
        "metrics": metrics,
        "method": st.cfg.method(),
        "seed": st.cfg.seed,
        "space": st.space.name,
        "ops": list(st.space.ops),
        "edges": st.space.edges,
        "genotype": {"darts": genotype.to_darts(),
                     "nb201": genotype.to_nb201() if genotype.inputs == 1 else None,
                     "cells": {c: [list(map(list, node)) for node in nodes]
                               for c, nodes in genotype.cells.items()}},
        "op_weights": {c: p.detach().cpu().tolist() for c, p in probs.items()},
        "complete": st.epoch >= st.cfg.epochs or bool(metrics.get("early_stop")),
        "early_stop": metrics.get("early_stop"),
    }
    (out / "final.json.tmp").write_text(json.dumps(final, indent=1))
    (out / "final.json.tmp").replace(out / "final.json")
