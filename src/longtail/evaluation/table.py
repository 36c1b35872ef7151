"""The paper's results table: one row per method, many / medium / few / all / macro."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..methods import display_order, label_of
from .metrics import SUMMARY_KEYS as COLUMNS


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _note(metrics: Mapping[str, Any]) -> str:
    if "chosen" in metrics:
        return f"= {metrics['chosen']}"
    return f"τ = {metrics['tau']:g}" if "tau" in metrics else ""


def format_table(methods: Mapping[str, Mapping[str, Any]], markdown: bool = False) -> str:
    """Methods as rows, many / medium / few / all / macro top-1 (%) as columns.

    An empty shot group shows as "–".
    """
    header = ["Method", "Many", "Medium", "Few", "All", "Macro", ""]
    rows = [
        [label_of(name)] + [_cell(methods[name].get(c)) for c in COLUMNS] + [_note(methods[name])]
        for name in display_order(methods)
    ]
    return render_table(header, rows, markdown=markdown, left={0, len(header) - 1})


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, markdown: bool, left: set[int]) -> str:
    """Cells as a Markdown table, or as aligned plain text with a rule under the header.

    Columns in ``left`` are left-aligned in plain text (labels, notes); the others right-aligned (numbers).
    """
    if markdown:
        align = ["---" if i in left else "---:" for i in range(len(header))]
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        cells = (c.ljust(widths[i]) if i in left else c.rjust(widths[i]) for i, c in enumerate(row))
        return "  ".join(cells).rstrip()

    return "\n".join([line(header), "-" * len(line(header)), *map(line, rows)])
