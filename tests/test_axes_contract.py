"""The axis contract, checked for every registered choice of every axis (a new choice is tested
here without being named): it subclasses its axis's base, declares no hook the loop never calls,
builds with its defaults, survives every hook on a real search state, and resumes its state."""

from __future__ import annotations

import inspect
import io

import pytest
import torch
from helpers import STEPPING, FixedVal, batches, step_until_alpha_step, tiny_state

from raydnas.axes import AXES, HOOKS, AxisChoice, SearchContext
from raydnas.axes.activation import Activation
from raydnas.axes.compat import incompatibility
from raydnas.axes.gradient import ArchGradient
from raydnas.axes.regularizer import Regularizer
from raydnas.axes.schedule import Schedule
from raydnas.search.run import train_step

BASES = {"activation": Activation, "gradient": ArchGradient, "schedule": Schedule,
         "regularizer": Regularizer}
CHOICES = [(axis, name) for axis, reg in AXES.items() for name in reg.names()]
#: prefixes of names that read as loop hooks; a public method with one that is not in HOOKS
#: would silently never be called
HOOKISH = ("after_", "before_", "on_", "start_", "end_", "epoch_", "setup", "teardown")


def _public_methods(cls):
    return {n for n, v in inspect.getmembers(cls, inspect.isfunction) if not n.startswith("_")}


@pytest.mark.parametrize("axis,name", CHOICES, ids=[f"{a}/{n}" for a, n in CHOICES])
def test_choice_declares_the_contract(axis, name):
    cls = AXES[axis].get(name)
    assert issubclass(cls, BASES[axis]) and issubclass(cls, AxisChoice)
    assert cls.registered_name == name
    assert (cls.__doc__ or "").strip(), f"{name}: the docstring is the choice's documentation"
    own = _public_methods(cls) - _public_methods(BASES[axis])
    stray = sorted(m for m in own if m.startswith(HOOKISH))
    assert not stray, f"{name} defines {stray}, which no loop calls (hooks: {HOOKS})"
    for hook in HOOKS:  # a hook must keep the base's arguments
        mine = inspect.signature(getattr(cls, hook)).parameters
        base = inspect.signature(getattr(AxisChoice, hook)).parameters
        assert list(mine) == list(base), f"{name}.{hook}{tuple(mine)} != {tuple(base)}"
    for p in inspect.signature(cls).parameters.values():  # hyperparameters have defaults
        assert p.default is not inspect.Parameter.empty, f"{name}: {p.name} needs a default"


def _method_with(axis, name):
    """A runnable method that uses ``name`` on ``axis`` (defaults elsewhere, unless the
    default cannot go with it)."""
    method = {a: reg.default for a, reg in AXES.items()}
    method[axis] = name
    parts = {a: AXES[a].create(n) for a, n in method.items()}
    if incompatibility(parts) is not None:
        for other in AXES["activation"].names():
            method["activation"] = other
            if incompatibility({**parts, "activation": AXES["activation"].create(other)}) is None:
                break
    return method


@pytest.mark.parametrize("axis,name", CHOICES, ids=[f"{a}/{n}" for a, n in CHOICES])
def test_choice_runs_every_hook_and_resumes(axis, name):
    torch.set_num_threads(1)
    method = _method_with(axis, name)
    st = tiny_state(method, params={"schedule": STEPPING.get(method["schedule"], {})})
    assert isinstance(st, SearchContext)
    part = st.parts[axis]
    train, val = batches(st)
    part.start_epoch(st)
    for _ in range(3):
        train_step(st, train, FixedVal(val))
    if not st.activation.alpha_free:  # RSPS never steps α
        step_until_alpha_step(st, train, val)
    extra = part.epoch_metrics(st, _genotype(st), {"epoch": 1, "val_acc": 0.5})
    assert isinstance(extra, dict)
    state = part.state_dict()
    buf = io.BytesIO()
    torch.save(state, buf)  # checkpoints are saved with torch.save and read weights_only
    buf.seek(0)
    fresh = AXES[axis].create(name)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert _same(fresh.state_dict(), state), f"{name}: state_dict does not round-trip"


def _genotype(st):
    from raydnas.model.genotype import derive

    return derive({c: p.detach() for c, p in st.model.op_probs().items()}, st.space)[0]


def _same(a, b) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def test_the_loop_calls_every_hook_of_every_part(tmp_path):
    """A choice that overrides a hook is called: the search loop calls each hook of the base
    on each of the four parts (observed on a real search through a subclass)."""
    from raydnas.axes.schedule import SCHEDULES, Every
    from raydnas.search.run import run_search

    calls: dict[str, int] = {}

    class Counting(Every):
        """Every, counting the hooks the loop calls."""

    for hook in HOOKS:
        def counted(self, *a, _hook=hook, **k):
            calls[_hook] = calls.get(_hook, 0) + 1
            return getattr(Every, _hook)(self, *a, **k)
        setattr(Counting, hook, counted)
    SCHEDULES.register("counting_test")(Counting)
    try:
        from helpers import tiny_config

        cfg = tiny_config(schedule="counting_test", epochs=2,
                          log={"tensorboard": False, "print_every": 0},
                          measure={"tune_epochs": 0})
        run_search(cfg, tmp_path / "run", log=lambda s: None)
    finally:
        SCHEDULES._entries.pop("counting_test")
    steps = calls["after_weight_step"]
    assert steps > 0 and calls["setup"] == 1 and calls["start_epoch"] == 2
    assert calls["after_arch_step"] == steps  # an α step before every weight step
    assert calls["epoch_metrics"] == 2 and calls["state_dict"] == 2


def test_swapping_a_part_on_the_state_reaches_the_loop():
    """``st.schedule = other`` replaces the part the loop calls (no silently ignored copy)."""
    from raydnas.axes.schedule import Schedule

    class Never(Schedule):
        """Never an α step."""

        def wants_step(self, ctx):
            return False

    st = tiny_state()
    st.schedule = Never()
    assert st.parts["schedule"] is st.schedule
    train, val = batches(st)
    train_step(st, train, FixedVal(val))
    assert st.step == 1 and st.alpha_steps == 0
