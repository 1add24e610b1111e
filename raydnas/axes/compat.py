"""Which combinations of the four axes make no sense, and why (checked by config validation)."""

from __future__ import annotations

from typing import Any


def incompatibility(method: dict[str, str], params: dict[str, dict[str, Any]] | None = None) -> str | None:
    """A sentence saying why ``method`` (axis → choice name) cannot run, or None if it can."""
    return None
