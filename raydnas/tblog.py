"""TensorBoard logging of a search: scalars, α heatmaps, op-weight histograms, the genotype."""

from __future__ import annotations

from pathlib import Path

import torch


def heatmap(values: torch.Tensor, cell: int = 12) -> torch.Tensor:
    """A ``[edges, ops]`` matrix in [0, 1] as a CHW image (viridis), each entry a block."""
    from matplotlib import colormaps

    v = values.detach().float().cpu()
    lo, hi = float(v.min()), float(v.max())
    v = (v - lo) / (hi - lo) if hi > lo else torch.zeros_like(v)
    rgb = torch.tensor(colormaps["viridis"](v.numpy())[..., :3], dtype=torch.float32)
    rgb = rgb.repeat_interleave(cell, 0).repeat_interleave(cell, 1)
    return rgb.permute(2, 0, 1).contiguous()


class TBLogger:
    """One event file per process start; ``purge_step`` hides steps a killed run wrote after its
    last checkpoint."""

    def __init__(self, logdir: str | Path, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.w = SummaryWriter(str(logdir), purge_step=purge_step)

    def epoch(self, epoch: int, metrics: dict, probs: dict[str, torch.Tensor], ops: list[str],
              histograms: bool) -> None:
        for k, v in metrics.items():
            if isinstance(v, bool):
                v = int(v)
            if isinstance(v, (int, float)):
                self.w.add_scalar(f"search/{k}", v, epoch)
        self.w.add_text("genotype", f"`{metrics.get('genotype', '')}`", epoch)
        for ct, p in probs.items():
            self.w.add_image(f"alpha/{ct}", heatmap(p), epoch)
            if histograms:
                for k, op in enumerate(ops):
                    self.w.add_histogram(f"op_weight/{ct}/{op}", p[:, k].detach().cpu(), epoch)
        self.w.flush()

    def close(self) -> None:
        self.w.close()
