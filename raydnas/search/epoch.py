"""One epoch of a search (train, derive, measure, log) and the files written after it."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data.datasets import Batches, Cycle
from ..model.data_mix import input_dict
from ..model.genotype import derive, masks_of, parse_genotype
from ..model.network import from_supernet
from ..stop import Stop
from . import (
    select_random,  # noqa: F401  (registers random_ws)
    stopping,
)
from .measure import Measurer
from .metrics import (
    DECIDED_MARGIN,
    alpha_entropy,
    alpha_margins,
    cell_costs,
    data_metrics,
    derived_params,
    distance_to_discrete,
    param_free_ops,
)
from .selection import SELECTIONS
from .state import NonFiniteLoss, SearchState, _to, train_step

# Lazy imports: tqdm loads only for a progress bar on a terminal.


@dataclass
class Loop:
    """The batches and the measurer of one run."""

    train: Batches
    val_eval: Batches  # every val image once (measurement)
    val: Cycle | None  # the α steps' val batches
    measurer: Measurer
    tune: Batches  # fine-tuning of the derived network (discrete_val_acc_tuned)
    interactive: bool = False  # a progress bar with ETAs instead of step lines (a terminal)
    started: float = 0.0
    epochs_run: int = 0
    genotype: Any = None  # the last epoch's derived genotype and the a(α) it came from
    probs: dict[str, torch.Tensor] | None = None


def _progress(loop: Loop, st: SearchState):
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


def run_epoch(st: SearchState, loop: Loop, log, prev_genotype: str | None) -> dict[str, Any]:
    """One epoch in its named steps: train, derive and measure (the record), the stop
    decision, the final cell's selection and fine-tuning, the log line. Returns the record."""
    t0, a0 = time.perf_counter(), st.alpha_steps
    loss, acc = train_steps(st, loop, log)
    genotype, m = derive_and_measure(st, loop, prev_genotype, loss, acc, a0, t0)
    for part in st.parts.values():
        m.update(part.epoch_metrics(st, genotype, m))
    measure_hessian(st, loop, m)
    stop = stopping.decide(st, m, genotype)
    if stop is not None:
        genotype = apply_stop(st, loop, m, stop, genotype)
    if not math.isfinite(m["val_loss"]):
        raise NonFiniteLoss(f"non-finite validation loss at epoch {st.epoch}")
    if st.epoch >= st.cfg.epochs or stop is not None:
        finish(st, loop, m, genotype)
    log_epoch(st, m, log)
    return m


def train_steps(st: SearchState, loop: Loop, log) -> tuple[float, float]:
    """The epoch's weight (and α) steps, then the LR schedule's step; the epoch counter
    advances. Returns the epoch's mean training loss and accuracy."""
    cfg, model, train_b = st.cfg, st.model, loop.train
    model.aux_beta = cfg.model.aux_beta(st.epoch, cfg.epochs)
    for part in st.parts.values():
        part.start_epoch(st)
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    every = cfg.log.print_every
    bar = _progress(loop, st) if loop.interactive else None
    for i, batch in enumerate(train_b.iterate(st.epoch)):
        batch = _to(batch, st.device)
        loss, c = train_step(st, batch, loop.val)
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
    return loss_sum / max(seen, 1), correct / max(seen, 1)


def derive_and_measure(st: SearchState, loop: Loop, prev_genotype: str | None,
                       train_loss: float, train_acc: float, alpha_steps_before: int,
                       t0: float) -> tuple[Any, dict[str, Any]]:
    """Derive the cell from α, measure the supernet with and without it (the
    :mod:`~raydnas.search.measure` protocol) and read α's shape: the epoch's cell and record."""
    model = st.model
    probs = {c: p.detach() for c, p in model.op_probs().items()}
    genotype, masks = derive({c: w.detach() for c, w in model.derive_weights().items()},
                             st.space)
    loop.genotype, loop.probs = genotype, probs
    acc = loop.measurer.supernet(model, masks)
    g = str(genotype)
    m = {
        "epoch": st.epoch,
        "train_loss": train_loss,
        "train_acc": train_acc,
        "val_loss": acc["val_loss"],
        "val_acc": acc["val_acc"],
        "discrete_val_acc": acc["discrete_val_acc"],
        "discrete_val_loss": acc["discrete_val_loss"],
        "discretization_gap": acc["val_acc"] - acc["discrete_val_acc"],
        "distance_to_discrete": distance_to_discrete(probs, masks),
        "alpha_entropy": alpha_entropy(probs),
        **_margin_metrics(alpha_margins(probs, masks, tuple(
            k for k, o in enumerate(st.space.ops) if o in st.space.exclude))),
        "genotype": g,
        "genotype_changed": prev_genotype is not None and g != prev_genotype,
        "arch_params": derived_params(model, masks),
        **cell_costs(masks, st.latency_table(), st.flops_table(), st.data_index()),
        **data_metrics(model),
        "param_free_ops": param_free_ops(genotype),
        "alpha_steps": st.alpha_steps,
        "alpha_steps_epoch": st.alpha_steps - alpha_steps_before,
        "lr": st.lr,
        **({"aux_skip_beta": model.aux_beta} if st.cfg.model.aux_skip_beta else {}),
        "epoch_seconds": time.perf_counter() - t0,
    }
    return genotype, m


