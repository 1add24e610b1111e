"""The share of a search step spent waiting for data: the tensor path (raydnas.data.images) against
today's per-sample path (what torchvision's CIFAR10 does per image: ``Image.fromarray``,
RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize, collated by a DataLoader in
the trial's process), on the same CIFAR-format images; and digits (a float tensor held in memory).

CIFAR-format files with random pixels stand in for CIFAR-10 (no download here); the work per
image does not depend on the pixels. The step is raydnas's real first-order step on the NB201
space (C = 16) at the same batch size, on the CPU (the figures say which device).

    PYTHONPATH=. python benchmarks/data_wait.py --batch 64 --out benchmarks/results/data_wait.json
"""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def write_cifar(root: Path, n: int = 5000) -> Path:
    """CIFAR-10's files, format and layout, with ``n`` random training images."""
    rng = np.random.default_rng(0)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    per = n // 5
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(d / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (per, 3072), dtype=np.uint8),
                         "labels": rng.integers(0, 10, per).tolist()}, f)
    return root


class PerSample(torch.utils.data.Dataset):
    """torchvision CIFAR10's ``__getitem__`` over the same images: PIL and transforms."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, mean, std) -> None:
        from torchvision import transforms as T

        self.hwc = x.permute(0, 2, 3, 1).numpy()
        self.y = y.tolist()
        self.tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(),
                             T.ToTensor(), T.Normalize(mean, std)])

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        from PIL import Image

        return self.tf(Image.fromarray(self.hwc[i])), self.y[i]


def data_seconds(ds, batch: int, n_batches: int) -> float:
    """Median seconds to produce one training batch (index, augment, normalize)."""
    from raydnas.data.datasets import Batches

    b = Batches(ds, list(range(len(ds))), batch, 0, True)
    it = b.iterate(0)
    times = []
    for _ in range(min(n_batches, len(b))):
        t = time.perf_counter()
        next(it)
        times.append(time.perf_counter() - t)
    return statistics.median(times[1:])


def step_seconds(ds, batch: int, steps: int) -> float:
    """Median seconds of raydnas's first-order step (NB201, C = 16) on that data's shape."""
    from step import Feeder, build_state, make_config, synthetic_data

    from raydnas.search.run import train_step

    side, ch = ds.data[0][0].shape[-1], ds.in_channels
    data = synthetic_data(4 * batch, size=side)
    if ch == 1:
        data.data = (data.data[0][:, :1].contiguous(), data.data[1])
        data.in_channels = 1
    st = build_state(make_config("nb201", "darts_v1", batch, 16, None), torch.device("cpu"),
                     data)
    st.steps_per_epoch = 1000
    feed = Feeder(data, batch, torch.device("cpu"))
    times = []
    for i in range(steps + 1):
        b = feed.train_batch()
        t = time.perf_counter()
        train_step(st, b, feed)
        if i:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None) -> dict:
    """Measure and print (and write) the table as JSON."""
    from raydnas.data.datasets import Dataset, load_dataset

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    res = {"batch": a.batch, "threads": a.threads, "device": "cpu", "rows": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tensor = load_dataset("cifar10", str(write_cifar(Path(tmp))))
        x, y = tensor.data.x, tensor.data.y
        per = Dataset("cifar10", PerSample(x, y, (0.4914, 0.4822, 0.4465),
                                           (0.2470, 0.2435, 0.2616)), 10, 3)
        step = step_seconds(tensor, a.batch, a.steps)
        for name, ds in (("cifar10 per-sample (today)", per), ("cifar10 tensor", tensor)):
            d = data_seconds(ds, a.batch, a.batches)
            res["rows"][name] = {"data_s": round(d, 5), "step_s": round(step, 4),
                                 "data_share": round(d / (d + step), 4)}
    digits = load_dataset("digits")
    d = data_seconds(digits, a.batch, a.batches)
    step = step_seconds(digits, a.batch, a.steps)
    res["rows"]["digits (in memory)"] = {"data_s": round(d, 5), "step_s": round(step, 4),
                                         "data_share": round(d / (d + step), 4)}
    print(json.dumps(res))
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
