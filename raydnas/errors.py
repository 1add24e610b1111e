"""The one error type that bad user input raises: a single line naming file, key, value, allowed."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """Invalid user input (experiment config, search space, study).

    The message is one line: ``FILE: KEY = VALUE: WHAT IS ALLOWED``.
    """

    def __init__(self, file: str | None, key: str, value: Any, allowed: str) -> None:
        self.file = file or "<config>"
        self.key = key
        self.value = value
        self.allowed = allowed
        shown = repr(value)
        if len(shown) > 120:
            shown = shown[:117] + "..."
        super().__init__(f"{self.file}: {key} = {shown}: {allowed}".replace("\n", " "))

    @classmethod
    def plain(cls, file: str, message: str) -> ConfigError:
        """An error about a whole file rather than one key (``FILE: MESSAGE``)."""
        e = cls(file, "<file>", None, message)
        e.args = (f"{e.file}: {message}".replace("\n", " "),)
        return e


def require_int(file: str | None, key: str, value: Any, lo: int, what: str | None = None) -> int:
    """``value`` if it is an integer (not a bool) >= ``lo``, else a ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ConfigError(file, key, value, what or f"an integer >= {lo}")
    return value


def one_of(file: str | None, key: str, value: Any, choices) -> Any:
    """``value`` if it is among ``choices``, else a ConfigError listing them."""
    if value not in choices:
        raise ConfigError(file, key, value, f"one of {', '.join(map(str, choices))}")
    return value
