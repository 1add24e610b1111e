"""The embedded digits data, the seeded saved split, reproducible batches."""

import json

import torch

from raydnas.data import DIGITS_TEST_EVERY, Batches, Cycle, load_dataset, load_or_make_split, make_split


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
