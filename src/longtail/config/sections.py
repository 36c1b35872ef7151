"""The config sections that components bring: ``train.focal`` (a loss), ``train.power`` and ``decouple.power``
(a sampler), ``data.filelist`` (a dataset reader), ``decouple.crt`` (a stage-2 method).

A component's spec registers its section dataclass under a parent (``data``,
``train`` or ``decouple``) when its file is imported; the parent section holds
an instance of it under ``sections`` and reads it as an attribute
(``config.train.focal.gamma``). Keys a component renamed are kept as aliases
(:data:`RENAMED`), so config files and run directories of older versions still
load. Nothing here names a component: :func:`load_components` asks the
registries, which import their packages.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from ..registry import DATASETS, LOSSES, METHODS, SAMPLERS

log = logging.getLogger(__name__)

PARENTS = ("data", "train", "decouple")
# "train.focal" -> its dataclass, in registration order.
SECTIONS: dict[str, type] = {}
# An old dotted key -> the dotted keys that replace it (one key may become several, e.g. one per loss).
RENAMED: dict[str, tuple[str, ...]] = {}


def load_components() -> None:
    """Import every component package, so that every section is registered (once; cheap afterwards)."""
    for registry in (LOSSES, SAMPLERS, DATASETS, METHODS):
        registry.names()


def register_section(parent: str, name: str, cls: type, *, renamed: dict[str, str] | None = None) -> None:
    """Make ``parent.name.*`` keys with the fields of dataclass ``cls``; ``renamed`` maps an old dotted key to
    the name of the field of ``cls`` that replaces it (``{"train.focal_gamma": "gamma"}``)."""
    if parent not in PARENTS:
        raise ValueError(f"config section {parent}.{name}: expected a parent among {', '.join(PARENTS)}")
    path = f"{parent}.{name}"
    if SECTIONS.get(path, cls) is not cls:
        raise ValueError(f"config section {path} is registered twice")
    from .schema import parent_fields  # local: the schema's classes read these sections

    if name in parent_fields(parent):
        raise ValueError(f"config section {path}: already a key of the {parent} section")
    SECTIONS[path] = cls
    for old, new in (renamed or {}).items():
        RENAMED[old] = (*RENAMED.get(old, ()), f"{path}.{new}")


def register_component_sections(
    parents: Sequence[str], name: str, cls: type | None, renamed: dict[str, str] | None = None
) -> None:
    """A component's options ``cls`` (None: it has none) as the section ``<parent>.<name>`` of each of
    ``parents``; ``renamed`` maps an old key relative to the parent (``{"focal_gamma": "gamma"}``) to its field."""
    if cls is None:
        return
    for parent in parents:
        register_section(parent, name, cls, renamed={f"{parent}.{old}": new for old, new in (renamed or {}).items()})


def unregister_component_sections(parents: Sequence[str], name: str) -> None:
    """Undo :func:`register_component_sections` (tests, plugins)."""
    for parent in parents:
        unregister_section(parent, name)


def unregister_section(parent: str, name: str) -> None:
    """Remove a section registered by :func:`register_section` (tests, plugins), with its renamed keys."""
    path = f"{parent}.{name}"
    SECTIONS.pop(path, None)
    for old, new in list(RENAMED.items()):
        kept = tuple(key for key in new if not key.startswith(path + "."))
        if kept:
            RENAMED[old] = kept
        else:
            del RENAMED[old]


def sections_of(parent: str) -> dict[str, type]:
    """``{name: dataclass}`` of the sections registered under ``parent``."""
    load_components()
    found = {path.split(".", 1)[1]: cls for path, cls in SECTIONS.items() if path.split(".", 1)[0] == parent}
    return dict(sorted(found.items()))  # by name: the same order whatever imported the components first


def default_sections(parent: str) -> dict[str, Any]:
    """A default instance of each section of ``parent``."""
    return {name: cls() for name, cls in sections_of(parent).items()}


class Sectioned:
    """A config section whose registered sub-sections read as attributes (``train.focal``, ``decouple.crt``)."""

    def __getattr__(self, name: str) -> Any:
        sections = self.__dict__.get("sections", {})
        if name in sections:
            return sections[name]
        raise AttributeError(f"{type(self).__name__} has no key or section {name!r}")


def apply_renamed(tree: dict[str, Any]) -> None:
    """Move the values of renamed keys in a config tree to their new keys (said once in the log).

    Raises:
        ConfigError: when a key is given under its old and its new name.
    """
    from ..errors import ConfigError

    load_components()
    for old, new_keys in RENAMED.items():
        found, value = _pop_dotted(tree, old)
        if not found:
            continue
        log.warning("config key %s is now %s; read as such", old, " and ".join(new_keys))
        for new in new_keys:
            if _get_dotted(tree, new)[0]:
                raise ConfigError(f"{old} and {new}: the same key under its old and new name; keep {new}")
            _set_dotted_raw(tree, new, value)


def _get_dotted(tree: dict[str, Any], key: str) -> tuple[bool, Any]:
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _pop_dotted(tree: dict[str, Any], key: str) -> tuple[bool, Any]:
    *parents, leaf = key.split(".")
    node: Any = tree
    for part in parents:
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    if not isinstance(node, dict) or leaf not in node:
        return False, None
    return True, node.pop(leaf)


def _set_dotted_raw(tree: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
