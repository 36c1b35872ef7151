"""Shifted test distributions: SADE's test-agnostic protocol (Zhang et al., NeurIPS 2022).

A long-tailed benchmark's test set is balanced; a deployed model meets
long-tailed data. The protocol draws, from the balanced test set, subsets whose
class sizes follow the *shape* of the training profile with a chosen imbalance
factor ``F`` (largest / smallest target class):

    forward-F:   n_j ∝ F^(-r_j / r_max)          (the training order: common classes stay common)
    backward-F:  n_j ∝ F^(-(r_max - r_j) / r_max) (reversed: the rare training classes become common)

``r_j`` is class ``j``'s rank by training size, largest first, counted from 0;
classes with equal training sizes share the mean of their ranks (so a step
profile gives a step target, and the numbering of tied classes does not decide
anything); ``r_max`` is the largest rank, so the realised ratio is ``F``. For an
exponential training profile without ties (CIFAR-LT, Fashion-MNIST-LT),
``r_j / r_max = j / (C - 1)``: the CIFAR-LT formula ``F^(-j/(C-1))``.

The sizes are ``n_j = floor(k · s_j)`` with ``s_j`` the shape above (1 for the
largest target class) and ``k`` as large as the test images allow: ``k = min_j
m_j / s_j`` over the test images ``m_j`` per class. On a balanced test set the
largest target class keeps all its images; where some class has fewer test
images than its share asks, every class is scaled down with it, so the shape,
not the test set's accidents, decides the ratios. A class whose share rounds
to 0 images is absent from the subset (its true prior is 0), and so is a class
with no test image at all (it does not scale the others down to nothing).

``uniform`` is the whole balanced test set. The true target prior of a subset
is its realised class shares ``n_j / Σ n``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from ..data.longtail import class_counts, longtail_subset
from ..errors import ConfigError, DataError

Direction = Literal["uniform", "forward", "backward"]
DIRECTIONS: tuple[str, ...] = ("uniform", "forward", "backward")
IMBALANCES: tuple[int, ...] = (2, 5, 10, 25, 50)
"""SADE's imbalance factors of the shifted test sets."""

# floor(k · s) of a share that is an exact integer in exact arithmetic must not lose one image to rounding.
_ROUNDING_SLACK = 1e-9


@dataclass(frozen=True)
class Shift:
    """One test distribution: ``uniform``, or ``forward-F`` / ``backward-F`` with imbalance factor ``F``."""

    direction: Direction
    imbalance: float = 1.0

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ConfigError(f"shift direction {self.direction!r}: expected one of {', '.join(DIRECTIONS)}")
        if self.direction == "uniform":
            if self.imbalance != 1.0:
                raise ConfigError(f"shift 'uniform' takes no imbalance factor, got {self.imbalance!r}")
        elif not (isinstance(self.imbalance, int | float) and math.isfinite(self.imbalance) and self.imbalance > 1):
            raise ConfigError(f"shift imbalance factor {self.imbalance!r}: expected a number > 1")

    @property
    def name(self) -> str:
        """``uniform``, ``forward-50``, ``backward-2.5``."""
        return "uniform" if self.direction == "uniform" else f"{self.direction}-{self.imbalance:g}"

    @classmethod
    def parse(cls, name: str) -> Shift:
        """The shift named ``uniform`` or ``forward-F`` / ``backward-F`` (F > 1)."""
        if name == "uniform":
            return cls("uniform")
        direction, _, factor = str(name).partition("-")
        try:
            value = float(factor)
        except ValueError:
            value = float("nan")
        if direction not in ("forward", "backward") or not math.isfinite(value):
            raise ConfigError(f"test distribution {name!r}: expected 'uniform', 'forward-F' or 'backward-F' (F > 1)")
        return cls(direction, value)  # type: ignore[arg-type]


def standard_shifts(imbalances: Sequence[float] = IMBALANCES) -> list[Shift]:
    """The protocol's distributions, forward to backward: forward-50 ... forward-2, uniform, backward-2 ... backward-50.

    This order puts the test prior on one axis, from most like training to most
    reversed: the natural x-axis of an accuracy-vs-shift figure.
    """
    factors = sorted(float(f) for f in imbalances)
    forward = [Shift("forward", f) for f in reversed(factors)]
    backward = [Shift("backward", f) for f in factors]
    return [*forward, Shift("uniform"), *backward]


