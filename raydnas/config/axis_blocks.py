"""An experiment's axis blocks (``activation:``, ``gradient:``, ``schedule:``, ``regularizer:``):
a name or a mapping with ``name`` and hyperparameters, checked against the axis's registry and
the choice's constructor, each problem one ConfigError line."""

from __future__ import annotations

import inspect
from typing import Any

from ..axes import AXES
from ..axes.checks import AxisParamError
from ..errors import ConfigError
from .sections import AxisConfig


def axis_block(raw: Any, axis: str, f: str) -> tuple[AxisConfig, Any]:
    """Validate one axis block: its config and the instance its constructor checked."""
    reg = AXES[axis]
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict) or "name" not in raw:
        raise ConfigError(f, axis, raw,
                          f"a name ({', '.join(reg.names())}) or a mapping with 'name'")
    name = raw["name"]
    if name not in reg:
        raise ConfigError(f, f"{axis}.name", name, f"one of {', '.join(reg.names())}")
    params = {k: v for k, v in raw.items() if k != "name"}
    cls = reg.get(name)
    sig = inspect.signature(cls)
    accepted = [p for p in sig.parameters if p not in ("self",)]
    for k, v in params.items():
        if k not in accepted:
            allowed = (f"allowed: {', '.join(accepted)}" if accepted
                       else "it takes no hyperparameters")
            raise ConfigError(f, f"{axis}.{k}", v,
                              f"unknown hyperparameter of {axis} {name!r}; {allowed}")
    cfg = AxisConfig(name, params)
    return cfg, create_axis(axis, cfg, f)  # the constructor checks the values


def create_axis(axis: str, cfg: AxisConfig, f: str | None = None):
    """Instantiate an axis choice; a bad hyperparameter becomes a ConfigError."""
    try:
        return AXES[axis].create(cfg.name, **cfg.params)
    except AxisParamError as e:
        raise ConfigError(f, f"{axis}.{e.param}", e.value, e.allowed) from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f, axis, {"name": cfg.name, **cfg.params}, str(e)) from None