def measure_hessian(st: SearchState, loop: Loop, m: dict[str, Any]) -> None:
    """``hessian_eigenvalue`` (RobustDARTS's signal) on its epochs: after the code's 0-based
    epoch indices 0, every, 2·every, ... and the last."""
    every = st.cfg.measure.hessian_every
    if not every or ((st.epoch - 1) % every and st.epoch < st.cfg.epochs):
        return
    t0 = time.perf_counter()
    m["hessian_eigenvalue"] = loop.measurer.hessian_eigenvalue(st.model,
                                                               st.cfg.measure.hessian_iters)
    m["hessian_seconds"] = time.perf_counter() - t0


def apply_stop(st: SearchState, loop: Loop, m: dict[str, Any], stop: Stop,
               genotype: Any) -> Any:
    """Record ``stop`` in ``m``; returns the cell the search ends with. DARTS-ES names the cell
    the code returns (``early_stop_genotype``); with ``stop.hessian_rollback`` the record's
    ``genotype`` becomes it (its ``discrete_val_acc`` measured on the current supernet) and the
    stopping epoch's stays as ``genotype_at_stop``."""
    m.update(stop.record())
    if stop.cell_epoch is None:
        return genotype
    old = next(h for h in st.history if h["epoch"] == stop.cell_epoch)
    m["early_stop_genotype"] = old["genotype"]
    m["early_stop_genotype_epoch"] = old["epoch"]
    if not st.cfg.stop.hessian_rollback:
        return genotype
    g = parse_genotype(old["genotype"], nodes=st.space.nodes)
    _use_cell(st, loop, m, g, old["genotype"], masks_of(g, st.space), "genotype_at_stop")
    return g


def finish(st: SearchState, loop: Loop, m: dict[str, Any], genotype: Any) -> None:
    """At the search's end: the ``select`` rule's cell in place of the argmax one, and the
    derived network's fine-tuned accuracy (``measure.tune_epochs``)."""
    cfg = st.cfg
    if cfg.select.name != "argmax":
        genotype = _select(st, loop, m, genotype)
    if cfg.measure.tune_epochs:
        t1 = time.perf_counter()
        net = from_supernet(st.model, genotype)
        m.update(loop.measurer.tuned(net, loop.tune, cfg.measure.tune_epochs,
                                     cfg.measure.tune_lr or cfg.optim.w_lr, cfg.optim))
        del net
        m["tune_seconds"] = time.perf_counter() - t1


def log_epoch(st: SearchState, m: dict[str, Any], log) -> None:
    """The epoch's line: accuracies, gap, distance, margin, time and the derived cell."""
    tuned = f" tuned {m['discrete_val_acc_tuned']:.3f}" if "discrete_val_acc_tuned" in m else ""
    log(f"epoch {st.epoch}/{st.cfg.epochs} val_acc {m['val_acc']:.3f} discrete_val_acc "
        f"{m['discrete_val_acc']:.3f} gap {m['discretization_gap']:+.3f}{tuned} dist "
        f"{m['distance_to_discrete']:.3f} margin {m['alpha_margin_mean']:.3f}"
        f"{'' if m['decided'] else ' (undecided)'} ({m['epoch_seconds']:.1f}s)\n"
        f"  genotype {m['genotype']}")


