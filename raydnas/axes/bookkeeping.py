"""MiLeNAS model-size bookkeeping (He et al., CVPR 2020, §3.3 and §5; ``cnn_count`` in
chaoyanghe/MiLeNAS ``train_milenas.py``).

After every epoch the derived cells' conv ops are counted per cell type (ops whose name contains
``conv``: sep/dil convs in the DARTS space, nor_conv in NAS-Bench-201). For each count tuple
(normal, reduce) the best validation accuracy is kept with its epoch and genotype, so one search
yields candidate architectures of several sizes. Optionally the search stops when the counts
reach a target (MiLeNAS: 6 conv ops in the normal cell, 0 in the reduction cell, CIFAR-10).
"""

from __future__ import annotations

from typing import Any

from ..stop import Reason, Stop
from .checks import require


def conv_counts(genotype: Any) -> list[int]:
    """Conv ops per cell type, in the genotype's cell order."""
    return [sum("conv" in op for node in nodes for op, _ in node)
            for nodes in genotype.cells.values()]


def _key(counts: list[int]) -> str:
    return ",".join(str(c) for c in counts)


class ModelSizeBook:
    """Best val accuracy per conv-count tuple, and the optional early stop.

    Args:
        early_stop_at: a conv-count tuple (one int per cell type) or a list of tuples; the search
            stops after the first epoch whose derived cells match one. Null: never stop.
    """

    def __init__(self, early_stop_at: list | None = None) -> None:
        targets: list[list[int]] = []
        if early_stop_at is not None:
            ok = isinstance(early_stop_at, list) and len(early_stop_at) > 0
            if ok and all(isinstance(x, int) and not isinstance(x, bool) for x in early_stop_at):
                targets = [list(early_stop_at)]
            elif ok and all(isinstance(t, list) and t and all(
                    isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in t)
                    for t in early_stop_at):
                targets = [list(t) for t in early_stop_at]
            else:
                ok = False
            require(ok and all(x >= 0 for t in targets for x in t), "early_stop_at",
                    early_stop_at, "null, a list of conv counts per cell type such as [6, 0], "
                    "or a list of such lists")
        self.targets = targets
        self.best: dict[str, dict[str, Any]] = {}

    def update(self, epoch: int, val_acc: float, genotype: Any) -> dict[str, Any]:
        counts = conv_counts(genotype)
        key = _key(counts)
        cur = self.best.get(key)
        if cur is None or val_acc > cur["val_acc"]:
            self.best[key] = {"val_acc": float(val_acc), "epoch": int(epoch),
                              "genotype": str(genotype)}
        m: dict[str, Any] = {f"conv_ops_{ct}": c for ct, c in zip(genotype.cells, counts)}
        m["size_best"] = {k: dict(v) for k, v in self.best.items()}
        return m

    def stop(self, genotype: Any) -> Stop | None:
        """The search's end when the derived cells' counts are a target, else None."""
        counts = conv_counts(genotype)
        if any(t == counts for t in self.targets):
            return Stop(Reason.SIZE_TARGET,
                        f"derived cells reached {_key(counts)} conv ops (early_stop_at)")
        return None

    def state_dict(self) -> dict:
        return {"best": {k: dict(v) for k, v in self.best.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.best = {k: dict(v) for k, v in state.get("best", {}).items()}
