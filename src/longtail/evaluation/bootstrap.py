"""Bootstrap confidence intervals over test images, and the paired bootstrap of two methods.

The metrics are those of :func:`~longtail.evaluation.metrics.accuracy_summary`:
``many`` / ``medium`` / ``few`` (mean of the per-class accuracies of the group),
``all`` (micro top-1) and ``macro`` (mean of the per-class accuracies); a class
without test images takes no part, and a group without classes (or without test
images) is None.

Every one of them depends on the test set only through two numbers per class:
how many of its test images were drawn, and how many of those were predicted
right. Resampling images with replacement therefore needs no index arrays: the
number of draws that land in each (class, outcome) cell is multinomial, and
drawing those counts directly has exactly the distribution of counting the
cells over resampled indices (the bincount of indexing ``correct`` with
``rng.integers(0, N, (B, N))``), in O(B·C) instead of O(B·N) work and memory.
10,000 images x 1,000 resamples take milliseconds. A paired bootstrap draws the
counts of the four joint outcomes (both right, A only, B only, neither) per
class, which is the same as resampling the same image indices for A and B.

Memory: resamples are drawn in blocks (:func:`resample_blocks`), one block of
(block, C, K) counts alive at a time, so memory stays bounded by
:data:`MAX_BLOCK_CELLS` counts plus the B values of each metric (8 bytes each),
whatever ``num_resamples``: a million resamples at 200 classes need about 40 MB,
not the 3 GiB of drawing them all at once. The block size depends only on C and
K, never on the machine, and the blocks are drawn one after the other from the
one seeded generator: the same inputs and seed give the same intervals
everywhere. Up to 1000 resamples (the default) at up to 2,097 classes (1,048 for
a paired bootstrap) form one block, the draws of an unchunked computation.

Resampling scheme (``stratified``, default True): each class is resampled
within itself, keeping its number of test images. The long-tail test sets
(CIFAR-LT, ImageNet-LT, Fashion-MNIST-LT) are balanced by design: the class
sizes are fixed by the protocol, not random, so the variability worth measuring
is that of the images inside each class. Stratifying also keeps every class's
accuracy defined in every resample: plain resampling of the N images can leave a
small class out (then its accuracy and perhaps its whole group are undefined
in that resample), and it adds to the macro and group metrics a spurious
variance from how many images each class happens to receive. ``stratified=False``
gives the plain image bootstrap (for a test set whose class sizes are themselves
a sample); resamples in which a metric is undefined are left out of its interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .metrics import shot_groups

METRICS = ("many", "medium", "few", "all", "macro")
"""The metrics bootstrapped, in the order of the results table."""

# Resampled (resample, class, outcome) counts held at a time: 32 MiB of int64 (and a few temporaries of that size).
MAX_BLOCK_CELLS = 1 << 22
BLOCK_RESAMPLES = 1000  # at most this many resamples per block: the default count is one block

# A paired difference within this many points of 0 is a tie (the differences are sums of
# fractions, so two equal metrics can differ by a rounding error).
TIE_TOLERANCE = 1e-9

ArrayLike = Sequence[Any] | np.ndarray | torch.Tensor


def _as_numpy(values: ArrayLike, dtype: Any) -> np.ndarray:
    """A 1-D numpy copy of a tensor, array or sequence."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values).astype(dtype, copy=False)
    if array.ndim != 1:
        raise ValueError(f"expected a 1-D vector, got shape {array.shape}")
    return array


def _check(labels: np.ndarray, num_classes: int, *vectors: np.ndarray) -> None:
    """Equal lengths and labels in ``[0, num_classes)``."""
    for vector in vectors:
        if len(vector) != len(labels):
            raise ValueError(f"expected one correctness value per label: {len(vector)} values, {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got {labels.min()}..{labels.max()}")


def _check_options(num_resamples: int, confidence: float) -> None:
    if isinstance(num_resamples, bool) or not isinstance(num_resamples, int) or num_resamples < 1:
        raise ValueError(f"num_resamples={num_resamples!r}: expected an integer >= 1")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence!r}: expected a number in (0, 1)")


# --------------------------------------------------------------------------- resampled counts


def _cell_counts(labels: np.ndarray, outcome: np.ndarray, num_classes: int, num_outcomes: int) -> np.ndarray:
    """(C, K) number of test images of each class with each outcome code in ``[0, K)``."""
    flat = np.bincount(labels * num_outcomes + outcome, minlength=num_classes * num_outcomes)
    return flat.reshape(num_classes, num_outcomes)


