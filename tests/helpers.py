"""Small shared helpers for the tests (no fakes: real configs, real data)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch

from raydnas.config.experiment import from_dict
from raydnas.data.datasets import load_dataset
from raydnas.search.run import SearchState


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


# -- a tiny real search state on the embedded digits data (the axes tests) ----------------
@functools.lru_cache(maxsize=1)
def _digits():
    """The real embedded digits, read from disk once per test session."""
    return load_dataset("digits")

#: hyperparameters that make every schedule take α steps within two weight steps
STEPPING = {"informed": {"threshold": 1.0e9}, "interval": {"every": 2}}


def tiny_cfg(method: dict | None = None, params: dict | None = None, **top):
    method = {"activation": "softmax", "gradient": "first_order", "schedule": "every",
              "regularizer": "none", **(method or {})}
    params = params or {}
    raw = {"space": "tiny", "epochs": 2, "seed": 0,
           "data": {"dataset": "digits", "val_fraction": 0.5, "batch_size": 8},
           "model": {"channels": 4, "cells": 3},
           "log": {"tensorboard": False, "print_every": 0}}
    for axis, name in method.items():
        raw[axis] = {"name": name, **params.get(axis, {})}
    if method["activation"] == "random_path":  # an α-free method's cell is RSPS's selection
        raw["select"] = {"name": "random_ws", "samples": 4, "top": 2, "screen_batches": 2}
    raw.update(top)
    return from_dict(raw, "<test>")


def tiny_state(method=None, params=None, dtype=torch.float32, **top) -> SearchState:
    cfg = tiny_cfg(method, params, **top)
    st = SearchState(cfg, torch.device("cpu"), dataset=_digits())
    st.steps_per_epoch = 10
    if dtype != torch.float32:
        st.model.to(dtype)
    return st


def batches(st: SearchState, n: int = 8, dtype=torch.float32):
    x, y = st.dataset.data
    return (x[:n].to(dtype), y[:n]), (x[n:2 * n].to(dtype), y[n:2 * n])


class FixedVal:
    """Stands in for the loop's val iterator: always the same real val batch."""

    def __init__(self, batch):
        self.batch = batch

    def next(self):
        return self.batch


def step_until_alpha_step(st: SearchState, train, val, limit: int = 60) -> int:
    """Weight steps on fixed batches, epochs advancing every ``st.steps_per_epoch`` steps as in
    the search loop (``start_epoch`` of every part), until the schedule takes an α step;
    returns the steps taken (AssertionError after ``limit``)."""
    fixed = FixedVal(val)
    from raydnas.search.run import train_step

    while st.alpha_steps == 0:
        assert st.step < limit, f"no α step in {limit} weight steps"
        if st.step and st.step % st.steps_per_epoch == 0:
            st.epoch += 1
            for part in st.parts.values():
                part.start_epoch(st)
        train_step(st, train, fixed)
    return st.step
