"""Commands that read and combine finished results: defects found by a sweep, one test each."""

from __future__ import annotations

from longtail.evaluation.compare import ComparisonRow, format_comparison
from longtail.evaluation.table import COLUMNS
from longtail.report.figures import tau_sweep_figure


def test_the_tau_sweep_legend_fits_a_figure_of_one_panel():
    # A run decoupled with τ-norm alone (no logit adjustment) has one panel, 5.8 inches wide: the legend's six
    # entries in one row ran off both edges ("ll" ... "test (show").
    points = [{"tau": t, "all": 50 + t, "many": 60 - t, "few": 30 + 5 * t} for t in (0.0, 0.5, 1.0)]
    figure = tau_sweep_figure({"tau_norm": {"select": "val macro", "chosen": 0.5, "val": points, "test": points}})
    renderer = figure.canvas.get_renderer()
    figure.canvas.draw()
    legend = figure.legends[0].get_window_extent(renderer)
    assert legend.x0 >= 0 and legend.x1 <= figure.bbox.width


def test_compare_markdown_keeps_its_notes_out_of_the_table():
    # A line right after a Markdown table is one more row of it (GitHub, markdown-it): the fingerprints note
    # was rendered as a row of the comparison.
    row = ComparisonRow("run", "joint", dict.fromkeys(COLUMNS, 50.0), None, 1.0, fingerprint="a" * 12)
    lines = format_comparison([row], markdown=True).splitlines()
    last_row = max(i for i, line in enumerate(lines) if line.startswith("|"))
    assert lines[last_row + 1] == "" and lines[last_row + 2].startswith("fingerprints: run aaaaaaaaaaaa")
