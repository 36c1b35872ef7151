"""A config file read as YAML data, hardened: bounded in size and nesting, without aliases (longtail.safe_text)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError, shown
from ..safe_text import YamlAliasRefused, YamlDuplicateKey, YamlTooDeep, parse_yaml
from .yaml11 import ConfigYamlLoader

MAX_CONFIG_BYTES = 1 << 20  # a config is a few kilobytes; a bigger file is not one, and is not read


def read_config_file(path: Path) -> Any:
    """The YAML data of a config file, refused with one line when too large, aliased, too deep or not YAML."""
    if not path.is_file():
        found = "a directory" if path.is_dir() else "not found" if not path.exists() else "not a regular file"
        raise ConfigError(f"config file {path}: {found}; expected a YAML file")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path}: {size:,} bytes, more than a config's {MAX_CONFIG_BYTES:,}")
    try:  # YAML's safe loader, without aliases, bounded in nesting, 1:30 kept as typed (longtail.config.yaml11)
        return parse_yaml(path.read_text(), ConfigYamlLoader)
    except YamlAliasRefused as alias:
        raise ConfigError(
            f"config file {path}: line {alias.line}: YAML alias {shown('*' + alias.anchor)} refused; "
            "write the value out (aliases can expand a small file without bound)"
        ) from None
    except YamlDuplicateKey as duplicate:
        raise ConfigError(
            f"config file {path}: line {duplicate.line}: key {shown(duplicate.key)} given twice in one mapping; "
            "keep one"
        ) from None
    except (YamlTooDeep, RecursionError):
        raise ConfigError(f"config file {path}: nested too deeply to be a config") from None
    except yaml.MarkedYAMLError as error:  # where and what, as the parser says it: a tab, a missing ':'
        mark = error.problem_mark or error.context_mark
        where = f"line {mark.line + 1}: " if mark is not None else ""
        what = f": {error.problem}" if error.problem else ""
        raise ConfigError(f"config file {path}: {where}not valid YAML ({error.__class__.__name__}{what})") from None
    except (yaml.YAMLError, ValueError, UnicodeDecodeError) as error:  # ValueError: an integer of 4300+ digits
        raise ConfigError(f"config file {path}: not valid YAML ({error.__class__.__name__})") from None
