"""One registry mechanism for every kind of component chosen by name: name -> spec (or factory).

Each component kind has one :class:`Registry` instance, defined here so that
every layer can look names up (the config checks ``train.loss`` against
:data:`LOSSES` without importing the losses): a component's own file registers
its spec when the package that holds it is imported, and a registry imports
that package (its ``loader``) the first time it is asked for a name. Adding a
component is adding a file; nothing else lists the names.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names to specs (or factories), in registration order.

    Args:
        kind: what the registry holds, for messages ("loss", "dataset").
        key: the config key or option that selects from it, for messages ("train.loss", "--method").
        loader: the module whose import registers the built-in entries (imported on first lookup).
    """

    def __init__(self, kind: str, key: str, loader: str | None = None) -> None:
        self.kind = kind
        self.key = key
        self._loader = loader
        self._entries: dict[str, T] = {}

    def _load(self) -> None:
        if self._loader is not None:
            loader, self._loader = self._loader, None  # once; a module registering more on import is fine
            importlib.import_module(loader)

    def register(self, name: str, entry: T | None = None) -> Any:
        """Register ``entry`` as ``name`` and return it; without ``entry``, a decorator that does so."""
        if entry is None:
            return lambda value: self.register(name, value)
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> T | None:
        """Remove ``name`` (plugins, tests); returns what it held."""
        return self._entries.pop(name, None)

    def get(self, name: str) -> T:
        """The entry of ``name``; a :class:`ConfigError` naming the choices otherwise."""
        self._load()
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise ConfigError(
                f"{self.key}={name!r}: unknown {self.kind}; expected one of {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        self._load()
        return list(self._entries)

    def items(self) -> list[tuple[str, T]]:
        self._load()
        return list(self._entries.items())

    def values(self) -> list[T]:
        self._load()
        return list(self._entries.values())

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the factory registered as ``name`` (a registry of factories)."""
        factory: Callable[..., Any] = self.get(name)  # type: ignore[assignment]
        return factory(*args, **kwargs)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._load()
        return len(self._entries)

    def __getitem__(self, name: str) -> T:
        self._load()
        return self._entries[name]


# The component kinds; each package registers its own files' specs (see the module docstring).
LOSSES: Registry[Any] = Registry("loss", "train.loss", "longtail.losses")
SAMPLERS: Registry[Any] = Registry("sampler", "train.sampler", "longtail.samplers")
DATASETS: Registry[Any] = Registry("dataset reader", "data.name", "longtail.data")
BACKBONES: Registry[Any] = Registry("backbone", "model.backbone", "longtail.models.backbones")
HEADS: Registry[Any] = Registry("classifier head", "head kind", "longtail.methods")  # stage-2 heads live there
METHODS: Registry[Any] = Registry("stage-2 method", "--method", "longtail.methods")
