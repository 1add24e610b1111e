"""Data-aware vs fixed-input search on an image folder (configs/data_aware_study.yaml's question
on images read through torchvision's ImageFolder instead of the embedded tensors).

Writes scikit-learn's digits as 16x16 RGB PNGs (bilinear upsampling of the 8x8 images) into
``OUT/train/<class>/`` and, every 5th image as raydnas holds digits' test split out,
``OUT/test/<class>/``; then writes ``OUT/study.yaml``: configs/data_aware_study.yaml on that
folder (``data.dataset: imagefolder``, ``image_size: 16``), with the data axis' crops and
resizes doubled (full 16, crop 12, resize 8, crop 12 + resize 8). Run it with
``raydnas sweep OUT/study.yaml``.

Usage::

    python benchmarks/data_aware_folder.py OUT [--name data_aware_folder]
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import yaml
from PIL import Image
from sklearn.datasets import load_digits

ROOT = Path(__file__).resolve().parents[1]
TEST_EVERY = 5  # raydnas.data.datasets.DIGITS_TEST_EVERY
SIDE = 16


def write_folder(out: Path) -> tuple[Path, Path]:
    """The digits as 16x16 PNGs in class folders: (train folder, test folder)."""
    d = load_digits()
    for i, (img, label) in enumerate(zip(d.images, d.target)):
        part = "test" if i % TEST_EVERY == 0 else "train"
        folder = out / part / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        g = Image.fromarray((img / 16.0 * 255).astype(np.uint8), mode="L")
        g.resize((SIDE, SIDE), Image.BILINEAR).convert("RGB").save(folder / f"{i:04d}.png")
    return out / "train", out / "test"


def study(train: Path, test: Path, name: str) -> dict:
    """configs/data_aware_study.yaml on the folder, the data axis scaled to 16x16."""
    s = yaml.safe_load((ROOT / "configs" / "data_aware_study.yaml").read_text())
    s = copy.deepcopy(s)
    s["data"] = dict(s["data"], dataset="imagefolder", root=str(train), test_root=str(test),
                     image_size=SIDE)
    s["sweep"]["name"] = name
    for m in s["sweep"]["methods"]:
        ds = (m.get("set") or {}).get("data_search")
        if ds:
            ds["configs"] = [{"name": "full"}, {"name": "crop12", "crop": 12},
                             {"name": "small", "resize": 8},
                             {"name": "crop12_small", "crop": 12, "resize": 8}]
    return s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--name", default="data_aware_folder")
    a = ap.parse_args()
    train, test = write_folder(a.out)
    (a.out / "study.yaml").write_text(yaml.safe_dump(study(train, test, a.name),
                                                     sort_keys=False))
    print(f"wrote {train}, {test} and {a.out / 'study.yaml'}: raydnas sweep "
          f"{a.out / 'study.yaml'}")


if __name__ == "__main__":
    main()
