"""Full search state on disk: a resumed search continues bit-for-bit on CPU.

Everything is stored as tensors, numbers, strings, lists and dicts so that it loads with
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ConfigError

CHECKPOINT_NAME = "checkpoint.pt"


def rng_state() -> dict[str, Any]:
    """The RNG states of torch (CPU and CUDA), numpy and Python, as tensors (weights_only-safe)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1]),
                   "gauss": py_state[2] if py_state[2] is not None else "none"},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]),
                     None if p["gauss"] == "none" else p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def previous(path: str | Path) -> Path:
    """Where the checkpoint before the last one is kept (``checkpoint.prev.pt``)."""
    path = Path(path)
    return path.with_name(path.stem + ".prev" + path.suffix)


def save(state: dict[str, Any], path: str | Path) -> None:
    """Write atomically: a crash mid-write never leaves a broken checkpoint. The checkpoint it
    replaces is kept as :func:`previous` (the last two survive a damaged file)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    if path.is_file():
        os.replace(path, previous(path))
    os.replace(tmp, path)


def load(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """A checkpoint written by :func:`save`, read with ``weights_only=True``."""
    return torch.load(path, map_location=map_location, weights_only=True)


def load_or_previous(path: str | Path, map_location: Any = "cpu",
                     log=print) -> tuple[dict[str, Any], Path]:
    """``load(path)``; if that file is damaged (a disk error, a copy gone wrong), the previous
    checkpoint, saying so; if neither reads, one ConfigError line saying what to do."""
    path = Path(path)
    try:
        return load(path, map_location), path
    except Exception as e:  # noqa: BLE001 - any unreadable file: fall back or explain
        why = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'unreadable'}"
        prev = previous(path)
        if prev.is_file():
            try:
                state = load(prev, map_location)
            except Exception:  # noqa: BLE001
                pass
            else:
                log(f"warning: {path} is unreadable ({why[:120]}); continuing from the "
                    f"previous checkpoint {prev} (one epoch earlier)")
                return state, prev
        raise ConfigError(str(path), "checkpoint", path.name,
                          f"a readable checkpoint; this one is damaged ({why[:120]}): run with "
                          "--fresh to start over") from None
