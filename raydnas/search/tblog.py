"""TensorBoard logging of a search: scalars, α heatmaps, op-weight histograms, the genotype."""

from __future__ import annotations

from pathlib import Path

import torch

# Lazy imports: TensorBoard's writer and matplotlib load only when a search logs (log.tensorboard)
# and draws heatmaps.


def heatmap(values: torch.Tensor, ops: list[str], edges: list[tuple[int, int]] | None = None,
            title: str = "") -> torch.Tensor:
    """An ``[edges, ops]`` matrix of op weights as a labelled CHW image: ops and edges on the
    axes, each value printed, a colour bar on the fixed scale [0, 1] (so the image of a run
    whose weights barely moved stays flat instead of stretching noise into a preference)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    v = values.detach().float().cpu().numpy()
    fig, ax = plt.subplots(figsize=(1.4 + 0.9 * v.shape[1], 1.2 + 0.32 * v.shape[0]), dpi=80)
    im = ax.imshow(v, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    for e in range(v.shape[0]):
        for o in range(v.shape[1]):
            ax.text(o, e, f"{v[e, o]:.3f}", ha="center", va="center", fontsize=7,
                    color="white" if v[e, o] < 0.6 else "black")
    ax.set_xticks(range(len(ops)))
    ax.set_xticklabels(ops, rotation=35, ha="right", fontsize=7)
    ax.set_yticks(range(v.shape[0]))
    ax.set_yticklabels([f"{a}→{b}" for a, b in edges] if edges else range(v.shape[0]),
                       fontsize=7)
    if title:
        ax.set_title(title, fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.05, pad=0.03)
    fig.tight_layout()
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0


class TBLogger:
    """One event file per process start; ``purge_step`` hides steps a killed run wrote after its
    last checkpoint."""

    def __init__(self, logdir: str | Path, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.w = SummaryWriter(str(logdir), purge_step=purge_step)

    def epoch(self, epoch: int, metrics: dict, probs: dict[str, torch.Tensor], ops: list[str],
              histograms: bool, edges: list[tuple[int, int]] | None = None) -> None:
        for k, v in metrics.items():
            if isinstance(v, bool):
                v = int(v)
            if isinstance(v, (int, float)):
                self.w.add_scalar(f"search/{k}", v, epoch)
        self.w.add_text("genotype", f"`{metrics.get('genotype', '')}`", epoch)
        for ct, p in probs.items():
            self.w.add_image(f"alpha/{ct}", heatmap(p, ops, edges,
                                                    f"{ct} cell, a(α), epoch {epoch}"), epoch)
            if histograms:
                for k, op in enumerate(ops):
                    self.w.add_histogram(f"op_weight/{ct}/{op}", p[:, k].detach().cpu(), epoch)
        self.w.flush()

    def hparams(self, hparams: dict) -> None:
        """The run's settings in TensorBoard's HParams dashboard (one session per event file;
        the metrics are the ``search/`` scalars this logger writes)."""
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        metrics = {f"search/{k}": 0.0 for k in ("val_acc", "discrete_val_acc",
                                                 "discretization_gap")}
        for summary in hparams_summary(hparams, metrics):
            self.w._get_file_writer().add_summary(summary)
        self.w.flush()

    def close(self) -> None:
        self.w.close()


def run_hparams(cfg) -> dict:
    """A search's settings as TensorBoard hparams: the method's axes, seed, space, dataset,
    epochs and the torch threads it ran with."""
    return {**cfg.method(), "seed": cfg.seed, "space": str(cfg.space),
            "dataset": cfg.data.dataset, "epochs": cfg.epochs,
            "threads": cfg.resolved_threads()}
