"""Name-keyed registries: config names map to small classes or factories, created lazily."""

from __future__ import annotations

from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from config name to a class or factory.

    >>> ACTS = Registry("activation")
    >>> @ACTS.register("softmax")
    ... class Softmax: ...
    >>> ACTS.names()
    ['softmax']
    """

    def __init__(self, kind: str, default: str | None = None) -> None:
        """``kind`` names the registry in errors; ``default`` is the choice a config that
        leaves this registry's key out gets (it must be registered before first use)."""
        self.kind = kind
        self.default = default
        self._entries: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def deco(obj: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            if isinstance(obj, type):
                obj.registered_name = name  # the config name, for messages
            return obj

        return deco

    def get(self, name: str) -> Callable[..., T]:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(
                f"unknown {self.kind} {name!r}; choose one of {', '.join(self.names())}"
            ) from None

    def create(self, name: str, *args: Any, **kwargs: Any) -> T:
        return self.get(name)(*args, **kwargs)

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
