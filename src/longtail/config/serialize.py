"""The config as plain data (YAML / JSON) and back; written next to every checkpoint as ``config.yaml``."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import yaml

from ..fs.atomic import write_text_atomic
from .fields import field_types


def config_to_dict(config: Any) -> dict[str, Any]:
    """The config (or one of its sections) as a plain nested dict (YAML/JSON-ready), sections included."""
    tree: dict[str, Any] = {}
    for name in field_types(type(config)):
        value = getattr(config, name)
        tree[name] = config_to_dict(value) if dataclasses.is_dataclass(value) else copy.deepcopy(value)
    return tree


def save_config(config: Any, path: Path) -> None:
    """Write the resolved config as YAML, atomically."""
    write_text_atomic(path, yaml.safe_dump(config_to_dict(config), sort_keys=False))
