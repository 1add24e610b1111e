"""Train the stand-alone network of a found cell from scratch and measure it on the test split.

``run_evaluation(job, out_dir)`` is resumable like a search: a checkpoint after every epoch
(weights, optimizer, LR schedule, epoch, history, RNG states), so running it again continues and
a finished evaluation just returns its result. Output directory: ``job.json`` (what is trained),
``checkpoint.pt``, ``metrics.jsonl`` (one line per epoch), ``final.json`` and ``tb/``.

This is the only code in raydnas that reads a dataset's test split. The network trains on the
whole training split (search-train and search-val together, as DARTS's ``train.py`` does), less
the protocol's fixed validation part (``val_fraction``: the same images for every cell and seed,
drawn with :data:`VAL_SEED`), on which it reports ``eval_val_acc`` every epoch.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from .. import checkpoint as ckpt
from ..config.sections import DataConfig
from ..data.datasets import IMAGE_SIDE, Batches, Dataset, load_dataset, make_split
from ..data.images import TensorImages
from ..device import resolve_device
from ..errors import ConfigError
from ..model.costs import network_macs
from ..model.data_mix import with_input
from ..model.genotype import Genotype
from ..model.network import DiscreteNetwork
from ..model.spaces import SearchSpace
from ..resumable import ResumableRun, restore_from, run_epochs
from ..search.measure import evaluate
from .protocol import Protocol

Report = Callable[[dict, Path], None]

#: the seed of the protocol's validation part: fixed, so every cell is scored on the same images
VAL_SEED = 20_201


@dataclass
class EvalJob:
    """One evaluation: a cell, where it was found, how to train it, and with which seed.

    ``meta`` travels into every metrics line (the searched trial's id, method and seed)."""

    genotype: Genotype
    space: SearchSpace
    data: DataConfig
    protocol: Protocol
    seed: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        g = self.genotype
        return {"genotype": str(g), "genotype_darts": g.to_darts(), "space": self.space.name,
                "dataset": self.data.dataset, "protocol": self.protocol.to_dict(),
                "eval_seed": self.seed, **self.meta}


def check_job(job: EvalJob, where: str = "raydnas evaluate") -> None:
    """Errors that need no data: the protocol's macro must be the cell's space's."""
    p, s = job.protocol, job.space
    if p.macro != s.macro:
        raise ConfigError(where, "protocol", p.name,
                          f"a protocol for the {s.macro} macro: the cell comes from space "
                          f"{s.name!r} ({s.macro} macro); use "
                          + ("darts, darts_short or darts_cpu" if s.macro == "darts" else
                             "nb201 or nb201_short"))
    bad = sorted({op for op in job.genotype.ops() if op not in s.ops and op != "none"})
    if bad:  # named first: the genotype itself may be long
        raise ConfigError(where, "genotype op", bad[0] if len(bad) == 1 else bad,
                          f"not an op of space {s.name!r}; its ops: {', '.join(s.ops)} "
                          "(none: a missing edge)")
    missing = [ct for ct in s.cell_types if ct not in job.genotype.cells]
    if missing or job.genotype.inputs != s.inputs or \
            any(len(n) != s.nodes for n in job.genotype.cells.values()):
        raise ConfigError(where, "genotype", str(job.genotype),
                          f"a cell of space {s.name!r} ({s.inputs} input node(s), {s.nodes} "
                          f"intermediate nodes, cell types {', '.join(s.cell_types)})")
    side = job.data.image_size or IMAGE_SIDE.get(job.data.dataset)
    if side is not None:
        check_cutout(p, side, job.data.dataset, where)




def check_cutout(p: Protocol, side: int, dataset: str, where: str = "raydnas evaluate") -> None:
    """Cutout must be smaller than the images (``side`` pixels); else one ConfigError line."""
    if p.cutout and p.cutout >= side:
        raise ConfigError(where, "cutout", p.cutout,
                          f"less than the {side}-pixel images of {dataset} (or 0 for none; "
                          "--set cutout=0)")


def build_network(job: EvalJob, num_classes: int, in_channels: int) -> DiscreteNetwork:
    """The protocol's network of the cell: affine ops, no BN after pooling (DARTS's and
    NAS-Bench-201's evaluation networks), DARTS's auxiliary head when the protocol weights it."""
    p = job.protocol
    return DiscreteNetwork(job.space, job.genotype, num_classes, in_channels,
                           channels=p.channels, cells=p.cells, affine=True, pool_bn=False,
                           auxiliary=p.auxiliary_weight > 0 and p.macro == "darts",
                           reduction=p.reduction)


def count_params(net: nn.Module) -> int:
    """Weights of the network without its auxiliary head (what DARTS reports)."""
    return sum(p.numel() for n, p in net.named_parameters() if not n.startswith("auxiliary_head"))


def cutout(x: torch.Tensor, length: int, generator: torch.Generator) -> torch.Tensor:
    """DARTS's cutout (``utils.Cutout``) per image: rows and columns
    [c − length/2, c + length/2) around a uniformly random centre c set to 0, clipped at the
    borders. ``generator`` (CPU) draws the centres."""
    n, _, h, w = x.shape
    cy = torch.randint(0, h, (n, 1), generator=generator).to(x.device)
    cx = torch.randint(0, w, (n, 1), generator=generator).to(x.device)
    ys = torch.arange(h, device=x.device)[None, :]
    xs = torch.arange(w, device=x.device)[None, :]
    rows = (ys >= cy - length // 2) & (ys < cy + length // 2)
    cols = (xs >= cx - length // 2) & (xs < cx + length // 2)
    keep = ~(rows[:, :, None] & cols[:, None, :])
    return x * keep[:, None].to(x.dtype)


def load_data(job: EvalJob, where: str = "raydnas evaluate") -> tuple[Dataset, Dataset]:
    """The training and test splits of the job's dataset (test: a ConfigError if there is none)."""
    d = job.data
    if d.dataset == "imagefolder" and not d.test_root:
        raise ConfigError(where, "data.test_root", d.test_root,
                          "a directory of test images in class folders: imagefolder has no "
                          "test split otherwise")
    if d.dataset == "imagefolder" and not Path(d.test_root).is_dir():
        raise ConfigError(where, "data.test_root", d.test_root, "an existing directory")
    train = load_dataset(d.dataset, d.root, d.download, d.augment, d.image_size)
    test = load_dataset(d.dataset, d.root, d.download, d.augment, d.image_size, split="test",
                        test_root=d.test_root)
    return train, test


def _image_side(ds: Dataset) -> int:
    x = ds.data[0] if isinstance(ds.data, tuple) else ds.data[0][0]
    return min(x.shape[-2:])


def run_evaluation(job: EvalJob, out_dir: str | Path, *, report: Report | None = None,
                   device: str | torch.device | None = "auto", resume: bool = True,
                   restore: str | Path | None = None, threads: int | None = None,
                   log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train ``job``'s network and return the last epoch's metrics (see the module docstring).

    ``report(metrics, checkpoint_path)`` is called after every epoch (Ray Tune's report).
    ``threads``: torch CPU threads, default 1 (what an evaluation trial of 1 CPU uses, so that a
    cell evaluated alone reproduces the study's number); recorded in every epoch's metrics."""
    log = log or (lambda s: print(s, flush=True))
    check_job(job)
    dev = resolve_device(device)
    train_ds, test_ds = load_data(job)
    for ds in (train_ds, test_ds):
        if isinstance(ds.data, TensorImages):  # batches are cut on the device
            ds.data.to(dev)
    check_cutout(job.protocol, _image_side(train_ds), job.data.dataset)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    threads = 1 if threads is None else threads  # an evaluation trial's count (1 CPU)
    torch.set_num_threads(threads)
    run = EvalRun(job, train_ds, test_ds, dev, out, threads, log)
    restore_from(run, out, resume=resume, restore=restore, map_location=dev, log=log)
    (out / "job.json").write_text(json.dumps(job.describe(), indent=1))
    metrics = run_epochs(run, out, report=report, log=log)
    if not (out / "final.json").is_file():
        run.write_outputs(metrics)
    return metrics


class EvalRun(ResumableRun):
    """An evaluation as a :class:`~raydnas.resumable.ResumableRun`: the network, its SGD with
    DARTS's cosine schedule, cutout's RNG, and the train/val/test batches."""

    def __init__(self, job: EvalJob, train_ds: Dataset, test_ds: Dataset, dev: torch.device,
                 out: Path, threads: int, log) -> None:
        p = self.protocol = job.protocol
        self.job, self.dev, self.out, self.threads, self.log = job, dev, out, threads, log
        self.total_epochs, self.history = p.epochs, []
        ckpt.seed_everything(job.seed)  # before the network: its initial weights
        self.net = with_input(build_network(job, train_ds.num_classes, train_ds.in_channels)
                              .to(dev), job.meta.get("data_input"))  # the data axis' choice
        self.n_params = count_params(self.net)  # and its multiply-adds on one training image
        self.n_macs = network_macs(self.net, train_ds.example().to(dev))
        self.opt = torch.optim.SGD(self.net.parameters(), lr=p.lr, momentum=p.momentum,
                                   nesterov=p.nesterov and p.momentum > 0,
                                   weight_decay=p.weight_decay)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=p.epochs,
                                                                eta_min=p.lr_min)
        self.split = make_split(len(train_ds), p.val_fraction, VAL_SEED) if p.val_fraction \
            else {"train": list(range(len(train_ds))), "val": []}
        workers = job.data.num_workers
        self.train_b = Batches(train_ds, self.split["train"], p.batch_size, job.seed, False,
                               workers)
        self.val_b = Batches(train_ds, self.split["val"], p.batch_size, job.seed, False,
                             workers) if self.split["val"] else None
        self.test_b = Batches(test_ds, list(range(len(test_ds))), p.batch_size, job.seed, False,
                              workers)
        self.test_n = len(test_ds)
        self.gen = torch.Generator().manual_seed(job.seed * 1_000_003 + 5)

    def run_epoch(self) -> dict[str, Any]:
        p, net, opt, dev, epoch = self.protocol, self.net, self.opt, self.dev, self.epoch
        t0 = time.perf_counter()
        net.drop_path_prob = p.drop_path * epoch / p.epochs  # DARTS train.py's ramp
        net.train()
        loss_sum, correct, seen = 0.0, 0, 0
        for x, y in self.train_b.iterate(epoch):
            if len(y) < 2:  # BatchNorm needs two samples
                continue
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            if p.cutout:
                x = cutout(x, p.cutout, self.gen)
            opt.zero_grad(set_to_none=True)
            out_ = net(x)
            logits, aux = out_ if isinstance(out_, tuple) else (out_, None)
            loss = nn.functional.cross_entropy(logits, y)
            if aux is not None:
                loss = loss + p.auxiliary_weight * nn.functional.cross_entropy(aux, y)
            loss.backward()
            if p.grad_clip:
                nn.utils.clip_grad_norm_(net.parameters(), p.grad_clip)
            opt.step()
            loss_sum += float(loss.detach()) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
        lr = opt.param_groups[0]["lr"]
        self.sched.step()
        net.eval()
        test_loss, test_acc = evaluate(net, self.test_b.sequential(), dev)
        val = evaluate(net, self.val_b.sequential(), dev) if self.val_b is not None else None
        m = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1),
             "train_acc": correct / max(seen, 1), "test_loss": test_loss,
             "test_acc": test_acc, "test_n": self.test_n,
             "eval_val_loss": val[0] if val else None, "eval_val_acc": val[1] if val else None,
             "eval_val_n": len(self.split["val"]), "eval_params": self.n_params,
             "eval_macs": self.n_macs, "lr": lr,
             "epoch_seconds": time.perf_counter() - t0, "protocol": p.name,
             "protocol_short": p.short, "eval_seed": self.job.seed, "threads": self.threads,
             **{k: v for k, v in self.job.meta.items() if not isinstance(v, (dict, list))}}
        self.log(f"[{p.label}] epoch {epoch + 1}/{p.epochs} train_acc {m['train_acc']:.3f} "
                 f"test_acc {test_acc:.4f} ({m['epoch_seconds']:.1f}s)")
        return m

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.net.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "epoch": self.epoch,
                "history": self.history, "job": _plain(self.job.describe()),
                "cutout_rng": self.gen.get_state(), "rng": ckpt.rng_state()}

    def load_state_dict(self, saved: dict[str, Any], source: Path) -> None:
        if saved["job"] != _plain(self.job.describe()):
            raise ConfigError("raydnas evaluate", "--out", str(self.out),
                              "a directory of the same evaluation (its checkpoint was made for "
                              "another cell, protocol or seed); use another --out or --fresh")
        self.net.load_state_dict(saved["model"])
        self.opt.load_state_dict(saved["optimizer"])
        self.sched.load_state_dict(saved["scheduler"])
        self.history = list(saved["history"])
        self.gen.set_state(saved["cutout_rng"])
        ckpt.set_rng_state(saved["rng"])

    def write_outputs(self, record: dict[str, Any]) -> None:
        _write_outputs(self.out, self.job, self.history, complete=self.finished())

    def open_log(self, purge_step: int | None) -> Any:
        return SummaryWriter(str(self.out / "tb"), purge_step=purge_step)

    def log_epoch(self, writer: Any, record: dict[str, Any]) -> None:
        for k in ("train_loss", "train_acc", "eval_val_acc", "test_loss", "test_acc", "lr"):
            if record[k] is not None:
                writer.add_scalar(f"evaluate/{k}", record[k], record["epoch"])
        writer.flush()


def _plain(d: Any) -> Any:
    """JSON-able form (what a checkpoint stores and compares)."""
    return json.loads(json.dumps(d))


def _write_outputs(out: Path, job: EvalJob, history: list[dict], complete: bool) -> None:
    with open(out / "metrics.jsonl.tmp", "w") as f:
        for m in history:
            f.write(json.dumps(m) + "\n")
    (out / "metrics.jsonl.tmp").replace(out / "metrics.jsonl")
    final = {"metrics": history[-1] if history else {}, **job.describe(), "complete": complete}
    (out / "final.json.tmp").write_text(json.dumps(final, indent=1))
    (out / "final.json.tmp").replace(out / "final.json")