def _select(st: SearchState, loop: Loop, m: dict[str, Any], genotype: Any) -> Any:
    """The ``select`` rule's final cell in place of the argmax one
    (:mod:`raydnas.search.selection`):
    the record's ``genotype`` and discrete metrics become the selected cell's."""

    t0 = time.perf_counter()
    sel = SELECTIONS.get(st.cfg.select.name)(st.cfg.select)
    probs = {c: w.detach() for c, w in st.model.derive_weights().items()}
    chosen, masks, extra = sel.select(st, loop, probs)
    m.update(extra)
    acc = _use_cell(st, loop, m, chosen, str(chosen), masks, "genotype_argmax")
    m.update({"selected_by": st.cfg.select.name, "val_acc_after_select": acc["val_acc"],
              "select_seconds": time.perf_counter() - t0})
    return chosen


def _use_cell(st: SearchState, loop: Loop, m: dict[str, Any], cell: Any, text: str,
              masks: dict[str, torch.Tensor], previous: str) -> dict[str, float]:
    """Make ``cell`` (its string ``text``, binary ``masks``) the record's result in place of
    the derived one, which is kept under ``previous``: the discrete metrics are measured on the
    current supernet. Returns that measurement."""
    acc = loop.measurer.supernet(st.model, masks)
    m.update({previous: m["genotype"], "genotype": text,
              "discrete_val_acc": acc["discrete_val_acc"],
              "discrete_val_loss": acc["discrete_val_loss"],
              "discretization_gap": m["val_acc"] - acc["discrete_val_acc"],
              "arch_params": derived_params(st.model, masks),
              **cell_costs(masks, st.latency_table(), st.flops_table(), st.data_index()),
              "param_free_ops": param_free_ops(cell)})
    loop.genotype = cell
    return acc


def _margin_metrics(margins: list[float]) -> dict[str, Any]:
    """``alpha_margin_mean``/``_min`` over the derived cell's edges and ``decided``."""
    mean = sum(margins) / len(margins) if margins else 0.0
    return {"alpha_margin_mean": mean, "alpha_margin_min": min(margins, default=0.0),
            "decided": mean >= DECIDED_MARGIN}


def write_outputs(out: Path, st: SearchState, metrics: dict, genotype: Any,
                  probs: dict[str, torch.Tensor]) -> None:
    """``metrics.jsonl``, ``genotype.txt`` and ``final.json`` of the epoch just finished.
    ``genotype.txt``: the cell in DARTS's form, in NAS-Bench-201's where the space has one
    input, and with a data axis a last comment line ``# data_config: {json}`` (the chosen
    input, also ``final.json``'s ``data_config``)."""
    with open(out / "metrics.jsonl.tmp", "w") as f:
        for m in st.history:
            f.write(json.dumps(m) + "\n")
    (out / "metrics.jsonl.tmp").replace(out / "metrics.jsonl")
    text = f"{genotype.to_darts()}\n"
    if genotype.inputs == 1:
        text += f"{genotype.to_nb201()}\n"
    if st.model.data_mixer is not None:  # a comment line: the lines above still parse
        chosen = st.model.data_mixer.choice(st.model.activation)
        text += f"# data_config: {json.dumps(input_dict(dataclasses.asdict(chosen)))}\n"
    (out / "genotype.txt").write_text(text)
    final = {
        "metrics": metrics,
        "method": st.cfg.method(),
        "seed": st.cfg.seed,
        "threads": st.cfg.threads,
        "space": st.space.name,
        "ops": list(st.space.ops),
        "edges": st.space.edges,
        "genotype": {"darts": genotype.to_darts(),
                     "nb201": genotype.to_nb201() if genotype.inputs == 1 else None,
                     "cells": {c: [list(map(list, node)) for node in nodes]
                               for c, nodes in genotype.cells.items()}},
        "op_weights": {c: p.detach().cpu().tolist() for c, p in probs.items()},
        **({"data_config": {**dataclasses.asdict(st.model.data_mixer.choice(
            st.model.activation)), "weights": {c.name: metrics.get(f"data_weight_{c.name}")
                                               for c in st.model.data_mixer.configs}}}
           if st.model.data_mixer is not None else {}),
        "complete": st.epoch >= st.cfg.epochs or bool(metrics.get("early_stop")),
        "early_stop": metrics.get("early_stop"),
    }
    (out / "final.json.tmp").write_text(json.dumps(final, indent=1))
    (out / "final.json.tmp").replace(out / "final.json")
