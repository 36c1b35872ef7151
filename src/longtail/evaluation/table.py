"""The paper's results table: one row per method, many / medium / few / all / macro."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..ascii_spelling import as_printed
from ..data.stats import class_size_stats
from ..methods import display_order, label_of
from .metrics import SUMMARY_KEYS as COLUMNS

# Under every table whose cells carry intervals: what ± means, and what it leaves out.
INTERVAL_NOTE = "±: half-width of the 95% bootstrap interval over the samples scored (not training-seed noise)"


# Up to this many classes the title also lists every class size: a short list a reader can still match to the
# classes (the demo's ten). Beyond, the summary alone (per_class.csv has every class); 8,142 sizes made a
# 30,000-character line.
SIZES_LISTED_UP_TO = 20


def _factor(value: float) -> str:
    """An imbalance factor with at most one decimal: ``100``, ``12.8``, ``333.3``."""
    return f"{value:.1f}".removesuffix(".0")


def class_size_summary(train_counts: Sequence[int], *, many: int = 100, few: int = 20) -> str:
    """The training class sizes in one short phrase, whatever the number of classes.

    >>> class_size_summary([1000, 599, 359, 215, 129, 77, 46, 27, 16, 10])
    '10 classes, 1,000 to 10 training samples (imbalance 100), many/medium/few 5/3/2'
    """
    stats = class_size_stats(train_counts, many=many, few=few)
    factor = "n/a" if stats["imbalance_factor"] is None else _factor(stats["imbalance_factor"])
    empty = f", {stats['empty_classes']:,} without images" if stats["empty_classes"] else ""
    return (
        f"{stats['classes']:,} classes, {stats['max']:,} to {stats['min']:,} training samples (imbalance {factor}), "
        f"many/medium/few {stats['many']:,}/{stats['medium']:,}/{stats['few']:,}{empty}"
    )


def table_title(results: Mapping[str, Any], split: str = "test") -> str:
    """The line above the results table: the dataset, the split, and a summary of the class sizes.

    Up to :data:`SIZES_LISTED_UP_TO` classes a second line lists every training class size (by class index).
    """
    title = f"{results.get('dataset', '')} — top-1 accuracy (%) on {split}"
    counts = results.get("train_counts")
    if not isinstance(counts, list) or not counts:
        return title
    thresholds = results.get("shot_thresholds") or {}
    summary = class_size_summary(counts, many=thresholds.get("many", 100), few=thresholds.get("few", 20))
    listed = f"\ntrain class sizes (class 0 first) {counts}" if len(counts) <= SIZES_LISTED_UP_TO else ""
    return f"{title}; {summary}{listed}"


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
        # A "|" in a cell (a run directory's name) would split it in two: escaped, as GitHub's tables require.
        return "\n".join(lines + ["| " + " | ".join(c.replace("|", r"\|") for c in row) + " |" for row in rows])
    # Padded as printed: on a stream without "τ" or "±" (PYTHONIOENCODING=ascii) they are spelled "tau" and "+/-",
    # and widths counted before the spelling left every column after them out of line.
    header, rows = [as_printed(c) for c in header], [[as_printed(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        cells = (c.ljust(widths[i]) if i in left else c.rjust(widths[i]) for i, c in enumerate(row))
        return "  ".join(cells).rstrip()

    return "\n".join([line(header), "-" * len(line(header)), *map(line, rows)])
