"""Figure 6 of the report, drawn from plain arrays: the per-class confusion matrix (few classes) or the
shot-group confusion matrix of each method (many classes). The arrays: :mod:`longtail.report.confusion`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from .confusion import GROUPS, GroupConfusion
from .figures import _label, new_figure, plain_text
from .figures import shortened as _shorten

GROUP_PANELS_PER_ROW = 3


def confusion_figure(
    matrices: Mapping[str, np.ndarray],
    class_labels: Sequence[str],
    *,
    labels: Mapping[str, str] | None = None,
    unit: str = "images",
) -> Figure:
    """Figure 6 (few classes): row-normalised confusion matrices side by side, one per method.

    Args:
        matrices: method -> (K, K) or (K, K + 1) matrix of
            :func:`longtail.report.confusion.confusion_matrix` (last column
            "other" when K < C).
        class_labels: the K row labels (class names).
        labels: method -> panel title.
        unit: what the test samples are, for the colour bar ("images", "vectors").
    """
    methods = list(matrices)
    size = len(class_labels)
    # At most about 14 inches wide, the width a page shows without shrinking the text much.
    side = min(max(3.5, 0.42 * size + 2.2), 12.8 / max(len(methods), 1))
    figure = new_figure(side * len(methods) + 1.2, side + 0.6)
    panels = figure.subplots(1, len(methods), squeeze=False)[0]
    image = None
    names = [plain_text(_shorten(str(name))) for name in class_labels]  # cut first, so a cut never splits an escape
    font = 8 if size <= 20 else 7
    for axes, method in zip(panels, methods, strict=True):
        matrix = np.asarray(matrices[method], dtype=np.float64)
        image = axes.imshow(np.nan_to_num(matrix, nan=0.0), cmap="Blues", vmin=0.0, vmax=1.0, aspect="equal")
        columns = names + (["other"] if matrix.shape[1] > size else [])
        axes.set_xticks(range(len(columns)))
        axes.set_xticklabels(columns, rotation=60, ha="right", fontsize=font)
        axes.set_yticks(range(size))
        axes.set_yticklabels(names, fontsize=font)
        axes.set_xlabel("predicted class")
        axes.set_ylabel("true class")
        axes.set_title(_label(method, labels), fontsize=10)
        if size <= 12:  # few enough cells to print the percentages in them
            for (i, j), value in np.ndenumerate(matrix):
                if not np.isnan(value) and value >= 0.01:  # '0' cells would only add noise
                    axes.text(
                        j,
                        i,
                        f"{100 * value:.0f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if value > 0.6 else "black",
                    )
    if image is not None:
        figure.colorbar(image, ax=list(panels), shrink=0.8, label=f"fraction of the true class's test {unit}")
    return figure


def _cell_text(confusion: GroupConfusion, row: int, column: int) -> str:
    """A cell's percentage; the diagonal also says how much of it is the right class."""
    value = confusion.matrix[row, column]
    if np.isnan(value):
        return "–"
    if row != column:
        return f"{100 * value:.1f}%"
    return f"{100 * value:.1f}%\n({100 * confusion.correct[row]:.1f}% right)"


def group_confusion_figure(
    confusions: Mapping[str, GroupConfusion], *, labels: Mapping[str, str] | None = None, unit: str = "images"
) -> Figure:
    """Figure 6 (many classes): a many / medium / few × many / medium / few matrix per method, numbers in the cells.

    Args:
        confusions: method -> :func:`longtail.report.confusion.group_confusion` of its test predictions.
        labels: method -> panel title.
        unit: what the test samples are, for the row labels ("images", "vectors").

    Row g, column h: the share of the test images of group g's classes predicted as a class of group h (rows
    sum to 100 %); the diagonal cell also gives the share predicted as the right class.
    """
    methods = list(confusions)
    columns = max(1, min(len(methods), GROUP_PANELS_PER_ROW))
    rows = max(1, -(-len(methods) // columns))
    figure = new_figure(3.6 * columns + 1.6, 3.3 * rows + 0.4)
    panels = figure.subplots(rows, columns, squeeze=False)
    image = None
    for k, axes in enumerate(panels.ravel()):
        if k >= len(methods):
            axes.set_axis_off()
            continue
        confusion = confusions[methods[k]]
        matrix = np.asarray(confusion.matrix, dtype=np.float64)
        image = axes.imshow(np.nan_to_num(matrix, nan=0.0), cmap="Blues", vmin=0.0, vmax=1.0, aspect="equal")
        for (i, j), value in np.ndenumerate(matrix):
            dark = not np.isnan(value) and value > 0.6
            axes.text(j, i, _cell_text(confusion, i, j), ha="center", va="center", fontsize=8,
                      color="white" if dark else "black")  # fmt: skip
        axes.set_xticks(range(3), labels=list(GROUPS), fontsize=8)
        if k % columns == 0:
            names = [
                f"{group}\n{confusion.classes[i]:,} classes\n{confusion.images[i]:,} {unit}"
                for i, group in enumerate(GROUPS)
            ]
            axes.set_yticks(range(3), labels=names, fontsize=8)
            axes.set_ylabel("true class's shot group")
        else:
            axes.set_yticks(range(3), labels=[])
        axes.set_xlabel("predicted class's shot group", fontsize=9)
        axes.set_title(_label(methods[k], labels), fontsize=10)
    if image is not None:
        figure.colorbar(image, ax=list(panels.ravel()), shrink=0.7, label=f"share of the true group's test {unit}")
    return figure
