"""``longtail compare``: one table across runs and methods, the best of each column marked.

Rows are (run, method) pairs from each run's ``results.json`` (test split);
columns are many / medium / few / all / macro top-1 (%), τ where the method
has one, and wall time. A method's wall time is what it took from scratch:
stage-1 training, plus (for stage-2 methods) the feature pass and its own
fitting; ``auto`` needs every method fitted first, so it counts all of them.
The best cell of a column (highest accuracy, least time; every tie) is bold in
Markdown and starred in the terminal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import RunDirError
from ..runs import read_results, require_run_dir
from ..methods import METHODS, display_order, label_of
from .table import COLUMNS, render_table

HEADER = ("Run", "Method", "Many", "Medium", "Few", "All", "Macro", "τ", "Wall (s)")


@dataclass
class ComparisonRow:
    """One method of one run: its test accuracies (%), τ and wall time (s); None where it does not apply."""

    run: str
    method: str
    scores: dict[str, float | None]
    tau: float | None
    wall_seconds: float | None


def _wall_seconds(method: str, timing: dict[str, Any]) -> float | None:
    train = timing.get("train_seconds")
    if train is None:
        return None
    if method == "joint":
        return train
    stage2 = timing.get("decouple_seconds", {})
    if method not in stage2:
        return None
    chooses = method in METHODS and METHODS[method].chooses_among_others  # auto needs every method fitted first
    fitting = sum(stage2.values()) if chooses else stage2[method]
    return train + timing.get("features_seconds", 0.0) + fitting


def _run_labels(run_dirs: Sequence[Path]) -> list[str]:
    """Directory names, or the paths as given where two names clash."""
    names = [p.name for p in run_dirs]
    return [p.name if names.count(p.name) == 1 else str(p) for p in run_dirs]


def comparison_rows(run_dirs: Sequence[str | Path]) -> list[ComparisonRow]:
    """Every method of every run, runs in the order given, methods in the paper's order.

    Raises:
        RunDirError: a directory that is not a run, or a run without test results yet.
    """
    dirs = [require_run_dir(d) for d in run_dirs]
    rows = []
    for run_dir, label in zip(dirs, _run_labels(dirs), strict=True):
        results = read_results(run_dir)
        methods = results.get("methods")
        if not methods:
            raise RunDirError(f"{run_dir}: no results.json scores yet; finish `longtail train` first")
        timing = results.get("timing", {})
        for method in display_order(methods):
            summary = methods[method]
            scores = {c: summary.get(c) for c in COLUMNS}
            rows.append(ComparisonRow(label, method, scores, summary.get("tau"), _wall_seconds(method, timing)))
    return rows


def _best(values: list[float | None], *, lowest: bool) -> float | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    return min(present) if lowest else max(present)


def format_comparison(rows: Sequence[ComparisonRow], *, markdown: bool = False) -> str:
    """The rows as a Markdown table or aligned terminal text, best cell per column marked."""
    columns: list[list[float | None]] = [[r.scores[c] for r in rows] for c in COLUMNS]
    columns.append([r.wall_seconds for r in rows])
    best = [_best(values, lowest=False) for values in columns[:-1]] + [_best(columns[-1], lowest=True)]
    digits = [1] * (len(COLUMNS) + 1)

    def cell(value: float | None, column: int) -> str:
        if value is None:
            return "–"
        # Compare what is shown: two cells that print alike are both best.
        text = f"{value:.{digits[column]}f}"
        if best[column] is not None and text == f"{best[column]:.{digits[column]}f}":
            return f"**{text}**" if markdown else f"{text}*"
        return text

    table = []
    for index, row in enumerate(rows):
        numbers = [cell(values[index], i) for i, values in enumerate(columns)]
        tau = "–" if row.tau is None else f"{row.tau:g}"
        label = label_of(row.method)
        table.append([row.run, label, *numbers[:-1], tau, numbers[-1]])
    rendered = render_table(HEADER, table, markdown=markdown, left={0, 1})
    if not markdown:
        rendered += "\n* best in its column (highest accuracy, least wall time)"
    return rendered
