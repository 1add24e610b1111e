"""Datasets and the seeded search-train / search-val split.

``digits`` (scikit-learn's bundled 8x8 handwritten digits, 1,797 real images) is the embedded
default: no download. ``cifar10``, ``cifar100``, ``svhn``, ``fashion_mnist`` come through
torchvision and ``imagefolder`` reads a user's own images; torchvision is imported only for them.
Only the training split is ever searched on; the test split is loaded by ``raydnas evaluate``
alone (``split="test"``), never by a search.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from ..errors import ConfigError
from .images import PICKLES, TensorImages, has_pickles, read_pickles

# Lazy imports: only the dataset asked for loads its package (torchvision costs about a second and
# digits never needs it).

DATASETS = ("digits", "cifar10", "cifar100", "svhn", "fashion_mnist", "imagefolder")
TORCHVISION = {"cifar10": "CIFAR10", "cifar100": "CIFAR100", "svhn": "SVHN",
               "fashion_mnist": "FashionMNIST"}
_STATS = {  # per-channel mean/std of the training sets
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "imagefolder": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
#: image side of the built-in datasets (imagefolder: its data.image_size)
IMAGE_SIDE = {"digits": 8, "cifar10": 32, "cifar100": 32, "svhn": 32, "fashion_mnist": 28}
IMAGE_CHANNELS = {"digits": 1, "cifar10": 3, "cifar100": 3, "svhn": 3, "fashion_mnist": 1}
#: digits held out as its test split (never searched on): every 5th image
DIGITS_TEST_EVERY = 5
#: images in scikit-learn's digits
DIGITS_IMAGES = 1797


def known_size(name: str) -> int | None:
    """Images in the searchable (training) part of ``name`` when known without reading any file
    (the embedded digits), else None."""
    if name == "digits":
        return DIGITS_IMAGES - len(range(0, DIGITS_IMAGES, DIGITS_TEST_EVERY))
    return None


def split_sizes(n: int, val_fraction: float) -> tuple[int, int]:
    """(search-train, search-val) sizes of :func:`make_split` on ``n`` images."""
    n_val = max(1, int(round(n * val_fraction))) if val_fraction > 0 else 0
    return n - n_val, n_val


def check_split(where: str, dataset: str, n: int, val_fraction: float, batch_size: int,
                needs_val: bool, bn_images: int | None) -> None:
    """A batch must fit in each split the search draws from, and ``measure.bn_images`` in the
    search-train split; else one ConfigError line (``where``: the config file)."""
    n_train, n_val = split_sizes(n, val_fraction)
    smallest = min(n_train, n_val) if needs_val else n_train
    if batch_size > smallest:
        raise ConfigError(where, "data.batch_size", batch_size,
                          f"at most {smallest} (the smaller split of {n} {dataset} images at "
                          f"val_fraction {val_fraction}: {n_train} train, {n_val} val)"
                          if needs_val else
                          f"at most {smallest} (the search-train split of {n} {dataset} images "
                          f"at val_fraction {val_fraction})")
    if bn_images is not None and bn_images > n_train:
        raise ConfigError(where, "measure.bn_images", bn_images,
                          f"at most {n_train} (the search-train split of {dataset} at "
                          f"val_fraction {val_fraction})")


@dataclass
class Dataset:
    """The searchable (training) part of a dataset."""

    name: str
    #: an (x, y) pair of float tensors (digits), TensorImages (uint8 images augmented per
    #: batch: CIFAR, SVHN, FashionMNIST), or a torch Dataset (imagefolder, resized images)
    data: Any
    num_classes: int
    in_channels: int

    def __len__(self) -> int:
        return len(self.data[1]) if isinstance(self.data, tuple) else len(self.data)

    def example(self) -> torch.Tensor:
        """The first image as a batch of one (for cost tables and shapes). Drawn without
        touching the random streams: a torchvision dataset augments in ``__getitem__``, and a
        cost measurement must not change the search or training that follows."""
        if isinstance(self.data, tuple):
            return self.data[0][:1]
        state = random.getstate()
        with torch.random.fork_rng(devices=[]):
            x = self.data[0][0].unsqueeze(0)
        random.setstate(state)
        return x


def load_dataset(name: str, root: str | None = None, download: bool = False,
                 augment: bool | None = None, image_size: int | None = None,
                 split: str = "train", test_root: str | None = None) -> Dataset:
    """The ``train`` split (searched on, and trained on by an evaluation) or the ``test`` split
    (read by ``raydnas evaluate`` alone; never augmented). ``test_root``: an imagefolder's test
    images."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be train or test, got {split!r}")
    test = split == "test"
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
        y = torch.tensor(d.target, dtype=torch.long)
        held_out = torch.arange(len(y)) % DIGITS_TEST_EVERY == 0
        mean, std = x[~held_out].mean(), x[~held_out].std()  # training-set statistics
        keep = held_out if test else ~held_out
        x, y = (x[keep] - mean) / std, y[keep]
        return Dataset("digits", (x.contiguous(), y), 10, 1)
    if augment is None:
        augment = name in ("cifar10", "cifar100")
    if name != "imagefolder" and not image_size:
        ds = _tensor_images(name, root, download, augment, test)
        return Dataset(name, ds, 100 if name == "cifar100" else 10, ds.x.shape[1])
    import torchvision
    from torchvision import transforms as T

    mean, std = _STATS[name]
    tf = []
    if image_size:
        tf.append(T.Resize(image_size))
    if augment and not test:
        size = image_size or 32
        tf += [T.RandomCrop(size, padding=4), T.RandomHorizontalFlip()]
    if name == "imagefolder":
        if image_size:
            tf.append(T.CenterCrop(image_size))
        tf += [T.ToTensor(), T.Normalize(mean, std)]
        folder = test_root if test else root
        try:
            ds = torchvision.datasets.ImageFolder(folder, transform=T.Compose(tf))
        except (FileNotFoundError, OSError) as e:  # no class folders, or no images in them
            raise ConfigError("data", "data.test_root" if test else "data.root", folder,
                              "a folder with one subfolder of images per class "
                              f"({str(e).splitlines()[0][:120]})") from None
        return Dataset(name, ds, len(ds.classes), 3)
    tf += [T.ToTensor(), T.Normalize(mean, std)]
    ds = _torchvision(name, root, download, test, T.Compose(tf))
    return Dataset(name, ds, 10 if name == "svhn" else len(ds.classes), len(mean))


