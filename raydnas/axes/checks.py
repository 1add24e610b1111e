"""Argument checks for axis hyperparameters: fail at construction with a clear message."""

from __future__ import annotations

import math
from typing import Any


class AxisParamError(ValueError):
    """A bad hyperparameter of an axis choice (becomes a ConfigError line in config)."""
    def __init__(self, param: str, value: Any, allowed: str) -> None:
        self.param, self.value, self.allowed = param, value, allowed
        super().__init__(f"{param} must be {allowed}, but got {param}={value!r}")


def require(ok: bool, param: str, value: Any, allowed: str) -> None:
    """Raise :class:`AxisParamError` unless ``ok``."""
    if not ok:
        raise AxisParamError(param, value, allowed)


def is_number(v: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