@dataclass(frozen=True)
class ShiftedSubset:
    """A drawn test subset.

    Attributes:
        shift: the distribution it was drawn for.
        indices: (M,) int64 indices into the test set, ascending.
        counts: (C,) int64 images per class in the subset.
        prior: (C,) float64 true target prior, ``counts / counts.sum()``.
    """

    shift: Shift
    indices: np.ndarray
    counts: np.ndarray
    prior: np.ndarray


def _as_labels(labels: np.ndarray | torch.Tensor | Sequence[int]) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    array = np.asarray(labels)
    if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
        raise DataError(f"test labels: expected a 1-D vector of class indices, got shape {array.shape} {array.dtype}")
    return array.astype(np.int64)


def training_ranks(train_counts: Sequence[int] | np.ndarray) -> np.ndarray:
    """(C,) rank of each class by training size, largest first from 0; tied classes share their mean rank.

    >>> training_ranks([100, 50, 50, 10]).tolist()
    [0.0, 1.5, 1.5, 3.0]
    """
    counts = np.asarray(train_counts, dtype=np.float64)
    order = np.argsort(-counts, kind="stable")
    ranks = np.empty(len(counts), dtype=np.float64)
    ranks[order] = np.arange(len(counts), dtype=np.float64)
    for value in np.unique(counts):
        tied = counts == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def target_shape(train_counts: Sequence[int] | np.ndarray, shift: Shift) -> np.ndarray:
    """(C,) relative target class sizes of ``shift``, the largest 1 (see the module docstring).

    Raises:
        DataError: a forward or backward shift of a training set whose classes all have the same size
            (there is no order to follow).
    """
    counts = np.asarray(train_counts, dtype=np.float64)
    if shift.direction == "uniform":
        return np.ones(len(counts))
    ranks = training_ranks(counts)
    span = ranks.max() - ranks.min() if len(ranks) else 0.0
    if span == 0:
        raise DataError(f"{shift.name}: the training classes all have the same size; there is no order to follow")
    position = (ranks - ranks.min()) / span  # 0 for the largest training class, 1 for the smallest
    if shift.direction == "backward":
        position = 1.0 - position
    return shift.imbalance ** (-position)


def shifted_counts(
    test_counts: Sequence[int] | np.ndarray, train_counts: Sequence[int] | np.ndarray, shift: Shift
) -> np.ndarray:
    """(C,) images per class of the ``shift`` subset of a test set with ``test_counts`` images per class.

    ``uniform`` keeps every image. Otherwise ``floor(k · s_j)`` with ``s`` the
    :func:`target_shape` and ``k = min_j m_j / s_j`` over the classes with test
    images, the largest scale the test images allow (on a balanced test set: the
    largest target class keeps all). A class with no test image has none in the subset.
    """
    test = np.asarray(test_counts, dtype=np.int64)
    if len(test) != len(train_counts):
        raise DataError(f"test set has {len(test)} classes, the training class sizes {len(train_counts)}")
    if shift.direction == "uniform":
        return test.copy()
    shape = target_shape(train_counts, shift)
    present = test > 0  # a class without test images cannot be drawn from, whatever the scale: it stays at 0
    if not present.any():
        return test.copy()
    scale = float(np.min(test[present] / shape[present]))
    return np.minimum(np.floor(scale * shape + _ROUNDING_SLACK).astype(np.int64), test)


def shifted_subset(
    labels: np.ndarray | torch.Tensor | Sequence[int],
    train_counts: Sequence[int] | np.ndarray,
    shift: Shift | str,
    *,
    seed: int = 0,
) -> ShiftedSubset:
    """The seeded ``shift`` subset of a test set: which images, how many per class, the true prior.

    Args:
        labels: (N,) test labels, classes 0..C-1 (the balanced test set).
        train_counts: (C,) training images per class: their order and shape define the shift.
        shift: a :class:`Shift` or its name (``uniform``, ``forward-50``, ``backward-2``).
        seed: seeds which images of each class are kept (the counts do not depend on it).

    Returns:
        a :class:`ShiftedSubset`; ``indices`` index ``labels`` (and the logits scored with them).
    """
    if isinstance(shift, str):
        shift = Shift.parse(shift)
    labels_np = _as_labels(labels)
    num_classes = len(train_counts)
    test_counts = class_counts(labels_np, num_classes)
    counts = shifted_counts(test_counts, train_counts, shift)
    if counts.sum() == 0:
        raise DataError(f"{shift.name}: the test set has no image to draw from")
    if shift.direction == "uniform":
        indices = np.arange(len(labels_np), dtype=np.int64)
    else:
        indices = longtail_subset(labels_np, counts.tolist(), seed).astype(np.int64)
    return ShiftedSubset(shift, indices, counts, counts / counts.sum())
