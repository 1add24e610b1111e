"""Images held as one uint8 tensor (raydnas.data.images): the same pixels as torchvision's
transforms for the same crop and flip, CIFAR's pickles read as torchvision reads them, batches
reproducible from their position (resume), and a search on them."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from raydnas.data.datasets import Batches, load_dataset
from raydnas.data.images import TensorImages, crop_flip, read_pickles


def _write_cifar10(root, n_per_batch=40, seed=0):
    """Files in the official layout and format (random pixels)."""
    rng = np.random.default_rng(seed)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {"batch_label": name,
                 "data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, n_per_batch).tolist(),
                 "filenames": ["x.png"] * n_per_batch}
        with open(d / name, "wb") as f:
            pickle.dump(entry, f)
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    return root


def test_crop_and_flip_are_torchvisions_for_the_same_draws():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=g)
    dy, dx = torch.tensor([0, 8, 3, 4, 8, 1]), torch.tensor([8, 0, 5, 4, 2, 7])
    flip = torch.tensor([True, False, True, False, False, True])
    out = crop_flip(x, dy, dx, flip, 4)
    for i in range(6):
        ref = TF.crop(TF.pad(x[i], [4]), int(dy[i]), int(dx[i]), 32, 32)
        ref = TF.hflip(ref) if flip[i] else ref
        assert torch.equal(out[i], ref)


def test_pickles_read_per_the_format_and_normalize_like_totensor(tmp_path):
    """CIFAR's format: each row is 1024 red, 1024 green, 1024 blue bytes, each plane a
    row-major 32×32 image; batches in file order."""
    from PIL import Image

    root = _write_cifar10(tmp_path)
    x, y = read_pickles("cifar10", root, test=False)
    rows, labels = [], []
    for i in range(1, 6):
        with open(root / "cifar-10-batches-py" / f"data_batch_{i}", "rb") as f:
            d = pickle.load(f, encoding="latin1")
        rows.append(d["data"])
        labels += d["labels"]
    rows = np.concatenate(rows)
    assert x.shape == (200, 3, 32, 32) and y.tolist() == labels
    i = 123
    for c in range(3):
        for r, col in ((0, 0), (5, 17), (31, 31)):
            assert int(x[i, c, r, col]) == int(rows[i, c * 1024 + r * 32 + col])
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    imgs = TensorImages(x, y, mean, std, augment=False)
    got, _ = imgs.batch(torch.tensor([3, 7]))
    tf = T.Compose([T.ToTensor(), T.Normalize(mean, std)])
    for j, k in enumerate((3, 7)):
        pil = Image.fromarray(rows[k].reshape(3, 32, 32).transpose(1, 2, 0))
        assert torch.allclose(got[j], tf(pil), atol=1e-6)


def test_batches_depend_on_their_position_only(tmp_path):
    ds = load_dataset("cifar10", str(_write_cifar10(tmp_path)))
    assert isinstance(ds.data, TensorImages) and ds.data.augment and len(ds) == 200
    assert ds.num_classes == 10 and ds.in_channels == 3
    b = Batches(ds, list(range(200)), 16, 3, True)
    full = list(b.iterate(2))
    resumed = list(b.iterate(2, start=5))
    assert all(torch.equal(a[0], r[0]) and torch.equal(a[1], r[1])
               for a, r in zip(full[5:], resumed))
    again = list(b.iterate(2))
    assert torch.equal(full[0][0], again[0][0])
    assert not torch.equal(full[0][0], list(b.iterate(3))[0][0])  # another pass, other draws
    test = load_dataset("cifar10", str(tmp_path), split="test")
    assert not test.data.augment and len(test) == 40


@pytest.mark.slow  # a whole search or a CLI subprocess: the full lane
def test_a_search_runs_on_tensor_images(tmp_path):
    from helpers import tiny_config

    from raydnas.search.run import run_search

    root = _write_cifar10(tmp_path / "data")
    cfg = tiny_config(data={"dataset": "cifar10", "root": str(root), "batch_size": 32},
                      epochs=1, measure={"tune_epochs": 0, "bn_images": 64},
                      log={"tensorboard": False, "print_every": 0})
    m = run_search(cfg, tmp_path / "run", log=lambda s: None)
    assert m["epoch"] == 1 and 0 <= m["val_acc"] <= 1


def test_a_missing_cifar_is_one_config_error(tmp_path):
    from raydnas.errors import ConfigError

    with pytest.raises(ConfigError, match="data.root"):
        load_dataset("cifar10", str(tmp_path))
