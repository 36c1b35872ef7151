"""The paper's results table: one row per method, many / medium / few / all / macro."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

METHOD_ORDER = ("joint", "ncm", "crt", "tau_norm", "lws", "logit_adjust", "auto")
METHOD_LABELS = {
    "joint": "Joint",
    "ncm": "NCM",
    "crt": "cRT",
    "tau_norm": "τ-norm",
    "lws": "LWS",
    "logit_adjust": "Logit adj.",
    "auto": "Auto (best on val)",
}
COLUMNS = ("many", "medium", "few", "all", "macro")


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _note(metrics: Mapping[str, Any]) -> str:
    if "chosen" in metrics:
        return f"= {metrics['chosen']}"
    return f"τ = {metrics['tau']:g}" if "tau" in metrics else ""


def ordered_methods(methods: Mapping[str, Any]) -> list[str]:
    """Method names in the paper's order, unknown ones last (alphabetically)."""
    known = [m for m in METHOD_ORDER if m in methods]
    return known + sorted(set(methods) - set(known))


def format_table(methods: Mapping[str, Mapping[str, Any]], markdown: bool = False) -> str:
    """Methods as rows, many / medium / few / all / macro top-1 (%) as columns.

    An empty shot group shows as "–".
    """
    header = ["Method", "Many", "Medium", "Few", "All", "Macro", ""]
    rows = [
        [METHOD_LABELS.get(name, name)] + [_cell(methods[name].get(c)) for c in COLUMNS] + [_note(methods[name])]
        for name in ordered_methods(methods)
    ]
    if markdown:
        lines = ["| " + " | ".join(header[:-1]) + " | |", "|" + "---|" * 6 + "---|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda row: "  ".join(  # noqa: E731
        cell.ljust(widths[i]) if i in (0, len(row) - 1) else cell.rjust(widths[i]) for i, cell in enumerate(row)
    ).rstrip()
    rule = "-" * len(fmt(header))
    return "\n".join([fmt(header), rule, *map(fmt, rows)])