def _torchvision(name: str, root: str | None, download: bool, test: bool, transform=None):
    """torchvision's dataset object; a missing or broken dataset is one ConfigError line."""
    import torchvision

    cls = getattr(torchvision.datasets, TORCHVISION[name])
    try:
        if name == "svhn":
            return cls(root, split="test" if test else "train", download=download,
                       transform=transform)
        return cls(root, train=not test, download=download, transform=transform)
    except (OSError, RuntimeError) as e:  # no network, no files, a broken archive
        why = str(getattr(e, "reason", "") or e).splitlines()[0][:120] if str(e) else \
            type(e).__name__
        raise ConfigError("data", "data.download" if download else "data.root",
                          download if download else root,
                          f"{name} could not be {'downloaded' if download else 'read'} into "
                          f"{root} ({why}); put the dataset's files there (and set "
                          "data.download: false) or run where the network reaches it") from None


def _tensor_images(name: str, root: str | None, download: bool, augment: bool,
                   test: bool) -> TensorImages:
    """The whole split as one uint8 tensor (:mod:`raydnas.data.images`): CIFAR read from its
    pickles, SVHN and FashionMNIST from the arrays torchvision decodes."""
    mean, std = _STATS[name]
    if name in PICKLES:
        if not has_pickles(name, root):
            _torchvision(name, root, download, test)  # downloads, or says what is missing
        x, y = read_pickles(name, root, test)
    else:
        ds = _torchvision(name, root, download, test)
        x = torch.as_tensor(ds.data, dtype=torch.uint8)
        x = x.unsqueeze(1) if x.dim() == 3 else x
        y = torch.as_tensor(ds.labels if name == "svhn" else ds.targets, dtype=torch.long)
    return TensorImages(x.contiguous(), y, mean, std, augment and not test)


