"""Reading JSON and YAML files from elsewhere: bounded in size and in nesting, plain data only.

Every JSON or YAML text longtail reads (``results.json``, ``metrics.jsonl``
lines, a backbone file's ``PATH.json``, the metadata and program of a ``.pt2``,
the lock record of a run, the image-check cache, config files and ``key=value``
overrides) goes through this module:

- its size is checked before it is read (:func:`read_text_file`): a file larger
  than its kind ever is is refused, not read into memory;
- its nesting is measured before it is parsed (:func:`json_depth`, a linear scan
  with NumPy): a text nested deeper than :data:`MAX_JSON_DEPTH` is refused, so
  neither the parser nor any code walking the result can exhaust the stack (a
  200 KB file of ``[[[[...`` is a ``RecursionError`` to ``json.loads``);
- YAML is composed by PyYAML's safe loader without aliases (``&a``/``*a`` turn a
  few hundred bytes into gigabytes) and at most :data:`MAX_YAML_DEPTH` levels deep;
  a key given twice in one mapping is refused (PyYAML would keep the last).

Each refusal is one line of the caller's error type, naming the file.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .errors import LongtailError

MAX_JSON_DEPTH = 64  # results.json nests 7 levels, a torch.export program about 20: 64 is no file of ours
MAX_YAML_DEPTH = 64  # a config nests 3 levels (decouple.crt.lr)
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)  # a JSON string, escapes included
_OPEN, _CLOSE = np.frombuffer(b"[{", np.uint8), np.frombuffer(b"]}", np.uint8)


def read_text_file(path: str | Path, what: str, *, max_bytes: int, error: type[LongtailError], hint: str = "") -> str:
    """The UTF-8 text of ``path``, refused unread when it holds more than ``max_bytes``.

    Args:
        path: the file.
        what: what it is, for the message ("backbone JSON", "results file").
        max_bytes: the most a file of this kind holds.
        error: the error type of a refusal; ``hint`` ends its message.

    Raises:
        ``error``: the file is larger than ``max_bytes`` or not UTF-8 text (naming the line).
        OSError: the file cannot be opened (the caller says what that means).
    """
    path = Path(path)
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > max_bytes:
            raise error(f"{path}: {size:,} bytes, more than a {what} holds ({max_bytes:,}){hint}")
        data = handle.read(max_bytes + 1)  # the file may have grown since fstat: never more than the bound
    if len(data) > max_bytes:
        raise error(f"{path}: more than the {max_bytes:,} bytes a {what} holds{hint}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as failure:
        line = data[: failure.start].count(b"\n") + 1
        raise error(f"{path}:{line}: not UTF-8 text, expected a {what}{hint}") from None


def json_depth(text: str | bytes) -> int:
    """How deep ``text``'s arrays and objects nest (0 for a scalar), without parsing it: linear time, no stack."""
    if isinstance(text, str):
        text = text.encode("utf-8", "surrogatepass")
    stripped = _STRING.sub(b'""', text) if b'"' in text else text  # brackets inside strings do not nest
    data = np.frombuffer(stripped, np.uint8)
    steps = np.isin(data, _OPEN).astype(np.int64) - np.isin(data, _CLOSE)
    return int(np.cumsum(steps).max(initial=0)) if len(steps) else 0


def parse_json(
    text: str | bytes, where: str, *, error: type[LongtailError], hint: str = "", max_depth: int = MAX_JSON_DEPTH
) -> Any:
    """``json.loads(text)``, refused with one ``error`` line naming ``where`` when it is not JSON or nests deeper
    than ``max_depth``."""
    depth = json_depth(text)
    if depth > max_depth:
        raise error(f"{where}: not valid JSON for longtail (nested {depth} levels deep, at most {max_depth}){hint}")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as failure:  # ValueError: JSONDecodeError, an integer of 4300+ digits
        raise error(f"{where}: not valid JSON ({failure.__class__.__name__}){hint}") from None


def read_json_file(
    path: str | Path,
    what: str,
    *,
    max_bytes: int,
    error: type[LongtailError],
    hint: str = "",
    max_depth: int = MAX_JSON_DEPTH,
) -> Any:
    """:func:`parse_json` of :func:`read_text_file`: a JSON file bounded in size and nesting."""
    text = read_text_file(path, what, max_bytes=max_bytes, error=error, hint=hint)
    return parse_json(text, str(path), error=error, hint=hint, max_depth=max_depth)


# --------------------------------------------------------------------------- YAML


class YamlAliasRefused(Exception):
    """A YAML alias (``*name``), refused: ``anchor`` and the 1-based ``line``."""

    def __init__(self, event: yaml.AliasEvent) -> None:
        super().__init__(event.anchor)
        self.anchor, self.line = event.anchor, event.start_mark.line + 1


class YamlTooDeep(Exception):
    """YAML nested deeper than :data:`MAX_YAML_DEPTH`."""


class YamlDuplicateKey(Exception):
    """A key given twice in one YAML mapping (PyYAML keeps the last silently): ``key`` and the 1-based ``line``
    of its second occurrence."""

    def __init__(self, node: yaml.ScalarNode) -> None:
        super().__init__(node.value)
        self.key, self.line = node.value, node.start_mark.line + 1


class SafeYamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader (plain data only) without aliases and at most :data:`MAX_YAML_DEPTH` levels deep."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise YamlAliasRefused(self.peek_event())
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise YamlTooDeep(f"nested more than {MAX_YAML_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        # A config that says `epochs: 10` and, further down, `epochs: 200` means one of them by mistake.
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if (key_node.tag, key_node.value) in seen:
                    raise YamlDuplicateKey(key_node)
                seen.add((key_node.tag, key_node.value))
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, loader: type[SafeYamlLoader] = SafeYamlLoader) -> Any:
    """``text`` as YAML data with :class:`SafeYamlLoader` (or a subclass: a config's keeps YAML 1.1-only numbers as
    text, :mod:`longtail.config.yaml11`).

    Raises:
        YamlAliasRefused, YamlTooDeep, YamlDuplicateKey, yaml.YAMLError, ValueError (an integer of 4300+ digits),
        RecursionError.
    """
    if not (isinstance(loader, type) and issubclass(loader, SafeYamlLoader)):  # plain data only, whatever a caller
        raise TypeError(f"parse_yaml: loader {loader!r} is not a SafeYamlLoader")
    return yaml.load(text, Loader=loader)  # a SafeLoader subclass: plain data only
