"""The report's deployment-prior figures (9: accuracy against the test set's imbalance, 10: calibration on
validation before and after), drawn from results.json's ``"shift"`` entry."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from matplotlib.lines import Line2D

from conftest import copy_run
from longtail.cli import main
from longtail.pipeline import load_run, run_features
from longtail.report import collect
from longtail.report.shift_figures import imbalance_position, shift_accuracy_figure, shift_calibration_figure
from longtail.runs import read_results

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SHIFT_FILES = ("fig9_shift_accuracy.png", "fig10_shift_calibration.png")


def _cells(values: list[float]) -> dict[str, dict[str, float]]:
    names = ["forward-5", "uniform", "backward-5"]
    return {n: {"accuracy": v, "ci": [v - 1, v + 1]} for n, v in zip(names, values, strict=True)}


def _bins(accuracy: list[float | None], count: list[int], ece: float) -> dict:
    confidence = [None if a is None else 0.1 * k + 0.05 for k, a in enumerate(accuracy)]
    return {"count": count, "confidence": confidence, "accuracy": accuracy, "ece": ece}


def _entry(methods: list[str]) -> dict:
    """A small hand-made ``"shift"`` entry: three distributions, 10 reliability bins."""
    reliability = {
        "edges": [k / 10 for k in range(11)],
        "before": _bins([None] * 5 + [0.5, 0.6, 0.6, 0.7, 0.8], [0] * 5 + [5, 5, 5, 5, 80], 0.12),
        "after": _bins([None] * 3 + [0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.95], [0] * 3 + [10] * 7, 0.03),
    }
    rows = {
        m: {
            "adapter": {"calibration": {"kind": "bcts"}, "enabled": m != "ncm"},
            "none": _cells([80.0, 70.0, 60.0]),
            "em": _cells([81.0, 70.0, 66.0]),
            "known": _cells([82.0, 70.0, 67.0]),
            "reliability": reliability,
        }
        for m in methods
    }
    return {"distributions": ["forward-5", "uniform", "backward-5"], "sizes": {}, "methods": rows}


def test_distributions_sit_at_their_log_imbalance():
    assert imbalance_position("forward-50") == pytest.approx(-math.log(50))
    assert imbalance_position("uniform") == 0.0
    assert imbalance_position("backward-2") == pytest.approx(math.log(2))
    with pytest.raises(ValueError, match="sideways-3"):
        imbalance_position("sideways-3")


def test_accuracy_figure_draws_none_em_and_their_difference_per_method():
    figure = shift_accuracy_figure(_entry(["joint", "crt", "ncm", "auto"]))
    accuracy, gain = figure.axes
    lines = [line for line in accuracy.get_lines() if len(line.get_xdata()) == 3]
    assert len(lines) == 6  # joint, cRT, NCM (auto is a copy of another: not drawn), none and em each
    assert sorted(line.get_linestyle() for line in lines) == ["-"] * 3 + ["--"] * 3
    solid = next(line for line in lines if line.get_linestyle() == "-")
    assert list(solid.get_xdata()) == pytest.approx([-math.log(5), 0.0, math.log(5)])
    differences = [list(line.get_ydata()) for line in gain.get_lines() if len(line.get_xdata()) == 3]
    assert differences == [pytest.approx([1.0, 0.0, 6.0])] * 3
    labels = [h.get_label() for h in figure.legends[0].legend_handles if isinstance(h, Line2D)]
    assert "NCM (em off)" in labels and "cRT" in labels


def test_calibration_figure_has_a_panel_per_method_with_both_eces():
    figure = shift_calibration_figure(_entry(["joint", "crt", "auto"]))
    titles = [axes.get_title() for axes in figure.axes if axes.get_title()]
    assert len(titles) == 2 and all("(bcts)" in t and "ECE 12.0% → 3.0%" in t for t in titles)
    panel = figure.axes[0]
    curves = [line for line in panel.get_lines() if len(line.get_xdata()) > 2]
    assert sorted(len(line.get_xdata()) for line in curves) == [5, 7]  # non-empty bins only: before 5, after 7


def test_figures_without_data_say_so():
    for draw in (shift_accuracy_figure, shift_calibration_figure):
        figure = draw({"distributions": [], "methods": {}})
        assert "no " in figure.axes[0].texts[0].get_text()


@pytest.mark.slow  # eval.shift fits every classifier's calibration by 5-fold cross-validation: ~20 s on 2 cores
def test_a_report_of_a_run_with_a_shift_table_has_both_figures(tiny_decoupled_run: Path, tmp_path: Path):
    run = copy_run(tiny_decoupled_run, tmp_path / "run")
    assert main(["eval", str(run), "eval.shift=[2]"]) == 0
    shift = read_results(run)["shift"]
    val_size = len(run_features(load_run(run), "val").y)
    for row in shift["methods"].values():
        record = row["reliability"]
        assert len(record["edges"]) == 11
        for when in ("before", "after"):  # validation images only, every one in a bin
            assert sum(record[when]["count"]) == val_size
            assert 0.0 <= record[when]["ece"] <= 1.0
    assert main(["report", str(run)]) == 0
    assert collect(run).shift == shift
    page = (run / "report.html").read_text()
    assert "Figure 9." in page and "Figure 10." in page and page.count("data:image/png;base64,") == 10
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (run / "report.md").read_text())
    for name in SHIFT_FILES:
        assert f"report_files/{name}" in links
        assert (run / "report_files" / name).read_bytes().startswith(PNG_SIGNATURE)
    # A table written before the reliability bins were recorded: figure 9, and figure 10 says what to run.
    results = json.loads((run / "results.json").read_text())
    for row in results["shift"]["methods"].values():
        del row["reliability"]
    (run / "results.json").write_text(json.dumps(results))
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    assert "Figure 9." in page and "Not available: the shift table in results.json has no validation" in page
    assert not (run / "report_files" / SHIFT_FILES[1]).exists()
    # A refit classifier makes the table stale: eval drops it, and the report draws neither figure.
    assert main(["decouple", str(run), "--method", "crt", "--overwrite", "decouple.crt.epochs=1"]) == 0
    assert main(["report", str(run)]) == 0
    assert "Figure 9." not in (run / "report.html").read_text()
    assert not any((run / "report_files" / name).exists() for name in SHIFT_FILES)
