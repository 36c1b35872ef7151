"""The config as documentation: every key with its default, help and what it accepts (``longtail config
--help``, docs/configuration.md), generated from the schema and the registered sections."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any

from .fields import field_types, is_nullable, type_name
from .options import constraint_of, expected
from .schema import Config


@dataclass(frozen=True)
class KeyDoc:
    """One leaf key: dotted name, default, help, and what it accepts in words."""

    key: str
    default: Any
    help: str
    accepts: str


def key_docs(cls: type = Config, prefix: str = "") -> list[KeyDoc]:
    """Every leaf key of ``cls`` (default: the whole config), in declaration order, sections after their parent."""
    docs: list[KeyDoc] = []
    defaults = cls()
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name, hint in field_types(cls).items():
        if dataclasses.is_dataclass(hint):
            docs += key_docs(hint, f"{prefix}{name}.")
            continue
        within = expected(constraint_of(cls, name), prefix, nullable=is_nullable(hint))
        help_text = fields[name].metadata.get("help", "")
        docs.append(KeyDoc(f"{prefix}{name}", getattr(defaults, name), help_text, within or type_name(hint)))
    return docs


def config_reference(cls: type = Config, prefix: str = "") -> list[tuple[str, Any, str]]:
    """``(dotted key, default, help)`` for every leaf key, in declaration order."""
    return [(doc.key, doc.default, doc.help) for doc in key_docs(cls, prefix)]


def text_keys(cls: type = Config, prefix: str = "") -> set[str]:
    """The keys whose value is free text (``str`` or ``str | None``): paths, names, devices."""
    keys: set[str] = set()
    for name, hint in field_types(cls).items():
        if dataclasses.is_dataclass(hint):
            keys |= text_keys(hint, f"{prefix}{name}.")
        elif hint is str or set(typing.get_args(hint)) == {str, type(None)}:
            keys.add(f"{prefix}{name}")
    return keys


def config_keys() -> list[str]:
    """Every dotted leaf key of the config, e.g. ``train.lr``."""
    return [doc.key for doc in key_docs()]


def config_markdown_table() -> str:
    """Every key, its default, what it accepts and its help as the Markdown table of docs/configuration.md."""
    rows = ["| key | default | accepts | meaning |", "|---|---|---|---|"]
    for doc in key_docs():
        default = doc.default
        value = "null" if default is None else str(default).lower() if isinstance(default, bool) else repr(default)
        cells = [f"`{doc.key}`", f"`{value}`", doc.accepts, doc.help]
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows)


# Each kind of component, the key that chooses it, and the parents its sections live under.
COMPONENT_KINDS = (
    ("Dataset readers", "data.name", "DATASETS", ("data",)),
    ("Stage-1 losses", "train.loss", "LOSSES", ("train",)),
    ("Sampling strategies", "train.sampler, decouple.sampler", "SAMPLERS", ("train", "decouple")),
    ("Stage-2 methods", "--method", "METHODS", ("decouple",)),
)


@dataclass(frozen=True)
class ComponentDoc:
    """One registered component: its kind, name, what it does and its own keys."""

    kind: str
    chooser: str
    name: str
    summary: str
    keys: list[str]


def component_docs() -> list[ComponentDoc]:
    """Every registered dataset reader, loss, sampler and stage-2 method, read from the registries."""
    from .. import registry  # the registries hold the specs; each kind's package registers its files
    from .sections import sections_of

    docs = []
    for kind, chooser, attribute, parents in COMPONENT_KINDS:
        entries = getattr(registry, attribute).items()
        # Methods in their table order, the other kinds by name: the same order whoever imported them first.
        for name, spec in sorted(entries, key=lambda item: (getattr(item[1], "order", 0), item[0])):
            section = getattr(spec, "section", None) or name
            keys = [
                f"{parent}.{section}.{doc.key}"
                for parent in parents
                if section in sections_of(parent)
                for doc in key_docs(sections_of(parent)[section])
            ]
            summary = getattr(spec, "summary", "") or getattr(spec, "law", "") or spec.label
            docs.append(ComponentDoc(kind, chooser, name, summary, keys))
    return docs


def components_markdown() -> str:
    """The components as Markdown sections (docs/configuration.md): name, what it does, its own keys."""
    lines: list[str] = []
    for kind, chooser, _, _ in COMPONENT_KINDS:
        lines += ["", f"### {kind} (`{chooser}`)", "", "| name | what it does | its own keys |", "|---|---|---|"]
        for doc in (d for d in component_docs() if d.kind == kind):
            keys = ", ".join(f"`{key}`" for key in doc.keys) or "–"
            lines.append(f"| `{doc.name}` | {doc.summary.replace('|', chr(92) + '|')} | {keys} |")
    return "\n".join(lines).strip("\n")


def components_text() -> str:
    """The components as plain text, for ``longtail COMMAND --help``."""
    lines: list[str] = []
    for kind, chooser, _, _ in COMPONENT_KINDS:
        lines.append(f"{kind.lower()} ({chooser}):")
        for doc in (d for d in component_docs() if d.kind == kind):
            lines.append(f"  {doc.name}: {doc.summary}")
    return "\n".join(lines)


GENERATED_BEGIN = "<!-- generated by scripts/update_config_docs.py from the config and the registries: do not edit -->"
GENERATED_END = "<!-- end of the generated reference -->"


def reference_markdown() -> str:
    """The generated part of docs/configuration.md: every key, then every component with its own keys."""
    return "\n".join(
        [
            GENERATED_BEGIN,
            "",
            config_markdown_table(),
            "",
            "## Components",
            "",
            "Every dataset reader, loss, sampling strategy and stage-2 method registered, with what it does and the "
            "keys of its own section.",
            "",
            components_markdown(),
            "",
            GENERATED_END,
        ]
    )
