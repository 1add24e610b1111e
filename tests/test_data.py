"""The embedded digits data, the seeded saved split, reproducible batches."""

import json

import torch

from raydnas.data.datasets import (
    DIGITS_TEST_EVERY,
    Batches,
    Cycle,
    load_dataset,
    load_or_make_split,
    make_split,
)


def test_digits_are_real_and_exclude_the_test_split():
    ds = load_dataset("digits")
    x, y = ds.data
    assert x.shape[1:] == (1, 8, 8) and ds.num_classes == 10 and ds.in_channels == 1
    n_test = len(range(0, 1797, DIGITS_TEST_EVERY))
    assert len(y) == 1797 - n_test
    assert set(y.tolist()) == set(range(10))
    from sklearn.datasets import load_digits

    raw = load_digits()
    test_images = torch.tensor(raw.images[::DIGITS_TEST_EVERY], dtype=torch.float32) / 16.0
    train_images = torch.tensor(raw.images, dtype=torch.float32)[
        torch.arange(1797) % DIGITS_TEST_EVERY != 0] / 16.0
    # no test image appears among the searchable images
    flat_train = {tuple(r.tolist()) for r in train_images.flatten(1)}
    dupes = sum(tuple(r.tolist()) in flat_train for r in test_images.flatten(1))
    assert dupes < 3  # (the digits set itself holds a couple of identical images)


def test_split_is_seeded_disjoint_and_complete():
    a, b, c = make_split(100, 0.3, 0), make_split(100, 0.3, 0), make_split(100, 0.3, 1)
    assert a == b and a != c
    assert len(a["val"]) == 30 and not set(a["train"]) & set(a["val"])
    assert sorted(a["train"] + a["val"]) == list(range(100))


def test_saved_split_is_reused_and_rebuilt_when_stale(tmp_path):
    p = tmp_path / "split.json"
    s1 = load_or_make_split(p, 50, 0.5, 3)
    saved = json.loads(p.read_text())
    saved["train"], saved["val"] = saved["val"], saved["train"]  # a split made earlier
    p.write_text(json.dumps(saved))
    assert load_or_make_split(p, 50, 0.5, 3)["train"] == s1["val"]
    assert load_or_make_split(p, 50, 0.4, 3)["val"] != s1["val"]  # other fraction: new split


def test_batches_and_cycle_continue_exactly_from_their_state():
    ds = load_dataset("digits")
    b = Batches(ds, list(range(200)), 32, seed=5, drop_last=True)
    assert len(b) == 6
    full = [y for _, y in b.iterate(2)]
    assert [y.tolist() for _, y in b.iterate(2, start=4)] == [t.tolist() for t in full[4:]]
    assert [y.tolist() for _, y in b.iterate(2)] == [t.tolist() for t in full]
    assert full[0].tolist() != next(b.iterate(3))[1].tolist()
    c1 = Cycle(b)
    seq = [c1.next()[1].tolist() for _ in range(9)]  # crosses into a second pass
    c2 = Cycle(b)
    for _ in range(4):
        c2.next()
    c3 = Cycle(b)
    c3.load_state_dict(c2.state_dict())
    assert [c3.next()[1].tolist() for _ in range(5)] == seq[4:]


def test_imagefolder_reads_a_users_own_images(tmp_path):
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    for i in range(40):
        cls = tmp_path / f"class_{d.target[i] % 2}"
        cls.mkdir(exist_ok=True)
        img = (d.images[i] * 15).astype("uint8")
        Image.fromarray(img).convert("RGB").resize((16, 16)).save(cls / f"{i}.png")
    ds = load_dataset("imagefolder", str(tmp_path), image_size=12)
    assert ds.num_classes == 2 and ds.in_channels == 3 and len(ds) == 40
    b = Batches(ds, list(range(40)), 8, seed=0, drop_last=True)
    x, y = next(b.iterate(0))
    assert x.shape == (8, 3, 12, 12) and set(y.tolist()) <= {0, 1}
    # one example image for cost tables: with augmentation, torchvision's random crop and flip
    # run in __getitem__, yet the random streams are where they were: a cost measurement
    # changes no run
    import random

    aug = load_dataset("imagefolder", str(tmp_path), image_size=12, augment=True)
    torch.manual_seed(5)
    random.seed(5)
    before, py = torch.get_rng_state(), random.getstate()
    assert aug.example().shape == ds.example().shape == (1, 3, 12, 12)
    assert torch.equal(torch.get_rng_state(), before) and random.getstate() == py


def test_requesting_a_missing_cuda_device_is_a_clear_error():
    import pytest

    from raydnas.errors import ConfigError
    from raydnas.search.run import resolve_device

    with pytest.raises(ConfigError, match="cuda:99"):
        resolve_device("cuda:99")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