def make_split(n: int, val_fraction: float, seed: int) -> dict[str, list[int]]:
    """A seeded split of ``range(n)`` into search-train and search-val indices."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = split_sizes(n, val_fraction)[1]
    return {"train": sorted(perm[n_val:]), "val": sorted(perm[:n_val])}


def load_or_make_split(path: Path, n: int, val_fraction: float, seed: int) -> dict[str, list[int]]:
    """Reuse a saved split (a resumed search must see the same split), else make and save one."""
    if path.is_file():
        split = json.loads(path.read_text())
        if split.get("n") == n and split.get("val_fraction") == val_fraction \
                and split.get("seed") == seed:
            return split
    split = make_split(n, val_fraction, seed)
    split.update(n=n, val_fraction=val_fraction, seed=seed)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(split))
    tmp.replace(path)
    return split


class Batches:
    """Shuffled mini-batches over a subset, reproducible from (seed, pass, position).

    Pass ``p`` visits the subset in the order of ``randperm(seed * 1_000_003 + p)``; a state
    ``(pass, position)`` is enough to continue exactly after a restart.
    """

    def __init__(self, ds: Dataset, indices: list[int], batch_size: int, seed: int,
                 drop_last: bool, num_workers: int = 0) -> None:
        self.ds, self.indices, self.batch_size = ds, torch.tensor(indices), batch_size
        self.seed, self.drop_last, self.num_workers = seed, drop_last, num_workers

    def __len__(self) -> int:
        n = len(self.indices)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, pass_no: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + pass_no)
        return self.indices[torch.randperm(len(self.indices), generator=g)]

    def iterate(self, pass_no: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of pass ``pass_no`` from batch number ``start`` on."""
        idx = self.order(pass_no)
        n = len(self) * self.batch_size if self.drop_last else len(idx)
        idx = idx[start * self.batch_size:n]
        if isinstance(self.ds.data, tuple):
            x, y = self.ds.data
            for b in range(0, len(idx), self.batch_size):
                sel = idx[b:b + self.batch_size]
                yield x[sel], y[sel]
        elif isinstance(self.ds.data, TensorImages):
            for i, b in enumerate(range(0, len(idx), self.batch_size), start):
                # augmentation drawn from the batch's position: the same after a resume
                g = torch.Generator().manual_seed(
                    (self.seed * 1_000_003 + pass_no) * 1_000_033 + i)
                yield self.ds.data.batch(idx[b:b + self.batch_size], g)
        else:
            loader = torch.utils.data.DataLoader(
                self.ds.data, batch_size=self.batch_size, sampler=idx.tolist(),
                num_workers=self.num_workers, drop_last=False)
            yield from loader

    def sequential(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every sample once, in index order (evaluation)."""
        if isinstance(self.ds.data, tuple):
            x, y = self.ds.data
            for b in range(0, len(self.indices), self.batch_size):
                sel = self.indices[b:b + self.batch_size]
                yield x[sel], y[sel]
        elif isinstance(self.ds.data, TensorImages):
            for b in range(0, len(self.indices), self.batch_size):
                yield self.ds.data.batch(self.indices[b:b + self.batch_size])
        else:
            yield from torch.utils.data.DataLoader(
                torch.utils.data.Subset(self.ds.data, self.indices.tolist()),
                batch_size=self.batch_size, num_workers=self.num_workers)


class Cycle:
    """A persistent cycling iterator (each α step takes the next val batch; a new shuffled pass
    starts when one is used up). Its state is ``(pass, position)``."""

    def __init__(self, batches: Batches) -> None:
        self.batches = batches
        self.pass_no, self.pos = 0, 0
        self._it: Iterator | None = None

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._it is None:
            self._it = self.batches.iterate(self.pass_no, self.pos)
        try:
            batch = next(self._it)
        except StopIteration:
            self.pass_no, self.pos = self.pass_no + 1, 0
            self._it = self.batches.iterate(self.pass_no, 0)
            batch = next(self._it)
        self.pos += 1
        return batch

    def state_dict(self) -> dict:
        return {"pass": self.pass_no, "pos": self.pos}

    def load_state_dict(self, s: dict) -> None:
        self.pass_no, self.pos, self._it = int(s["pass"]), int(s["pos"]), None