def _split_multinomial(rng: np.random.Generator, totals: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Multinomial counts by conditional binomials: (B, C) totals, (C, K) probabilities -> (B, C, K).

    Cell k gets ``Binomial(left, p_k / (p_k + ... + p_K))`` of what the earlier
    cells left: the standard decomposition of a multinomial draw, vectorised
    over resamples and classes (K is 2 or 4, so the loop is short).
    """
    num_outcomes = probabilities.shape[1]
    counts = np.empty((*totals.shape, num_outcomes), dtype=np.int64)
    left = totals.astype(np.int64)
    tail = probabilities[:, ::-1].cumsum(axis=1)[:, ::-1]  # (C, K) p_k + ... + p_K
    for k in range(num_outcomes - 1):
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(tail[:, k] > 0, probabilities[:, k] / tail[:, k], 0.0)
        counts[..., k] = rng.binomial(left, np.clip(share, 0.0, 1.0))
        left = left - counts[..., k]
    counts[..., -1] = left
    return counts


def _resampled_cells(rng: np.random.Generator, cells: np.ndarray, num_resamples: int, stratified: bool) -> np.ndarray:
    """(C, K) cell counts of the test set -> (B, C, K) cell counts of ``num_resamples`` resamples.

    Stratified: class c keeps its ``m_c`` images, split over outcomes as
    Multinomial(m_c, cells_c / m_c). Plain: the class sizes are first drawn as
    Multinomial(N, m / N), then split the same way (together: a multinomial over
    the C·K cells, i.e. N images drawn with replacement).
    """
    sizes = cells.sum(axis=1)  # (C,)
    total = int(sizes.sum())
    if stratified:
        drawn_sizes = np.broadcast_to(sizes, (num_resamples, len(sizes)))
    else:
        drawn_sizes = rng.multinomial(total, sizes / total, size=num_resamples)  # (B, C)
    with np.errstate(invalid="ignore", divide="ignore"):
        within = np.where(sizes[:, None] > 0, cells / np.maximum(sizes, 1)[:, None], 0.0)  # (C, K)
    return _split_multinomial(rng, drawn_sizes, within)


def resample_blocks(num_resamples: int, num_classes: int, num_outcomes: int) -> list[int]:
    """The resamples of each block: :data:`BLOCK_RESAMPLES` or fewer, so that a block's (block, C, K) counts
    hold at most :data:`MAX_BLOCK_CELLS` values (and at least one resample); the last block takes the rest."""
    block = max(1, min(BLOCK_RESAMPLES, MAX_BLOCK_CELLS // max(1, num_classes * num_outcomes)))
    full, rest = divmod(num_resamples, block)
    return [block] * full + ([rest] if rest else [])


def _blockwise(
    seed: int, cells: np.ndarray, num_resamples: int, stratified: bool, reduce: Any
) -> dict[str, np.ndarray]:
    """``reduce((b, C, K) resampled counts) -> {name: (b,) values}`` over every block, concatenated per name.

    The blocks are drawn in order from one generator seeded with ``seed``: only one block's counts are alive.
    """
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {}
    for size in resample_blocks(num_resamples, *cells.shape):
        for name, values in reduce(_resampled_cells(rng, cells, size, stratified)).items():
            parts.setdefault(name, []).append(values)
    return {name: np.concatenate(values) for name, values in parts.items()}


# --------------------------------------------------------------------------- metrics from counts


def _metrics_from_counts(hits: np.ndarray, sizes: np.ndarray, groups: dict[str, list[int]]) -> dict[str, np.ndarray]:
    """(..., C) right predictions and test images per class -> each metric in percent, shape (...).

    Mirrors :func:`~longtail.evaluation.metrics.accuracy_summary`: a class with
    no images is left out; a metric with no class left is NaN.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = hits / sizes  # NaN where a class has no image
    defined = ~np.isnan(per_class)
    filled = np.where(defined, per_class, 0.0)

    def mean_over(members: Any) -> np.ndarray:
        count = defined[..., members].sum(axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return 100.0 * filled[..., members].sum(axis=-1) / np.where(count > 0, count, np.nan)

    metrics = {group: mean_over(members) for group, members in groups.items()}
    total = sizes.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        metrics["all"] = 100.0 * hits.sum(axis=-1) / np.where(total > 0, total, np.nan)
    metrics["macro"] = mean_over(slice(None))
    return metrics


def _interval(samples: np.ndarray, confidence: float) -> list[float] | None:
    """Percentile interval of the defined samples, or None when there are none."""
    samples = samples[~np.isnan(samples)]
    if not len(samples):
        return None
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(samples, [tail, 100.0 - tail])
    return [float(low), float(high)]


# --------------------------------------------------------------------------- public API


def bootstrap_ci(
    correct: ArrayLike,
    labels: ArrayLike,
    train_counts: Sequence[int],
    *,
    many: int = 100,
    few: int = 20,
    num_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    stratified: bool = True,
) -> dict[str, list[float] | None]:
    """Bootstrap percentile intervals of many / medium / few / all / macro accuracy.

    Args:
        correct: (N,) bool, whether test image i was predicted right.
        labels: (N,) int, its true class.
        train_counts: (C,) training images per class, which define the shot groups.
        many, few: group thresholds (see :func:`~longtail.evaluation.metrics.shot_groups`).
        num_resamples: bootstrap resamples B (1000 by default).
        seed: seeds the NumPy generator: the same inputs and seed give the same intervals.
        confidence: coverage of the interval (0.95: the 2.5th and 97.5th percentiles).
        stratified: resample each class within itself (the default, see the module docstring)
            or the N images as a whole.

    Returns:
        ``{"many": [lo, hi], "medium": ..., "few": ..., "all": ..., "macro": ...}`` in percent;
        None for a metric that is undefined (an empty group, or a group without test images).
    """
    _check_options(num_resamples, confidence)
    num_classes = len(train_counts)
    labels_np = _as_numpy(labels, np.int64)
    correct_np = _as_numpy(correct, bool)
    _check(labels_np, num_classes, correct_np)
    if not len(labels_np):
        return dict.fromkeys(METRICS)
    cells = _cell_counts(labels_np, correct_np.astype(np.int64), num_classes, 2)  # (C, 2): wrong, right
    groups = shot_groups(train_counts, many, few)

    def metrics(drawn: np.ndarray) -> dict[str, np.ndarray]:  # (b, C, 2) -> each metric (b,)
        return _metrics_from_counts(drawn[..., 1], drawn.sum(axis=-1), groups)

    samples = _blockwise(seed, cells, num_resamples, stratified, metrics)
    return {metric: _interval(samples[metric], confidence) for metric in METRICS}


def bootstrap_ci_from_predictions(
    predictions: ArrayLike, labels: ArrayLike, train_counts: Sequence[int], **options: Any
) -> dict[str, list[float] | None]:
    """:func:`bootstrap_ci` of ``predictions == labels``, both (N,); ``options`` as there."""
    labels_np = _as_numpy(labels, np.int64)
    predictions_np = _as_numpy(predictions, np.int64)
    return bootstrap_ci(predictions_np == labels_np, labels_np, train_counts, **options)


def paired_bootstrap(
    correct_a: ArrayLike,
    correct_b: ArrayLike,
    labels: ArrayLike,
    train_counts: Sequence[int],
    *,
    metric: str = "macro",
    many: int = 100,
    few: int = 20,
    num_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    stratified: bool = True,
) -> dict[str, Any]:
    """Paired bootstrap of ``metric(A) - metric(B)`` on one test set: both are scored on the same resamples.

    Args:
        correct_a, correct_b: (N,) bool, whether methods A and B got test image i right
            (the same images, in the same order).
        labels: (N,) int, the true classes.
        train_counts, many, few, num_resamples, seed, confidence, stratified: as in :func:`bootstrap_ci`.
        metric: one of ``many``, ``medium``, ``few``, ``all``, ``macro``.

    Returns:
        ``{"metric", "difference", "ci", "a_wins", "ties", "b_wins", "resamples"}``:
        ``difference`` is A - B in points on the test set itself (with stratified
        resampling also the mean over resamples in expectation: every metric is
        linear in the per-class accuracies); ``ci`` its percentile interval;
        ``a_wins`` / ``b_wins`` the share of resamples in which A is strictly
        better / worse, and ``ties`` the share in which they are equal (within
        :data:`TIE_TOLERANCE` points). Ties are reported apart rather than
        split: two methods that disagree on few images tie in many resamples,
        and folding those in would hide it. ``resamples`` is how many resamples
        had the metric defined (all of them when stratified).

    Raises:
        ValueError: an unknown metric, mismatched lengths, or a metric undefined on this
            test set (an empty group).
    """
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r}: expected one of {', '.join(METRICS)}")
    _check_options(num_resamples, confidence)
    num_classes = len(train_counts)
    labels_np = _as_numpy(labels, np.int64)
    a = _as_numpy(correct_a, bool)
    b = _as_numpy(correct_b, bool)
    _check(labels_np, num_classes, a, b)
    groups = shot_groups(train_counts, many, few)
    # Joint outcome code: 0 neither, 1 B only, 2 A only, 3 both.
    cells = _cell_counts(labels_np, 2 * a.astype(np.int64) + b.astype(np.int64), num_classes, 4)  # (C, 4)
    observed = _paired_difference(cells, groups, metric)
    if math.isnan(observed):
        raise ValueError(f"metric {metric!r} is undefined on this test set (no class or no test image in it)")
    differences = _blockwise(  # (B,) from (b, C, 4) blocks
        seed, cells, num_resamples, stratified, lambda drawn: {metric: _paired_difference(drawn, groups, metric)}
    )[metric]
    differences = differences[~np.isnan(differences)]
    return {
        "metric": metric,
        "difference": observed,
        "ci": _interval(differences, confidence),
        "a_wins": float(np.mean(differences > TIE_TOLERANCE)),
        "ties": float(np.mean(np.abs(differences) <= TIE_TOLERANCE)),
        "b_wins": float(np.mean(differences < -TIE_TOLERANCE)),
        "resamples": int(len(differences)),
    }


def _paired_difference(cells: np.ndarray, groups: dict[str, list[int]], metric: str) -> Any:
    """(..., C, 4) joint-outcome counts -> metric(A) - metric(B) in points, shape (...) (float for (C, 4))."""
    sizes = cells.sum(axis=-1)
    hits_a = cells[..., 2] + cells[..., 3]
    hits_b = cells[..., 1] + cells[..., 3]
    difference = (
        _metrics_from_counts(hits_a, sizes, groups)[metric] - _metrics_from_counts(hits_b, sizes, groups)[metric]
    )
    return float(difference) if np.ndim(difference) == 0 else difference
