"""Figures 9 and 10 of the report, present when results.json holds a current ``"shift"`` entry (``longtail eval
RUN eval.shift=[...]``): the figure blocks with their captions. The drawing: :mod:`.shift_figures`."""

from __future__ import annotations

from typing import Any

from ..pipeline.shift_scores import em_summary
from .collect import ReportData
from .figures import figure_png
from .render import FigureBlock
from .shift_figures import shift_accuracy_figure, shift_calibration_figure


def _sizes(shift: dict[str, Any]) -> str:
    sizes = shift.get("sizes", {})
    return ", ".join(f"{name} {sizes[name]:,}" for name in shift.get("distributions", []) if name in sizes)


def shift_blocks(data: ReportData) -> list[FigureBlock]:
    """Figures 9 (accuracy against the test set's imbalance, none and em) and 10 (calibration on validation,
    before and after); none without a ``"shift"`` entry."""
    shift = data.shift
    if not shift or not shift.get("methods"):
        return []
    summary = em_summary(shift)
    accuracy = FigureBlock(
        9,
        "Deployment priors: accuracy when the test set is not balanced",
        "Top-1 accuracy (%, micro) of each method on SADE's shifted test sets drawn from the balanced test set "
        f"({data.unit}: {_sizes(shift)}): forward-F follows the training order with imbalance F, backward-F "
        "reverses it, placed at ±ln F. Solid: the method's own argmax (none); dashed: the same scores "
        "calibrated on validation and moved to the prior EM estimates from the unlabeled test set (em); right: "
        "their difference in points. A method whose adaptation failed the validation check keeps its own "
        "predictions (em off, a flat 0). The table of these numbers with their 95% bootstrap intervals is "
        'printed by `longtail eval` and stored under results.json\'s "shift"' + (f"; {summary}." if summary else "."),
        "fig9_shift_accuracy.png",
        figure_png(shift_accuracy_figure(shift)),
    )
    calibration = FigureBlock(
        10,
        "Calibration on validation, before and after",
        "Reliability diagrams on the VALIDATION split (test is never used to fit or judge the calibration), 10 "
        + _bins_words(shift)
        + ": grey dashed, the method's own softmax; coloured, its calibration "
        "(temperature, PCTS or BCTS, chosen per method by 5-fold NLL on validation), each sample's posterior "
        "from the calibration fitted on the other folds, so the fit does not grade itself; shaded, the share "
        f"of validation {data.unit} per bin after calibration; dotted, perfect calibration. Each title gives the "
        "expected calibration error before → after (over 10 equal-width bins). EM needs posteriors it can "
        "trust: the calibration is what makes a re-balanced classifier's scores fit for prior adaptation.",
        "fig10_shift_calibration.png",
    )
    if any(isinstance(row.get("reliability"), dict) for row in shift["methods"].values()):
        calibration.png = figure_png(shift_calibration_figure(shift))
    else:  # a table written before the reliability bins were recorded
        factors = ",".join(f"{f:g}" for f in shift.get("imbalances", [])) or "2,5,10,25,50"
        calibration.missing = (
            "the shift table in results.json has no validation reliability bins; "
            f'run `longtail eval {data.run_dir} "eval.shift=[{factors}]"` again'
        )
    return [accuracy, calibration]


def _bins_words(shift: dict[str, Any]) -> str:
    """How figure 10's confidence bins are spaced: log-spaced from 1/C where results.json's edges start above 0
    (at many classes, as figure 7), else equal-width."""
    edges = next(
        (
            row["reliability"].get("edges")
            for row in shift["methods"].values()
            if isinstance(row.get("reliability"), dict)
        ),
        None,
    )
    if isinstance(edges, list) and edges and isinstance(edges[0], int | float) and edges[0] > 0:
        return (
            f"confidence bins log-spaced from {edges[0]:.2g} (1/C) to 1 (most top softmax probabilities of many "
            "classes lie below 0.1, in the first of equal-width bins)"
        )
    return "equal-width confidence bins"
