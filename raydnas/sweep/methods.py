"""The methods of a study: ``sweep.grid`` (a product of axis choices) and ``sweep.methods``
(listed, optionally named, with ``set`` overrides), each a :class:`Method`."""

from __future__ import annotations

import copy
import itertools
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..axes import AXES, AXIS_NAMES
from ..errors import ConfigError

if TYPE_CHECKING:
    from ..config.experiment import ExperimentConfig

#: Ray Tune reserves these characters in experiment names (they become directory names)
NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclass
class Method:
    """One point on the four axes (plus optional config overrides), the unit Optuna tunes."""

    name: str                         # the ``method`` key of every trial of this method
    axes: dict[str, Any]              # axis -> raw value (a name or {name: ..., params})
    overrides: dict[str, Any] = field(default_factory=dict)  # dotted key -> value
    params: list[str] = field(default_factory=list)          # Optuna params that apply
    epochs: int | None = None  # of its config, resolved once when the study is parsed

    def choices(self) -> dict[str, str]:
        return {a: (v if isinstance(v, str) else v["name"]) for a, v in self.axes.items()}


def _axis_names(v: Any) -> str | None:
    if isinstance(v, str):
        return v
    if isinstance(v, dict) and isinstance(v.get("name"), str):
        return v["name"]
    return None


def _check_choice(f: str, key: str, axis: str, v: Any) -> None:
    name = _axis_names(v)
    reg = AXES[axis]
    if name is None:
        raise ConfigError(f, key, v, f"a name ({', '.join(reg.names())}) or a mapping with 'name'")
    if name not in reg:
        raise ConfigError(f, key, name, f"one of {', '.join(reg.names())}")


def expand_methods(cfg: ExperimentConfig, sweep: dict, f: str) -> list[Method]:
    """The study's methods: the grid's product, then the listed ones; named and checked."""
    base_axes = {a: copy.deepcopy(cfg.raw.get(a)) if cfg.raw.get(a) is not None
                 else getattr(cfg, a).name for a in AXIS_NAMES}
    out: list[Method] = []
    grid = sweep.get("grid")
    if grid is not None:
        if not isinstance(grid, dict) or not grid:
            raise ConfigError(f, "sweep.grid", grid, "a mapping of axis to a list of choices")
        for axis, choices in grid.items():
            if axis not in AXIS_NAMES:
                raise ConfigError(f, f"sweep.grid.{axis}", choices,
                                  f"unknown axis; allowed: {', '.join(AXIS_NAMES)}")
            if not isinstance(choices, list) or not choices:
                raise ConfigError(f, f"sweep.grid.{axis}", choices, "a non-empty list of choices")
            for i, c in enumerate(choices):
                _check_choice(f, f"sweep.grid.{axis}[{i}]", axis, c)
        axes = list(grid)
        for combo in itertools.product(*(grid[a] for a in axes)):
            m = dict(base_axes)
            for a, c in zip(axes, combo):
                # a bare name equal to the base's choice keeps the base's hyperparameters
                if isinstance(c, str) and _axis_names(base_axes[a]) == c:
                    continue
                m[a] = copy.deepcopy(c)
            out.append(Method("", m))
    listed = sweep.get("methods")
    if listed is not None:
        if not isinstance(listed, list) or not listed:
            raise ConfigError(f, "sweep.methods", listed, "a non-empty list of methods")
        for i, entry in enumerate(listed):
            key = f"sweep.methods[{i}]"
            if not isinstance(entry, dict):
                raise ConfigError(f, key, entry, "a mapping of axis to choice (plus name, set)")
            m = dict(base_axes)
            name, sets = "", {}
            for k, v in entry.items():
                if k == "name":
                    if not isinstance(v, str) or not NAME_RE.match(v.replace("/", "_")):
                        raise ConfigError(f, f"{key}.name", v, "a name of letters, digits, _ . - /")
                    name = v
                elif k == "set":
                    if not isinstance(v, dict):
                        raise ConfigError(f, f"{key}.set", v,
                                          "a mapping of dotted config key to value")
                    sets = dict(v)
                elif k in AXIS_NAMES:
                    _check_choice(f, f"{key}.{k}", k, v)
                    m[k] = copy.deepcopy(v)
                else:
                    raise ConfigError(f, f"{key}.{k}", v,
                                      f"unknown key; allowed: {', '.join(AXIS_NAMES)}, name, set")
            out.append(Method(name, m, sets))
    if not out:
        out.append(Method("", base_axes))
    seen: dict[str, int] = {}
    for i, m in enumerate(out):
        if not m.name:
            m.name = "/".join(m.choices()[a] for a in AXIS_NAMES)
        if m.name in seen:
            raise ConfigError(f, "sweep.methods", m.name,
                              "each method once; give variants of one method a distinct 'name'")
        seen[m.name] = i
    return out


