"""Declarative options: every config key states its default, help and constraint once, where it is declared.

``option(default, help, within=Interval(0, 1, closed="left"))`` is a dataclass
field; one routine (:func:`check_value`) turns its constraint into the check of
a config value, the "expected ..." of the one-line error, the "valid" column of
docs/configuration.md, and the parameter validation of the scikit-learn
estimator, in the spirit of scikit-learn's ``_parameter_constraints``.

A bound may name a sibling key of the same section (``Interval(0, "epochs",
closed="left")``: at least 0 and below the section's ``epochs``); rules across
sections are ``check(config)`` functions of the specs that need them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any, Protocol

from ..errors import ConfigError, shown

INT64 = 2**63  # NumPy, torch and the DataLoader take integers in [-2**63, 2**63); more overflows deep inside


class Constraint(Protocol):
    """What a value of one key may be: ``allows`` it (given its section, for sibling bounds), and says so."""

    def allows(self, value: Any, section: Any) -> bool: ...

    def describe(self, prefix: str) -> str: ...


def _number(value: float) -> str:
    if value == INT64:
        return "2**63"
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


@dataclass(frozen=True)
class Interval:
    """A number between ``low`` and ``high`` (None: unbounded; a string: that sibling key's value).

    ``closed`` says which ends belong to it: ``both``, ``left``, ``right`` or ``neither``;
    ``integer`` makes it "an integer in ..." in messages (the type already requires one).
    Floats must be finite.
    """

    low: float | str | None = None
    high: float | str | None = None
    closed: str = "both"
    integer: bool = False

    def _bound(self, bound: float | str | None, section: Any) -> float | None:
        return getattr(section, bound) if isinstance(bound, str) else bound

    def allows(self, value: Any, section: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, Integral if self.integer else Real):
            return False  # NumPy's numbers count (the estimator's parameters), True does not
        if isinstance(value, float) and not math.isfinite(value):  # any int is finite (a huge one overflows isfinite)
            return False
        low, high = self._bound(self.low, section), self._bound(self.high, section)
        if low is not None and (value < low or (value == low and self.closed in ("right", "neither"))):
            return False
        return high is None or not (value > high or (value == high and self.closed in ("left", "neither")))

    def describe(self, prefix: str) -> str:
        noun = "an integer" if self.integer else "a number"
        low, high = (
            f"{prefix}{b}" if isinstance(b, str) else None if b is None else _number(b) for b in (self.low, self.high)
        )
        if low is not None and high is not None:
            left = "[" if self.closed in ("both", "left") else "("
            right = "]" if self.closed in ("both", "right") else ")"
            return f"{noun} in {left}{low}, {high}{right}"
        if low is not None:
            return f"{noun} {'>=' if self.closed in ('both', 'left') else '>'} {low}"
        if high is not None:
            return f"{noun} {'<=' if self.closed in ('both', 'right') else '<'} {high}"
        return f"a finite {noun.split()[-1]}"


@dataclass(frozen=True)
class AutoOr:
    """The word ``auto`` (a value the code resolves later, e.g. from the data size) or what ``within`` allows."""

    within: Interval

    def allows(self, value: Any, section: Any) -> bool:
        return value == "auto" or self.within.allows(value, section)

    def describe(self, prefix: str) -> str:
        return f"'auto' or {self.within.describe(prefix)}"


@dataclass(frozen=True)
class Each:
    """A list of ``min_items`` to ``max_items`` items, each allowed by ``item``."""

    item: Interval
    min_items: int = 0
    max_items: int | None = None

    def allows(self, value: Any, section: Any) -> bool:
        if not isinstance(value, list | tuple):
            return False
        count_ok = len(value) >= self.min_items and (self.max_items is None or len(value) <= self.max_items)
        return count_ok and all(self.item.allows(v, section) for v in value)

    def describe(self, prefix: str) -> str:
        items = self.item.describe(prefix).replace("a number", "numbers").replace("an integer", "integers")
        if self.max_items is None:
            return f"{'a non-empty list' if self.min_items else 'a list'} of {items}"
        return f"a list of {self.min_items} to {self.max_items:,} {items}"


@dataclass(frozen=True)
class OneOf:
    """A name registered in ``registry`` (a :class:`~longtail.registry.Registry`) or in a sequence of names,
    listed in the message."""

    registry: Any

    def allows(self, value: Any, section: Any) -> bool:
        return isinstance(value, str) and value in self.registry

    def describe(self, prefix: str) -> str:
        names = self.registry.names() if hasattr(self.registry, "names") else self.registry
        return "one of " + ", ".join(names)


@dataclass(frozen=True)
class Satisfies:
    """Whatever ``test(value)`` accepts, described as ``expected``."""

    test: Callable[[Any], bool]
    expected: str

    def allows(self, value: Any, section: Any) -> bool:
        return self.test(value)

    def describe(self, prefix: str) -> str:
        return self.expected


def option(default: Any, help: str, within: Constraint | None = None) -> Any:
    """A config field: its default, the help text of ``--help`` and the docs, and its constraint (if any)."""
    metadata = {"help": help, "within": within}
    if isinstance(default, list):  # a mutable default needs a factory
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def constraint_of(cls: type, name: str) -> Constraint | None:
    """The constraint of field ``name`` of dataclass ``cls``: its own, or, when a subclass redeclares the field
    with another default and help only, the nearest base class's (``decouple.crt.lr`` keeps ``lr > 0``)."""
    for klass in cls.__mro__:
        found = getattr(klass, "__dataclass_fields__", {}).get(name)
        if found is not None and found.metadata.get("within") is not None:
            return found.metadata["within"]
    return None


def expected(within: Constraint | None, prefix: str = "", *, nullable: bool = False) -> str:
    """What a key accepts, in words: ``an integer >= 1``, ``null or a number in [0, 1)``."""
    text = within.describe(prefix) if within is not None else ""
    return f"null or {text}" if nullable and text else text


def check_value(
    key: str, value: Any, within: Constraint | None, section: Any = None, *, prefix: str = "", nullable: bool = False
) -> None:
    """Refuse ``value`` of ``key`` unless ``within`` allows it (None passes: the type said whether it may be).

    Raises:
        ConfigError: ``"{key}={value}: expected {what within allows}"`` (``null or ...`` for a ``nullable`` key).
    """
    if within is None or value is None:
        return
    if not within.allows(value, section):
        raise ConfigError(f"{key}={shown(value)}: expected {expected(within, prefix, nullable=nullable)}")


def require(ok: bool, key: str, value: Any, expected_text: str) -> None:
    """A rule across keys: refuse ``value`` of ``key`` unless ``ok``, saying what was expected."""
    if not ok:
        raise ConfigError(f"{key}={shown(value)}: expected {expected_text}")


@dataclass(frozen=True)
class Parameters:
    """Named constraints outside the config (an estimator's ``__init__`` parameters), checked the same way."""

    constraints: dict[str, Constraint] = field(default_factory=dict)
    nullable: tuple[str, ...] = ()  # the parameters that may be None (the others must be what they allow)

    def check(self, values: dict[str, Any], skip: Sequence[str] = ()) -> None:
        """Refuse the first value its constraint does not allow (in the constraints' order, so that a sibling
        bound is checked before it is used), with :func:`check_value`'s message."""
        for name, within in self.constraints.items():
            if name in skip:
                continue
            if values[name] is None:
                if name in self.nullable:
                    continue
                raise ConfigError(f"{name}=None: expected {expected(within)}")
            check_value(name, values[name], within, _Values(values))


class _Values:
    """Attribute access to a dict, for sibling bounds of :class:`Parameters`."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)
