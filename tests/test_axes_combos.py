"""Every accepted combination of the four axes runs two search steps on the tiny space."""

from __future__ import annotations

import itertools

import pytest
import torch
from helpers import STEPPING, FixedVal, batches, step_until_alpha_step, tiny_cfg, tiny_state

from raydnas.axes import AXES, AXIS_NAMES
from raydnas.axes.compat import incompatibility
from raydnas.errors import ConfigError
from raydnas.search.run import train_step

ALL = list(itertools.product(*(AXES[a].names() for a in AXIS_NAMES)))


def _method(c):
    return dict(zip(AXIS_NAMES, c))


def _parts(c):
    """Each axis's choice of combination ``c``, built with its default hyperparameters."""
    return {a: AXES[a].create(name) for a, name in _method(c).items()}


ACCEPTED = [c for c in ALL if incompatibility(_parts(c)) is None]
REJECTED = [c for c in ALL if c not in ACCEPTED]


@pytest.mark.parametrize("combo", ACCEPTED, ids=["/".join(c) for c in ACCEPTED])
def test_combination_runs_two_steps(combo):
    torch.set_num_threads(1)
    st = tiny_state(_method(combo), params={"schedule": STEPPING.get(combo[2], {})})
    before = {c: a.detach().clone() for c, a in st.model.alphas.items()}
    train, val = batches(st)
    for _ in range(2):
        train_step(st, train, FixedVal(val))  # raises NonFiniteLoss on a NaN loss
    moved = any(not torch.equal(before[c], a.detach()) for c, a in st.model.alphas.items())
    if st.activation.alpha_free:  # RSPS: α is never stepped nor used
        assert not moved and st.alpha_steps == 0, "α moved without an α step"
        return
    step_until_alpha_step(st, train, val)  # schedules that wait for a later step or epoch
    moved = any(not torch.equal(before[c], a.detach()) for c, a in st.model.alphas.items())
    assert moved, "α did not move"
    assert all(torch.isfinite(p).all() for p in st.model.parameters())


def test_rejected_combinations_say_why():
    assert REJECTED, "resource with non-normalized activations is rejected"
    for c in REJECTED:
        why = incompatibility(_parts(c))
        assert isinstance(why, str) and len(why) > 40
    with pytest.raises(ConfigError) as e:
        tiny_cfg({"activation": "crb", "regularizer": "resource"})
    assert "method" in str(e.value) and "distribution" in str(e.value)
    with pytest.raises(ConfigError, match="match_split"):
        tiny_cfg({"gradient": "single_level", "schedule": "informed"},
                 {"schedule": {"match_split": True}})
