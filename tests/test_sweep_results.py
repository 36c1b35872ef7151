"""Commands that read and combine finished results: defects found by a sweep, one test each."""

from __future__ import annotations

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
