"""What the command modules share: help formatting, the key listing, ``[CONFIG.yaml] [key=value]`` and tables."""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

from ..config import config_keys, config_reference
from ..config.reference import components_text
from ..errors import ConfigError, OutputPathError, shown
from ..evaluation.table import INTERVAL_NOTE, format_table, table_title
from ..pipeline.shift_scores import SHIFT_KEY, SHIFT_NOTE, em_summary, format_shift_table

OVERRIDES_HELP = (
    "config overrides as key=value, applied after the YAML file; e.g. train.epochs=5 train.lr=0.05 "
    "decouple.crt.epochs=20. `longtail config` prints every key with its default."
)


class HelpFormatter(argparse.HelpFormatter):
    """Wraps descriptions; keeps multi-line text (the key listing) one entry a line, each wrapped to the width."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + part + "\n" for line in text.splitlines() for part in wrap_entry(line, width))
        return super()._fill_text(text, width, indent)


# "  key = default   help" of the key listing: the entry, the padding, the help
_ENTRY = re.compile(r"^( +\S.*?\S)( {2,})(\S.*)$")
MIN_HELP_COLUMN = 30  # narrower than this beside the key, the help goes under it


def wrap_entry(line: str, width: int) -> list[str]:
    """One line of the key listing or of the components, wrapped to ``width`` columns.

    The listing's help texts run to 400 characters: a terminal wrapped them at
    its edge, under the keys. Here the help keeps its column where the
    terminal leaves it room, and goes under its key, indented, where it does not.
    """
    if len(line) <= width or not line.strip():
        return [line]
    entry = _ENTRY.match(line)
    if entry is None:  # "  name: summary" of the components: a hanging indent
        lead = len(line) - len(line.lstrip()) + 4
        return textwrap.wrap(line, width, subsequent_indent=" " * lead, break_on_hyphens=False)
    head = entry[1] + entry[2]
    if width - len(head) >= MIN_HELP_COLUMN:
        parts = textwrap.wrap(entry[3], width - len(head), break_on_hyphens=False)
        return [head + parts[0], *(" " * len(head) + part for part in parts[1:])]
    lead = " " * (len(entry[1]) - len(entry[1].lstrip()) + 6)
    return [
        entry[1],
        *textwrap.wrap(entry[3], width, initial_indent=lead, subsequent_indent=lead, break_on_hyphens=False),
    ]


def key_listing() -> str:
    """Every config key with its default and help, for the epilog of --help."""
    rows = config_reference()
    width = max(len(f"{key} = {default!r}") for key, default, _ in rows)
    lines = [f"  {f'{key} = {default!r}'.ljust(width)}  {help}" for key, default, help in rows]
    return "config keys (key = default):\n" + "\n".join(lines) + "\n\n" + components_text()


def split_config_and_overrides(items: Sequence[str]) -> tuple[str | None, list[str]]:
    """``[CONFIG.yaml] [key=value ...]`` -> (config path or None, overrides)."""
    items = list(items)
    config = items.pop(0) if items and "=" not in items[0] else None
    for item in items:
        if "=" not in item:
            raise ConfigError(f"{item!r}: expected key=value (only the first argument may be a config file)")
    return config, items


def refuse_spaced_equals(argv: Sequence[str]) -> None:
    """Refuse ``key = value``, ``key =value`` and ``key= value``, which the shell splits into several arguments.

    Otherwise the key alone was read as a config file ("config file train.epochs: not
    found") or an unrecognized argument, and the value as a stray one, far from the cause.
    Only a known config key before the ``=`` counts, so a run directory named ``=x`` still reads.

    Raises:
        ConfigError: naming the split words and the one argument to write instead.
    """
    keys = set(config_keys())
    for i, word in enumerate(argv[:-1]):
        after = argv[i + 1]
        if word in keys and after.startswith("="):
            key, words = word, argv[i : i + 3] if after == "=" else argv[i : i + 2]  # key = value, key =value
        elif word.endswith("=") and word[:-1] in keys and not after.startswith("-") and "=" not in after:
            key, words = word[:-1], argv[i : i + 2]  # key= value
        else:
            continue
        value = "".join(words)[len(key) + 1 :]
        raise ConfigError(
            f"{shown(' '.join(words))}: write key=value as one argument, without spaces around '=' ({key}={value})"
        )


# The options that name something a command writes: a folder of runs, a run directory, or a file.
OUTPUT_OPTIONS = ("out", "doc", "md", "plot")


def refuse_empty_output_paths(args: argparse.Namespace) -> None:
    """Refuse an output option given as the empty string (``--out "$UNSET"``).

    ``Path("")`` is the current directory: ``train``, ``grid`` and ``auto`` wrote
    their runs into it, ``data stats --plot ""`` silently drew nothing.

    Raises:
        OutputPathError: naming the option.
    """
    for name in OUTPUT_OPTIONS:
        if getattr(args, name, None) == "":
            raise OutputPathError(f"--{name} '': an empty path; expected the name of the folder or file to write")


def print_table(results: dict[str, Any], split: str = "test") -> None:
    methods = results.get("methods" if split == "test" else "val_methods", {})
    print(f"\n{table_title(results, split)}")
    print(format_table(methods))
    if any(isinstance(summary, dict) and summary.get("ci") for summary in methods.values()):
        print(INTERVAL_NOTE)
    shift = results.get(SHIFT_KEY)
    if split == "test" and isinstance(shift, dict) and shift.get("methods"):
        sizes = ", ".join(f"{name} {n:,}" for name, n in shift["sizes"].items())
        print(f"\nShifted test distributions (eval.shift), top-1 accuracy (%); test samples: {sizes}")
        print(format_shift_table(shift))
        print(SHIFT_NOTE)
        print(em_summary(shift))


def run_dir_arguments(p: argparse.ArgumentParser, overrides_help: str) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by `longtail train`")
    p.add_argument("overrides", nargs="*", default=[], metavar="key=value", help=overrides_help)


def progress_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        default=sys.stderr.isatty(),
        help="no progress bar; one log line per epoch instead (default when stderr is not a terminal)",
    )
