"""Small shared helpers for the tests (no fakes: real configs, real data)."""

from __future__ import annotations

import json
from pathlib import Path

from raydnas.config import from_dict


def tiny_raw(**over) -> dict:
    """A fast real search: tiny space, 4 channels, digits, 2 epochs."""
    raw = {"space": "tiny", "epochs": 2, "seed": 0,
           "data": {"dataset": "digits", "batch_size": 64},
           "model": {"channels": 4},
           "log": {"print_every": 0}}
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(raw.get(k), dict):
            raw[k] = {**raw[k], **v}
        else:
            raw[k] = v
    return raw


def tiny_config(**over):
    return from_dict(tiny_raw(**over), "<test>")


def read_final(out: Path) -> dict:
    return json.loads((Path(out) / "final.json").read_text())
