"""Figure 6 of the report and the table after it: where the test samples go (per class or per shot group),
and the class pairs most often confused."""

from __future__ import annotations

import numpy as np

from ..methods import display_order
from .collect import ReportData
from .confusion import PAIRS_SHOWN, PER_CLASS_UP_TO, confusion_matrix, group_confusion, most_confused_pairs
from .confusion_figures import confusion_figure, group_confusion_figure
from .figures import figure_png, in_figures, method_label, size_order
from .render import FigureBlock, Paragraph, Table


def _second_confusion_method(data: ReportData) -> str | None:
    """The re-balanced classifier best on validation (by ``decouple.select``); ties go to the paper's order."""
    others = [m for m in data.outputs if m != "joint"]
    if not others:
        return None

    def rank(method: str) -> tuple[float, int]:
        value = data.val_scores.get(method, {}).get(data.select)
        return (-(value if value is not None else -np.inf), order.index(method))

    order = display_order(others)

    return min(others, key=rank)


def _confusion_methods(data: ReportData) -> list[str]:
    """Joint and the re-balanced classifier best on validation: the two the per-class matrix and the pairs show."""
    return ["joint"] + [m for m in [_second_confusion_method(data)] if m and m in data.outputs]


def _confusion_labels(data: ReportData, methods: list[str]) -> dict[str, str]:
    return {m: f"{method_label(m)}{' (best on val)' if m != 'joint' and m != 'auto' else ''}" for m in methods}


def confusion_block(data: ReportData) -> FigureBlock:
    """Figure 6: the per-class matrix of Joint and the best method up to PER_CLASS_UP_TO classes, else the
    shot-group matrix of every method."""
    num_classes = len(data.train_counts)
    if num_classes > PER_CLASS_UP_TO:
        return _group_confusion_figure(data)
    classes = size_order(data.train_counts)
    methods = [m for m in _confusion_methods(data) if m in data.outputs]
    matrices = {m: confusion_matrix(data.labels, data.outputs[m].predictions, classes, num_classes) for m in methods}
    labels = _confusion_labels(data, methods)
    figure = confusion_figure(matrices, [data.class_names[i] for i in classes], labels=labels, unit=data.unit)
    caption = (
        f"Row-normalised confusion matrices on test: entry (i, j) is the share of class i's test {data.unit} "
        "predicted as class j; classes from the largest training class to the smallest. Joint tends to send "
        f"{data.unit} of the tail classes to head classes (mass left of the diagonal in the lower rows); "
        + (
            f"{method_label(methods[1])}, the re-balanced classifier best on validation {data.select}, moves it "
            "back toward the diagonal."
            if len(methods) > 1
            else "no re-balanced classifier in this run to compare with."
        )
        + f" Beyond {PER_CLASS_UP_TO} classes this figure shows the shot groups instead."
    )
    return FigureBlock(6, "Confusion matrix", caption, "fig6_confusion.png", figure_png(figure))


def _group_confusion_figure(data: ReportData) -> FigureBlock:
    methods = [m for m in data.outputs if in_figures(m)]
    confusions = {
        m: group_confusion(data.labels, data.outputs[m].predictions, data.train_counts, many=data.many, few=data.few)
        for m in methods
    }
    figure = group_confusion_figure(confusions, unit=data.unit)
    caption = (
        f"Where each shot group's test {data.unit} go, per method ({len(data.train_counts):,} classes: too many "
        f"for a per-class matrix). Row g, column h: the share of the test {data.unit} of group g's classes "
        "predicted as a class of group h; each row sums to 100 %. A diagonal cell also counts confusions "
        "between two classes of the same group; the share predicted as the right class is given below it. "
        f"Joint sends much of the few-shot {data.unit} to many-shot classes (the lower left cell); re-balancing "
        "moves them back toward the diagonal, at some cost to the many-shot row. The class pairs most confused "
        "follow the figure."
    )
    return FigureBlock(6, "Where each shot group's test samples go", caption, "fig6_confusion.png", figure_png(figure))


def _class_name(data: ReportData, c: int) -> str:
    name = data.class_names[c]
    return name if name == str(c) else f"{name} ({c})"


def confused_pairs_blocks(data: ReportData) -> list:
    """The most-confused class pairs of Joint and of the best re-balanced classifier, a table each."""
    blocks: list = [
        Paragraph(
            f"The {PAIRS_SHOWN} class pairs most often confused on test, per classifier: how many test {data.unit} "
            f"of the true class went to the predicted one, and their share of the true class's test {data.unit}. "
            "A tail class predicted as a head class is the long tail's typical error."
        )
    ]
    num_classes = len(data.train_counts)
    for method in [m for m in _confusion_methods(data) if m in data.outputs]:
        pairs = most_confused_pairs(data.labels, data.outputs[method].predictions, num_classes)
        label = _confusion_labels(data, [method])[method]
        if not pairs:
            blocks.append(Paragraph(f"{label}: no test {data.unit} misclassified."))
            continue
        rows = [
            [
                _class_name(data, p.true),
                f"{data.train_counts[p.true]:,}",
                _class_name(data, p.predicted),
                f"{data.train_counts[p.predicted]:,}",
                f"{p.count:,}",
                f"{100 * p.share:.1f}",
            ]
            for p in pairs
        ]
        header = ["true class", "train", "predicted as", "train", f"test {data.unit}", "% of the true class"]
        blocks.append(Paragraph(f"{label}:"))
        blocks.append(Table(header, rows, "lrlrrr"))
    return blocks


def with_confused_pairs(data: ReportData, figures: list[FigureBlock]) -> list:
    """The figures, with the most-confused class pairs right after figure 6 (the confusion)."""
    blocks: list = []
    for figure in figures:
        blocks.append(figure)
        if figure.number == 6:
            blocks.extend(confused_pairs_blocks(data))
    return blocks
