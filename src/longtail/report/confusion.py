"""Where the test images go: the per-class confusion matrix (few classes), the shot-group matrix and the
most-confused class pairs (any number of classes)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..evaluation.metrics import shot_groups

# Up to this many classes the report draws the per-class matrix; beyond, the shot-group matrix. At 30 classes two
# panels side by side give each row about 15 pt at the page's width, room for a class name in a 7 pt font; at 50
# the names overlap, and at 1,000 a matrix of 1,000,000 cells shows nothing at all.
PER_CLASS_UP_TO = 30
GROUPS = ("many", "medium", "few")
PAIRS_SHOWN = 20


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


@dataclass
class GroupConfusion:
    """Where each shot group's test images go.

    Attributes:
        matrix: (3, 3) row-normalised, rows and columns many / medium / few: ``[g, h]`` is the share of the test
            images of group g's classes predicted as a class of group h; a row of a group without test images
            is NaN.
        correct: (3,) the share of each group's test images predicted as their own class (part of the diagonal,
            which also holds the confusions between two classes of one group).
        images: (3,) test images per group.
        classes: (3,) classes per group.
    """

    matrix: np.ndarray
    correct: np.ndarray
    images: np.ndarray
    classes: np.ndarray


def group_confusion(
    labels: np.ndarray, predictions: np.ndarray, train_counts: Sequence[int], *, many: int = 100, few: int = 20
) -> GroupConfusion:
    """The shot-group confusion of (N,) ``predictions`` against (N,) ``labels``; groups by (C,) ``train_counts``.

    The rows are weighted by images, not by classes: a row is where the group's test images went.
    """
    labels = np.asarray(labels, dtype=np.int64)
    predictions = np.asarray(predictions, dtype=np.int64)
    group_of = np.zeros(len(train_counts), dtype=np.int64)
    groups = shot_groups(train_counts, many, few)
    for index, name in enumerate(GROUPS):
        group_of[groups[name]] = index
    counts = np.zeros((3, 3), dtype=np.float64)
    np.add.at(counts, (group_of[labels], group_of[predictions]), 1.0)
    images = counts.sum(axis=1)
    right = np.bincount(group_of[labels[labels == predictions]], minlength=3).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        matrix = np.where(images[:, None] > 0, counts / images[:, None], np.nan)
        correct = np.where(images > 0, right / images, np.nan)
    classes = np.array([len(groups[name]) for name in GROUPS], dtype=np.int64)
    return GroupConfusion(matrix, correct, images.astype(np.int64), classes)


@dataclass
class ConfusedPair:
    """Test images of class ``true`` predicted as class ``predicted``: how many, and their share of the class's."""

    true: int
    predicted: int
    count: int
    share: float


def most_confused_pairs(
    labels: np.ndarray, predictions: np.ndarray, num_classes: int, *, top: int = PAIRS_SHOWN
) -> list[ConfusedPair]:
    """The ``top`` (true, predicted) pairs of different classes with the most test images, most first.

    Ties: the larger share of the true class's test images first, then the smaller class indices. Pairs that
    never happen are not listed, so there may be fewer than ``top``. Linear in N, whatever C: the pairs are
    counted as codes ``true * C + predicted``, never as a (C, C) matrix.
    """
    labels = np.asarray(labels, dtype=np.int64)
    predictions = np.asarray(predictions, dtype=np.int64)
    wrong = labels != predictions
    codes, counts = np.unique(labels[wrong] * num_classes + predictions[wrong], return_counts=True)
    true, predicted = codes // num_classes, codes % num_classes
    sizes = np.bincount(labels, minlength=num_classes)
    shares = counts / sizes[true] if len(codes) else np.zeros(0)
    order = np.lexsort((predicted, true, -shares, -counts))[:top]
    return [ConfusedPair(int(true[i]), int(predicted[i]), int(counts[i]), float(shares[i])) for i in order]
