"""The paper's results table: one row per method, many / medium / few / all / macro."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..methods import display_order, label_of
from .metrics import SUMMARY_KEYS as COLUMNS

# Under every table whose cells carry intervals: what ± means, and what it leaves out.
INTERVAL_NOTE = "±: half-width of the 95% bootstrap interval over the images scored (not training-seed noise)"


def with_interval(text: str, interval: Sequence[float] | None) -> str:
    """``78.8`` -> ``78.8 ±1.1``: a cell and the half-width of its 95 % interval ``[low, high]``, when it has one.

    A percentile interval need not be symmetric; the half-width is its size at a glance, the bounds are in
    results.json.
    """
    return text if not interval else f"{text} ±{(interval[1] - interval[0]) / 2:.1f}"


def _cell(value: float | None, interval: Sequence[float] | None = None) -> str:
    return "–" if value is None else with_interval(f"{value:.1f}", interval)


def _intervals(summary: Mapping[str, Any]) -> Mapping[str, Any]:
    """A summary's ``ci`` (column -> [low, high] or None); empty for results written before there were any."""
    ci = summary.get("ci")
    return ci if isinstance(ci, Mapping) else {}


def _note(metrics: Mapping[str, Any]) -> str:
    if "chosen" in metrics:
        return f"= {metrics['chosen']}"
    return f"τ = {metrics['tau']:g}" if "tau" in metrics else ""


def format_table(methods: Mapping[str, Mapping[str, Any]], markdown: bool = False) -> str:
    """Methods as rows, many / medium / few / all / macro top-1 (%) as columns.

    A cell with a confidence interval (the summary's ``ci``) shows its half-width, ``78.8 ±1.1``.
    An empty shot group shows as "–".
    """
    header = ["Method", "Many", "Medium", "Few", "All", "Macro", ""]
    rows = []
    for name in display_order(methods):
        summary, ci = methods[name], _intervals(methods[name])
        rows.append([label_of(name)] + [_cell(summary.get(c), ci.get(c)) for c in COLUMNS] + [_note(summary)])
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
