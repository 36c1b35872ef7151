"""The YAML 1.1 readings a config does not guess: ``1:30``, ``017``, ``1_000``, ``0b101`` and ``yes``/``on``/``off``.

PyYAML reads YAML 1.1, where ``seed: 1:30`` is the base-60 number 90, ``017``
the octal 15, ``1_000`` 1000, ``0b101`` 5 and ``on``/``off``/``yes``/``no``
booleans; YAML 1.2 (and most readers of a config) reads them as text or as
other numbers. A config value silently changed is worse than one refused, so
:class:`ConfigYamlLoader` keeps such a scalar as the text typed
(:class:`Yaml11Text`); :func:`~longtail.config.fields.coerce` then keeps it as
text for a text key, reads ``yes``/``no``/``on``/``off`` as a bool for a bool
key, and refuses it for a number key with a line saying how YAML 1.1 reads it.
``0x1F``, ``12``, ``1.5`` and ``true``/``false`` mean the same in both versions
and are read as before.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from ..safe_text import SafeYamlLoader, parse_yaml

# Plain scalars YAML 1.1 resolves to a number that YAML 1.2's core schema reads otherwise (or not at all).
_YAML11_ONLY_NUMBER = re.compile(
    r"""[-+]?(?:
        [0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?   # base 60: 1:30 is 90, 1:30.5 is 90.5
      | 0[0-7_]+                                      # octal: 017 is 15 (17 in YAML 1.2)
      | 0b[01_]+                                      # binary: 0b101 is 5
      | [0-9.]*_[0-9_.]*(?:[eE][-+]?[0-9]+)?          # digits grouped with _: 1_000 is 1000
    )""",
    re.VERBOSE,
)
_YAML11_ONLY_BOOL = frozenset({"yes", "no", "on", "off"})  # YAML 1.2 booleans are only true and false


class Yaml11Text(str):
    """A plain scalar of a config kept as typed, because YAML 1.1 would read it as ``reading`` (a number or bool)
    where YAML 1.2 reads it otherwise."""

    reading: Any

    def __new__(cls, text: str, reading: Any) -> Yaml11Text:
        kept = super().__new__(cls, text)
        kept.reading = reading
        return kept

    def __reduce__(self) -> tuple[type, tuple[str, Any]]:  # copy.deepcopy of a config tree keeps the mark
        return Yaml11Text, (str(self), self.reading)


def marked(text: str) -> str:
    """``text`` (one item of a command-line list, ``eval.shift=1_000,2``) as a :class:`Yaml11Text` when it is a
    YAML 1.1-only number or bool, else unchanged: ``float("1_000")`` would read it silently."""
    if _YAML11_ONLY_NUMBER.fullmatch(text) or text.lower() in _YAML11_ONLY_BOOL:
        try:
            reading = parse_yaml(text)  # one plain scalar, of the forms above: a number or a bool
        except (yaml.YAMLError, ValueError):  # not one after all: left to the key's own check
            return text
        if not isinstance(reading, str):
            return Yaml11Text(text, reading)
    return text


def yaml11_note(value: Any) -> str:
    """Why a value refused for a number key is not the number YAML would make of it ("" if nothing to say):
    ``; YAML 1.1 reads 1:30 as the base-60 number 90: write the number in decimal digits``."""
    if isinstance(value, Yaml11Text) and isinstance(value.reading, bool):
        return f"; YAML 1.1 reads {value} as the bool {str(value.reading).lower()}"
    if isinstance(value, Yaml11Text):
        return f"; YAML 1.1 reads {value} as {_described(value)}: write the number meant in decimal digits"
    if isinstance(value, str) and re.fullmatch(r"[-+]?0o[0-7]+", value):
        return f"; {value} is octal only in YAML 1.2, which longtail does not read: write the number in decimal"
    return ""


def _described(value: Yaml11Text) -> str:
    """How YAML 1.1 reads the number ``value``, in words."""
    text = value.lstrip("+-")
    if ":" in text:
        return f"the base-60 number {value.reading}"
    if text.startswith("0b"):
        return f"the binary number {value.reading}"
    if "_" not in text:
        return f"the octal number {value.reading}"
    return f"{value.reading}"


class ConfigYamlLoader(SafeYamlLoader):
    """:class:`~longtail.safe_text.SafeYamlLoader` that keeps YAML 1.1-only numbers and booleans as
    :class:`Yaml11Text`: the loader of config files and ``key=value`` overrides."""

    def construct_yaml_int(self, node: yaml.ScalarNode) -> Any:
        return _kept(node, super().construct_yaml_int(node), _YAML11_ONLY_NUMBER.fullmatch(node.value) is not None)

    def construct_yaml_float(self, node: yaml.ScalarNode) -> Any:
        return _kept(node, super().construct_yaml_float(node), _YAML11_ONLY_NUMBER.fullmatch(node.value) is not None)

    def construct_yaml_bool(self, node: yaml.ScalarNode) -> Any:
        return _kept(node, super().construct_yaml_bool(node), node.value.lower() in _YAML11_ONLY_BOOL)


def _kept(node: yaml.ScalarNode, reading: Any, yaml11_only: bool) -> Any:
    """``reading`` as YAML 1.1 made it, or the text as typed where YAML 1.2 would read it otherwise."""
    return Yaml11Text(node.value, reading) if yaml11_only else reading


ConfigYamlLoader.add_constructor("tag:yaml.org,2002:int", ConfigYamlLoader.construct_yaml_int)
ConfigYamlLoader.add_constructor("tag:yaml.org,2002:float", ConfigYamlLoader.construct_yaml_float)
ConfigYamlLoader.add_constructor("tag:yaml.org,2002:bool", ConfigYamlLoader.construct_yaml_bool)
