"""Accuracy per class and per shot group (many / medium / few), micro and macro."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError

# The accuracies of a summary, in table order.
SUMMARY_KEYS = ("many", "medium", "few", "all", "macro")


def shot_groups(train_counts: Sequence[int], many: int = 100, few: int = 20) -> dict[str, list[int]]:
    """Class indices per shot group by training-class size.

    many: ``n > many``; medium: ``few <= n <= many``; few: ``n < few``.

    >>> shot_groups([1000, 50, 5])
    {'many': [0], 'medium': [1], 'few': [2]}

    Raises:
        ConfigError: ``few > many`` (a class of ``many < n < few`` was in two groups), or counts that are not a
            1-D sequence of numbers (a nested list was flattened: indices of nothing).
    """
    counts = np.asarray(train_counts)
    if counts.ndim != 1 or (counts.size and counts.dtype.kind not in "biuf"):
        raise ConfigError(
            f"train_counts: expected a 1-D sequence of class sizes, got {counts.dtype} values of shape {counts.shape}"
        )
    if few > many:
        raise ConfigError(f"few={few!r}, many={many!r}: expected few <= many (no class may be in two groups)")
    return {
        "many": np.flatnonzero(counts > many).tolist(),
        "medium": np.flatnonzero((counts >= few) & (counts <= many)).tolist(),
        "few": np.flatnonzero(counts < few).tolist(),
    }


def per_class_accuracy(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> np.ndarray:
    """(num_classes,) fraction of each class's samples predicted right; NaN where a class has no sample."""
    labels = labels.long().cpu()
    correct = (predictions.long().cpu() == labels).double()
    hits = torch.zeros(num_classes, dtype=torch.float64).index_add_(0, labels, correct)
    totals = torch.bincount(labels, minlength=num_classes).double()
    with np.errstate(invalid="ignore", divide="ignore"):
        return (hits / totals).numpy()


def _mean_percent(values: np.ndarray) -> float | None:
    """Mean of the defined values in percent; None when there are none (an empty group)."""
    values = values[~np.isnan(values)]
    return float(100.0 * values.mean()) if len(values) else None


def accuracy_summary(
    predictions: torch.Tensor,
    labels: torch.Tensor,
    train_counts: Sequence[int],
    *,
    many: int = 100,
    few: int = 20,
) -> dict[str, Any]:
    """Top-1 accuracy in percent: per shot group, micro ("all"), macro, and per class.

    Args:
        predictions: (N,) predicted classes.
        labels: (N,) true classes.
        train_counts: (C,) training images per class, which define the groups.
        many, few: group thresholds (see :func:`shot_groups`).

    Returns:
        ``{"many", "medium", "few", "all", "macro", "per_class"}``; a group
        accuracy is the mean of its classes' accuracies and is None when the
        group is empty. ``per_class`` holds None for classes absent from ``labels``.
    """
    num_classes = len(train_counts)
    per_class = per_class_accuracy(predictions, labels, num_classes)
    summary: dict[str, Any] = {
        group: _mean_percent(per_class[members]) for group, members in shot_groups(train_counts, many, few).items()
    }
    summary["all"] = (
        float(100.0 * (predictions.long().cpu() == labels.long().cpu()).double().mean()) if len(labels) else None
    )
    summary["macro"] = _mean_percent(per_class)
    summary["per_class"] = [None if math.isnan(v) else float(100.0 * v) for v in per_class]
    return summary


def summary_agrees(
    row: Mapping[str, Any], predicted: Any, labels: Any, train_counts: Sequence[int], *, many: int, few: int
) -> bool:
    """Whether a results row's accuracies (each group, all, macro, per class) are those of ``predicted``.

    A results row records what it was computed from, not that its numbers are still the computed ones (a
    results.json edited by hand, or predictions of another classifier); recomputing them costs a pass over
    the N labels. False for labels outside the classes (a damaged file: no numbers to agree with).
    """
    labels = torch.as_tensor(labels)
    if len(predicted) != len(labels) or (len(labels) and (labels.min() < 0 or labels.max() >= len(train_counts))):
        return False
    fresh = accuracy_summary(torch.as_tensor(predicted), labels, train_counts, many=many, few=few)
    recorded = row.get("per_class")
    return (
        all(_same(row.get(key), fresh[key]) for key in SUMMARY_KEYS)
        and isinstance(recorded, list)
        and len(recorded) == len(fresh["per_class"])
        and all(_same(a, b) for a, b in zip(recorded, fresh["per_class"], strict=True))
    )


def _same(recorded: Any, computed: float | None) -> bool:
    """A recorded accuracy and the recomputed one agree (both None, or equal up to float rounding)."""
    if recorded is None or computed is None:
        return recorded is None and computed is None
    return isinstance(recorded, (int, float)) and math.isclose(recorded, computed, rel_tol=1e-9, abs_tol=1e-9)
