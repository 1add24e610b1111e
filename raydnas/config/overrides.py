"""Overrides of a raw config mapping, merged as data: ``--set KEY.PATH=VALUE`` and a sweep
trial's ``set``/Optuna values (:func:`set_key`, :func:`merge`)."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from ..axes import AXIS_NAMES
from ..errors import ConfigError

#: mappings whose keys are literal (dotted) names, not paths: ``--set optuna.params.a.b=...``
#: sets the key ``a.b`` of ``optuna.params``
_LITERAL_KEYS = (("optuna", "params"),)


def parse_override(item: str, source: str = "--set") -> tuple[str, Any]:
    """``KEY.PATH=VALUE`` (the CLI's ``--set``) → (dotted key, value parsed as YAML)."""
    if "=" not in item:
        raise ConfigError(source, item, item,
                          "KEY.PATH=VALUE, e.g. --set epochs=20 or --set regularizer.rho=0.01")
    key, _, text = item.partition("=")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    return key.strip(), value


def set_key(raw: dict, key: str, value: Any, source: str = "--set") -> None:
    """Set the dotted ``key`` of the raw config mapping ``raw`` to ``value``, in place.

    Mappings on the way are created; an axis given by name alone (``regularizer: admm``) becomes
    ``{name: admm}`` when one of its hyperparameters is set; setting an axis to a new name drops
    the old choice's hyperparameters. Below ``optuna.params`` the rest of the key is one literal
    key (``optuna.params.regularizer.rho``).
    """
    parts = key.split(".")
    for prefix in _LITERAL_KEYS:
        n = len(prefix)
        if tuple(parts[:n]) == prefix and len(parts) > n + 1:
            parts = [*parts[:n], ".".join(parts[n:])]
    node = raw
    for i, p in enumerate(parts[:-1]):
        nxt = node.get(p)
        if isinstance(nxt, str) and p in AXIS_NAMES and i == 0:
            nxt = {"name": nxt}
        if nxt is None:
            nxt = {}
        if not isinstance(nxt, dict):
            raise ConfigError(source, key, value, f"{'.'.join(parts[:i + 1])} is not a mapping")
        node[p] = nxt
        node = nxt
    last = parts[-1]
    if len(parts) == 1 and last in AXIS_NAMES and isinstance(value, str) \
            and isinstance(node.get(last), dict):
        node[last] = {**node[last], "name": value} if node[last].get("name") == value \
            else {"name": value}
    else:
        node[last] = copy.deepcopy(value)


def merge(raw: dict, values: dict[str, Any], source: str = "--set") -> dict:
    """A copy of ``raw`` with each dotted key of ``values`` set (:func:`set_key`), in order."""
    raw = copy.deepcopy(raw)
    for k, v in values.items():
        set_key(raw, k, v, source)
    return raw


def apply_overrides(raw: dict, overrides: list[str], source: str = "--set") -> dict:
    """Apply ``key.path=value`` overrides (values parsed as YAML) to a copy of ``raw``."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        set_key(raw, *parse_override(item, source), source)
    return raw
