"""What the command modules share: help formatting, the key listing, ``[CONFIG.yaml] [key=value]`` and tables."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from ..config import config_reference
from ..config.reference import components_text
from ..errors import ConfigError
from ..evaluation.table import INTERVAL_NOTE, format_table, table_title
from ..pipeline.shift_scores import SHIFT_KEY, SHIFT_NOTE, em_summary, format_shift_table

OVERRIDES_HELP = (
    "config overrides as key=value, applied after the YAML file; e.g. train.epochs=5 train.lr=0.05 "
    "decouple.crt.epochs=20. `longtail config` prints every key with its default."
)


class HelpFormatter(argparse.HelpFormatter):
    """Wraps descriptions; keeps multi-line text (the key listing) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line + "\n" for line in text.splitlines())
        return super()._fill_text(text, width, indent)


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
    p.add_argument("overrides", nargs="*", metavar="key=value", help=overrides_help)


def progress_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        default=sys.stderr.isatty(),
        help="no progress bar; one log line per epoch instead (default when stderr is not a terminal)",
    )
