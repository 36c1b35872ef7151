"""Long-tailed subsets drawn the CIFAR-LT way (Cao et al. 2019), and class-balanced hold-outs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..config.options import Interval, check_value
from ..errors import ConfigError, DataError


def longtail_counts(num_classes: int, n_max: int, imbalance_factor: float, profile: str = "exp") -> list[int]:
    """Images per class of a long-tailed subset.

    ``"exp"``: ``int(n_max * IF**(-i / (C - 1)))`` for class ``i``;
    ``"step"``: the first ``C // 2`` classes at ``n_max``, the rest at ``int(n_max / IF)``.

    >>> longtail_counts(10, 1000, 100)
    [1000, 599, 359, 215, 129, 77, 46, 27, 16, 10]
    """
    # Checked by type too: 10.5 classes, "10" or a NaN factor raised Python's TypeError / ValueError mid-formula.
    check_value("num_classes", num_classes, Interval(1, integer=True))
    check_value("n_max", n_max, Interval(1, integer=True))
    check_value("imbalance_factor", imbalance_factor, Interval(1))
    if profile == "exp":
        if num_classes == 1:
            return [n_max]
        return [int(n_max * imbalance_factor ** (-i / (num_classes - 1))) for i in range(num_classes)]
    if profile == "step":
        head = num_classes // 2
        return [n_max] * head + [int(n_max / imbalance_factor)] * (num_classes - head)
    raise ConfigError(f"profile={profile!r}: expected 'exp' or 'step'")


def first_missing_class(labels: np.ndarray) -> int | None:
    """The smallest class index below the largest label that ``labels`` lack, or None.

    Works on the distinct labels, so a stray huge label costs nothing (a
    ``bincount`` would allocate one slot per class up to it).
    """
    present = np.unique(np.asarray(labels))
    gaps = np.flatnonzero(present != np.arange(len(present)))
    return int(gaps[0]) if len(gaps) else None


# A per-class table of this many classes costs under a megabyte, whatever the number of images.
FREE_CLASSES = 100_000


def implied_classes(labels: np.ndarray, source: str) -> int:
    """The number of classes labels 0..max imply, refused when it is absurd for the images that carry them.

    A table with one slot per class (``bincount``) is as long as the largest
    label: a stray label of 2,147,483,646 in a small file would allocate 16 GiB.
    Training refuses it because classes below it have no image
    (:func:`first_missing_class`); where empty classes are fine (statistics of a
    split file) the classes may not outnumber the images by more than
    :data:`FREE_CLASSES`, so the table stays as small as the input.

    Raises:
        DataError: naming ``source`` and the label.
    """
    labels = np.asarray(labels)
    if len(labels) == 0:
        return 0
    largest = int(labels.max())
    if largest + 1 > max(len(labels), FREE_CLASSES):
        raise DataError(
            f"{source}: label {largest} implies {largest + 1:,} classes for {len(labels):,} images; "
            f"expected class indices 0 to C-1 (at most {max(len(labels), FREE_CLASSES):,} classes here)"
        )
    return largest + 1


def class_counts(labels: Sequence[int] | np.ndarray, num_classes: int) -> np.ndarray:
    """Images per class, shape (num_classes,); every label must be below ``num_classes``.

    Raises:
        DataError: for a label outside 0..num_classes-1, before any table is allocated.
    """
    labels = np.asarray(labels, dtype=np.int64)
    low, high = (int(labels.min()), int(labels.max())) if len(labels) else (0, -1)
    if low < 0 or high >= num_classes:
        raise DataError(f"label {low if low < 0 else high}: expected class indices 0 to {num_classes - 1}")
    return np.bincount(labels, minlength=num_classes)[:num_classes]


def longtail_subset(labels: np.ndarray, counts: Sequence[int], seed: int) -> np.ndarray:
    """Indices of the first ``counts[c]`` images of each class ``c`` after a seeded shuffle.

    Args:
        labels: (N,) class index per image.
        counts: images wanted per class.
        seed: seed of the shuffle.

    Returns:
        (sum(counts),) indices into ``labels``, sorted ascending.
    """
    labels = np.asarray(labels)
    order = np.random.default_rng(seed).permutation(len(labels))
    chosen = []
    for cls, wanted in enumerate(counts):
        members = order[labels[order] == cls]
        if len(members) < wanted:
            raise DataError(
                f"class {cls}: {wanted} images wanted for the long-tailed subset, only {len(members)} available"
            )
        chosen.append(members[:wanted])
    return np.sort(np.concatenate(chosen))


def balanced_holdout(labels: np.ndarray, pool: np.ndarray, per_class: int, num_classes: int, seed: int) -> np.ndarray:
    """A class-balanced sample of ``per_class`` indices per class drawn from ``pool``.

    Args:
        labels: (N,) class index per image.
        pool: indices into ``labels`` that may be taken (e.g. those not in the subset).
        per_class: images per class.
        num_classes: number of classes.
        seed: seed of the draw.

    Returns:
        (num_classes * per_class,) indices, sorted ascending.
    """
    rng = np.random.default_rng(seed)
    pool = rng.permutation(np.asarray(pool))
    chosen = []
    for cls in range(num_classes):
        members = pool[labels[pool] == cls]
        if len(members) < per_class:
            raise DataError(
                f"class {cls}: {per_class} validation images wanted, only {len(members)} left after the subset"
            )
        chosen.append(members[:per_class])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
