"""The keys of a config section and their types, and the conversion of a value to its key's type."""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any, Literal, Union

from ..errors import ConfigError, shown
from .sections import sections_of
from .yaml11 import Yaml11Text, marked, yaml11_note

PARENT_NAMES = {"DataConfig": "data", "TrainConfig": "train", "DecoupleConfig": "decouple"}


def field_types(cls: type) -> dict[str, Any]:
    """Key -> type of a config dataclass, in order; a parent's registered sections last (their dataclasses)."""
    parent = PARENT_NAMES.get(cls.__name__)
    sections = tuple(sections_of(parent).items()) if parent else ()
    return dict(_cached_field_types(cls, sections))


@functools.lru_cache(maxsize=256)
def _cached_field_types(cls: type, sections: tuple[tuple[str, type], ...]) -> tuple[tuple[str, Any], ...]:
    # Resolving type hints is slow and every key=value override needs them: once per class (and sections).
    hints = typing.get_type_hints(cls)
    return (*((f.name, hints[f.name]) for f in dataclasses.fields(cls) if f.name != "sections"), *sections)


def is_section(cls: type, name: str) -> bool:
    """Whether ``name`` of ``cls`` is a registered component section (held in ``sections``)."""
    parent = PARENT_NAMES.get(cls.__name__)
    return parent is not None and name in sections_of(parent)


def is_nullable(hint: Any) -> bool:
    """Whether a key of type ``hint`` may be null (``int | None``)."""
    return typing.get_origin(hint) in (Union, types.UnionType) and type(None) in typing.get_args(hint)


def type_name(hint: Any) -> str:
    """A type in words, as an error message says what was expected."""
    if typing.get_origin(hint) is Literal:
        return " | ".join(repr(v) for v in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        return f"a list of {type_name(typing.get_args(hint)[0])}"
    if typing.get_origin(hint) in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(hint))
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


def coerce(key: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against ``hint``; strings from the command line are converted.

    A :class:`~longtail.config.yaml11.Yaml11Text` (``1:30``, ``017``, ``1_000``, ``on``) is text for a text key,
    a bool for a bool key (``yes``/``no``/``on``/``off``) and refused for a number key: YAML 1.1 would read it
    as a number the user most likely did not mean."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return coerce(key, value, option)
            except ConfigError:
                continue
    elif origin is Literal:
        if value in typing.get_args(hint):
            return next(option for option in typing.get_args(hint) if option == value)  # the option, not the text
    elif origin is list:
        if isinstance(value, Yaml11Text):
            value = [value]  # eval.shift=1:30: one item, refused as a number below
        elif isinstance(value, str):  # from the command line: "0.5,1,2" or "[0.5, 1, 2]"
            value = [marked(part.strip()) for part in value.strip("[] ").split(",") if part.strip()]
        elif isinstance(value, int | float) and not isinstance(value, bool):
            value = [value]  # one number is a list of one: eval.shift=10 as eval.shift=10,50 (YAML read it as 10)
        if isinstance(value, (list, tuple)):
            (item_hint,) = typing.get_args(hint)
            return [coerce(f"{key}[{i}]", item, item_hint) for i, item in enumerate(value)]
    elif hint is type(None):
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none", "~")):
            return None
    elif hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off", "1", "0"):
            return value.lower() in ("true", "yes", "on", "1")
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and not isinstance(value, Yaml11Text):  # int("1_000") and int("017") would pass
            try:
                return int(value)
            except ValueError:
                pass
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and not isinstance(value, Yaml11Text):  # YAML reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str:
        if isinstance(value, str):
            return str(value)  # a Yaml11Text as plain text
    raise ConfigError(
        f"{key}={shown(str(value) if isinstance(value, str) else value)}: expected {type_name(hint)}"
        f"{yaml11_note(value)}"
    )
