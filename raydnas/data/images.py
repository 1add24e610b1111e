"""Small image datasets held as one uint8 tensor, augmented per batch on tensors.

CIFAR-10/100 are read straight from their standard python-pickle files, SVHN and
FashionMNIST from the arrays torchvision decodes once; every image is then a row of one
``[N, C, H, W]`` uint8 tensor (50,000 CIFAR images: 150 MB), which may live on the trial's GPU.
A batch is an index into it: random crop with zero padding and horizontal flip are done on the
whole batch at once, with offsets and flips drawn from a generator seeded by the batch's position
(seed, pass, batch number), so a resumed search sees the same batches. No DataLoader workers, no
per-sample PIL: a trial needs one CPU.

The augmentation is torchvision's ``RandomCrop(size, padding=4)`` followed by
``RandomHorizontalFlip()`` and ``ToTensor()``/``Normalize``: for the same offset and flip the
pixels are identical (tests/test_images.py); the random draws come from another stream.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
import torch.nn.functional as F

#: the folder and files of each pickled dataset (as the official archives unpack)
PICKLES = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                "labels"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels"),
}


class TensorImages:
    """Images ``x`` (uint8 ``[N, C, H, W]``) and labels ``y``; :meth:`batch` returns normalized
    float batches, augmented when ``augment``."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, mean, std, augment: bool,
                 padding: int = 4) -> None:
        if x.dtype != torch.uint8 or x.dim() != 4:
            raise ValueError(f"x must be uint8 [N, C, H, W], got {x.dtype} {tuple(x.shape)}")
        self.x, self.y, self.augment, self.padding = x, y, augment, padding
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Image ``i`` (normalized, never augmented) and its label."""
        x, y = self.batch(torch.tensor([i]))
        return x[0], y[0]

    def to(self, device: torch.device | str) -> "TensorImages":
        """The images on ``device`` (moved once; batches are then cut there)."""
        self.x, self.y = self.x.to(device), self.y.to(device)
        self.mean, self.std = self.mean.to(device), self.std.to(device)
        return self

    def batch(self, idx: torch.Tensor, generator: torch.Generator | None = None,
              draws: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None):
        """Images ``idx``, augmented with ``generator``'s draws (or the given ``draws``:
        row offsets, column offsets, flips) when ``augment``; normalized float32."""
        idx = idx.to(self.x.device)
        x = self.x[idx]
        if self.augment and (generator is not None or draws is not None):
            if draws is None:
                draws = self.draw(len(idx), generator)
            x = crop_flip(x, *draws, self.padding)
        x = (x.float().div_(255) - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last), self.y[idx]

    def draw(self, n: int, generator: torch.Generator):
        """Per image: crop offsets in [0, 2·padding] and a flip (p = 1/2), on the CPU."""
        k = 2 * self.padding + 1
        dy = torch.randint(0, k, (n,), generator=generator)
        dx = torch.randint(0, k, (n,), generator=generator)
        flip = torch.rand(n, generator=generator) < 0.5
        return dy, dx, flip


def crop_flip(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor,
              padding: int) -> torch.Tensor:
    """Each image zero-padded by ``padding``, cropped back to its size at offset (dy, dx), then
    mirrored left-right where ``flip``: one gather for the whole batch."""
    n, c, h, w = x.shape
    dev = x.device
    xp = F.pad(x, (padding,) * 4)
    rows = (dy.to(dev).view(n, 1) + torch.arange(h, device=dev).view(1, h))  # [n, h]
    cols = dx.to(dev).view(n, 1) + torch.arange(w, device=dev).view(1, w)  # [n, w]
    cols = torch.where(flip.to(dev).view(n, 1), cols.flip(1), cols)
    b = torch.arange(n, device=dev).view(n, 1, 1)
    out = xp.permute(0, 2, 3, 1)[b, rows.view(n, h, 1), cols.view(n, 1, w)]  # [n, h, w, c]
    return out.permute(0, 3, 1, 2)


def read_pickles(name: str, root: str | Path, test: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10/100's python-pickle files → (uint8 ``[N, 3, 32, 32]``, labels)."""
    folder, train_files, test_files, key = PICKLES[name]
    xs, ys = [], []
    for f in test_files if test else train_files:
        with open(Path(root) / folder / f, "rb") as fh:
            d = pickle.load(fh, encoding="latin1")  # Python 2 pickles: str keys, as torchvision
        xs.append(torch.as_tensor(d["data"], dtype=torch.uint8).view(-1, 3, 32, 32))
        ys.append(torch.as_tensor(d[key], dtype=torch.long))
    return torch.cat(xs), torch.cat(ys)


def has_pickles(name: str, root: str | Path | None) -> bool:
    """Whether ``root`` holds the dataset's unpacked pickle files."""
    if name not in PICKLES or root is None:
        return False
    folder, train_files, test_files, _ = PICKLES[name]
    return all((Path(root) / folder / f).is_file() for f in train_files + test_files)
