"""A config built from defaults, a YAML file and ``key=value`` overrides: every key and type checked."""

from __future__ import annotations

import copy
import dataclasses
import datetime
import difflib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from ..errors import SHOWN_CHARS, ConfigError, shown
from ..registry import DATASETS
from ..safe_text import YamlAliasRefused, YamlDuplicateKey, YamlTooDeep, parse_yaml
from .fields import coerce, field_types, is_section
from .reference import config_keys, text_keys
from .schema import Config
from .sections import RENAMED, apply_renamed, load_components
from .validate import validate_config
from .yaml11 import ConfigYamlLoader, Yaml11Text
from .yaml_file import read_config_file

EXTERNAL_BACKBONES = ("export:",)


def unknown_key(key: str) -> ConfigError:
    """The error of a key that does not exist, naming the closest one that does."""
    keys = config_keys()
    same_but_case = [k for k in keys if k.lower() == key.lower()]  # keys are lower case: TRAIN.EPOCHS is train.epochs
    close = same_but_case or difflib.get_close_matches(key[:SHOWN_CHARS], keys, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown config key {shown(key)}{hint}")


def build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict, checking every key and type."""
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {shown(values)}")
    hints = field_types(cls)
    kwargs: dict[str, Any] = {}
    sections: dict[str, Any] = {}
    for name, value in values.items():
        key = f"{prefix}{name}"
        if name not in hints:
            raise unknown_key(key)
        hint = hints[name]
        if is_section(cls, name):
            sections[name] = build(hint, value, f"{key}.")
        elif dataclasses.is_dataclass(hint):
            kwargs[name] = build(hint, value, f"{key}.")
        else:
            kwargs[name] = coerce(key, value, hint)
    built = cls(**kwargs)
    if sections:
        built.sections.update(sections)
    return built


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    """Set ``a.b.c`` in a nested dict."""
    node = tree
    *parents, leaf = key.split(".")
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise unknown_key(key)
        node = child
    node[leaf] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``key=value``; the value is read as YAML (``[1, 2]``, ``null``, ``true``). A renamed key is
    accepted under its old name (:data:`~longtail.config.sections.RENAMED`)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {shown(text)}: expected key=value, e.g. train.epochs=5")
    load_components()
    if key not in config_keys() and key not in RENAMED:
        section = [k for k in config_keys() if k.startswith(key + ".")]
        if section:
            raise ConfigError(f"{key}: is a section, not a key; set one of its keys, e.g. {section[0]}=...")
        raise unknown_key(key)
    try:
        value = parse_yaml(raw, ConfigYamlLoader) if raw.strip() else ""
    except (yaml.YAMLError, YamlAliasRefused, YamlTooDeep, YamlDuplicateKey, ValueError, RecursionError):
        value = raw
    # Keep the raw text for strings so that e.g. data.root=/x/1e3 stays as typed; a key of free text also keeps
    # what YAML would read as another type: data.root=2024 is the directory 2024, device=0 the text "0".
    if isinstance(value, bool | int | float | datetime.date) and key in text_keys():
        return key, raw.strip()
    if isinstance(value, Yaml11Text):  # seed=1:30: kept marked, so that coerce refuses it rather than read int("1_000")
        return key, value
    return key, raw if isinstance(value, str) else value


def as_names(values: str | Iterable[str]) -> list[str]:
    """A sequence of names or ``key=value`` overrides as a list; a lone string is one entry, not its characters
    (``decouple(run, "crt")`` was refused as "--method 'c'")."""
    return [values] if isinstance(values, str) else list(values)


def load_config(path: str | Path | None = None, overrides: str | Iterable[str] = ()) -> Config:
    """Defaults, then the YAML file at ``path`` (if any), then ``key=value`` overrides; validated.

    One override may be given as a string (``"train.epochs=5"``): iterated, it was its characters."""
    overrides = as_names(overrides)
    tree: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        loaded = read_config_file(path)
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path}: expected a mapping of keys, got {type(loaded).__name__}")
        tree = loaded or {}
        # Old key names are read as the new ones in the file and on the command line separately, so that an
        # override replaces the file's value under either name (an older run's config.yaml holds
        # decouple.ncm_metric: decouple.ncm.metric=l2 must win, not be "the same key under two names").
        apply_renamed(tree)
    layer: dict[str, Any] = {}
    keys: list[str] = []
    for text in overrides:
        key, value = parse_override(text)
        set_dotted(layer, key, value)
        keys.extend(RENAMED.get(key, (key,)))
    apply_renamed(layer)  # both names of one key on the command line are still refused
    for key in dict.fromkeys(keys):
        set_dotted(tree, key, _get_dotted(layer, key))
    return config_from_dict(tree)


def _get_dotted(tree: dict[str, Any], key: str) -> Any:
    """The value at ``a.b.c`` of a nested dict that holds it."""
    node: Any = tree
    for part in key.split("."):
        node = node[part]
    return node


def config_from_dict(values: dict[str, Any]) -> Config:
    """A validated config from a nested dict (the inverse of :func:`~longtail.config.config_to_dict`)."""
    tree = copy.deepcopy(values)
    apply_renamed(tree)
    _expand_home(tree)
    _implied_model_keys(tree)
    config = build(Config, tree)
    validate_config(config)
    return config


HOME_EXPANDED = ("root", "path")  # data keys naming where the data lives (run-time keys, free to change)


def _expand_home(tree: dict[str, Any]) -> None:
    """``data.root=~/data`` is the home directory's ``data``, as ``model.backbone=export:~/m.pt2`` is.

    The shell leaves ``~`` of ``data.root=~/x`` as typed (it is no variable assignment),
    and no reader expands it: "~/x: directory not found" for a directory that exists.
    """
    data = tree.get("data")
    if not isinstance(data, dict):
        return  # build names a malformed section
    for name in HOME_EXPANDED:
        value = data.get(name)
        if isinstance(value, str) and value.startswith("~"):
            data[name] = os.path.expanduser(value)  # an unknown ~user stays as typed (Path.expanduser raises)


def _implied_model_keys(tree: dict[str, Any]) -> None:
    """Model keys that follow from others when not given: ``model.backbone=identity`` for a reader of feature
    vectors, ``model.trainable=none`` for a backbone file, whose path is made absolute (a run is read from
    anywhere)."""
    data, model = tree.get("data") or {}, tree.get("model") or {}
    if not isinstance(data, dict) or not isinstance(model, dict):
        return  # build names the malformed section
    name = data.get("name")
    if isinstance(name, str) and name in DATASETS and DATASETS.get(name).holds_features and "backbone" not in model:
        model["backbone"] = "identity"
    backbone = model.get("backbone")
    if isinstance(backbone, str) and backbone.startswith(EXTERNAL_BACKBONES):
        kind, _, path = backbone.partition(":")
        model["backbone"] = f"{kind}:{Path(os.path.expanduser(path)).absolute()}" if path else backbone
        model.setdefault("trainable", "none")
    if model:
        tree["model"] = model
