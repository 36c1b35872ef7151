"""The confusion matrix of the report: which classes it shows, and the row-normalised matrix itself."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ALL_CLASSES_UP_TO = 50  # beyond this a matrix is unreadable: show the rarest classes only
RAREST_SHOWN = 30


def confusion_classes(
    train_counts: Sequence[int], *, all_up_to: int = ALL_CLASSES_UP_TO, rarest: int = RAREST_SHOWN
) -> np.ndarray:
    """Class indices the matrix shows, largest training class first.

    Every class when there are at most ``all_up_to``; else the ``rarest``
    classes with the fewest training images (ties: the smaller class index).
    """
    counts = np.asarray(train_counts, dtype=np.int64)
    if len(counts) <= all_up_to:
        chosen = np.arange(len(counts))
    else:
        chosen = np.argsort(counts, kind="stable")[:rarest]
    # Head to tail, as in every figure of the report; stable, so equal sizes keep index order.
    return chosen[np.argsort(-counts[chosen], kind="stable")]


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, classes: np.ndarray, num_classes: int) -> np.ndarray:
    """Row-normalised confusion matrix over ``classes``.

    Args:
        labels: (N,) true classes.
        predictions: (N,) predicted classes.
        classes: (K,) the classes shown, in display order.
        num_classes: C.

    Returns:
        (K, K) when ``classes`` are all C classes, else (K, K + 1) whose last
        column is the share predicted as any class not shown, so that every
        row sums to 1. Entry ``[i, j]``: fraction of the test images of class
        ``classes[i]`` predicted as ``classes[j]``. A row of a class without
        test images is NaN.
    """
    labels = np.asarray(labels, dtype=np.int64)
    predictions = np.asarray(predictions, dtype=np.int64)
    classes = np.asarray(classes, dtype=np.int64)
    subset = len(classes) < num_classes
    width = len(classes) + int(subset)
    # Map every class to its row/column; classes not shown go to the "other" column (or nowhere: -1).
    position = np.full(num_classes, len(classes) if subset else -1, dtype=np.int64)
    position[classes] = np.arange(len(classes))
    shown = np.isin(labels, classes)
    rows, cols = position[labels[shown]], position[predictions[shown]]
    counts = np.zeros((len(classes), width), dtype=np.float64)
    np.add.at(counts, (rows, cols), 1.0)
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, counts / totals, np.nan)
