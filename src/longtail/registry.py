"""Small name -> factory registries, so configs choose components by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories; ``create(name, ...)`` builds one or names the choices.

    Args:
        kind: what the registry holds, used in error messages ("backbone", "dataset").
        key: the config key that selects from it, used in error messages.
    """

    def __init__(self, kind: str, key: str) -> None:
        self.kind = kind
        self.key = key
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering ``factory`` under ``name``."""

        def add(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._factories[name] = factory
            return factory

        return add

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._factories)

    def get(self, name: str) -> Callable[..., T]:
        """The factory registered as ``name``; a :class:`ConfigError` listing the choices otherwise."""
        try:
            return self._factories[name]
        except KeyError:
            raise ConfigError(
                f"{self.key}={name!r}: unknown {self.kind}; expected one of {', '.join(self.names())}"
            ) from None

    def create(self, name: str, *args: Any, **kwargs: Any) -> T:
        """Build the component registered as ``name``."""
        return self.get(name)(*args, **kwargs)

    def __contains__(self, name: object) -> bool:
        return name in self._factories
