"""Calibration: expected calibration error (ECE) and reliability-diagram data, equal-width confidence bins.

A classifier is calibrated when, among the images it predicts with confidence
``p``, a fraction ``p`` is right. The confidence of a prediction is the largest
softmax probability of its logits. Bin ``m`` of ``B`` holds the confidences in
``((m - 1) / B, m / B]`` (a confidence of exactly 0 goes to the first bin), and

    ECE = sum_m |B_m| / N * |accuracy(B_m) - mean confidence(B_m)|

(Guo et al. 2017, "On calibration of modern neural networks"). Re-balancing the
classifier moves its logits, so it moves calibration too: the report shows ECE
per method beside the accuracies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

DEFAULT_BINS = 15  # Guo et al.'s choice, and the usual one since

# More classes than this: reliability diagrams are drawn in bins log-spaced from 1/C (below about 0.01 the top
# softmax probability of most predictions sits in the first of the equal-width bins).
LOG_CONFIDENCE_FROM = 100


def drawn_edges(num_classes: int, num_bins: int) -> np.ndarray | None:
    """(B + 1,) bin edges log-spaced from 1/C to 1 for a diagram of ``num_classes`` beyond
    :data:`LOG_CONFIDENCE_FROM`; None (equal-width bins) up to it."""
    return np.geomspace(1.0 / num_classes, 1.0, num_bins + 1) if num_classes > LOG_CONFIDENCE_FROM else None


@dataclass(frozen=True)
class Reliability:
    """Reliability-diagram data over equal-width confidence bins.

    Attributes:
        edges: (B + 1,) bin edges, 0 to 1.
        counts: (B,) predictions per bin.
        confidence: (B,) mean confidence per bin; NaN where a bin is empty.
        accuracy: (B,) fraction of right predictions per bin; NaN where a bin is empty.
        ece: expected calibration error, a fraction in [0, 1] (NaN without predictions).
    """

    edges: np.ndarray
    counts: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    ece: float


def _as_numpy(values: np.ndarray | torch.Tensor, dtype: type) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=dtype).reshape(-1)


def reliability(
    confidence: np.ndarray | torch.Tensor,
    correct: np.ndarray | torch.Tensor,
    num_bins: int = DEFAULT_BINS,
    *,
    edges: np.ndarray | None = None,
) -> Reliability:
    """Bin (N,) confidences in [0, 1] and (N,) right/wrong flags into ``num_bins`` equal-width bins.

    ``edges``: (B + 1,) increasing bin edges in [0, 1] instead (the report's log-spaced bins at many classes);
    a confidence below the first edge counts in the first bin, and the ECE is then over these bins.

    Raises:
        ValueError: on a bin count below 1, arrays of different lengths, a
            confidence outside [0, 1], or edges that do not increase within [0, 1].
    """
    if num_bins < 1:
        raise ValueError(f"num_bins={num_bins!r}: expected an integer >= 1")
    if edges is not None:
        edges = np.asarray(edges, dtype=np.float64)
        if edges.ndim != 1 or len(edges) < 2 or (np.diff(edges) <= 0).any() or edges[0] < 0 or edges[-1] > 1:
            raise ValueError("edges: expected at least two increasing values in [0, 1]")
        num_bins = len(edges) - 1
    conf = _as_numpy(confidence, np.float64)
    right = _as_numpy(correct, np.float64)
    if conf.shape != right.shape:
        raise ValueError(f"confidence has {conf.size} values but correct has {right.size}")
    if conf.size and (np.isnan(conf).any() or conf.min() < 0.0 or conf.max() > 1.0):
        raise ValueError("confidence: expected values in [0, 1]")
    edges = np.linspace(0.0, 1.0, num_bins + 1) if edges is None else edges
    # side="left" puts a confidence equal to an edge in the bin that edge closes: bins are (lo, hi].
    index = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, num_bins - 1)
    counts = np.bincount(index, minlength=num_bins)
    conf_sums = np.bincount(index, weights=conf, minlength=num_bins)
    right_sums = np.bincount(index, weights=right, minlength=num_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(counts > 0, conf_sums / counts, np.nan)
        accuracy = np.where(counts > 0, right_sums / counts, np.nan)
    # |sum of confidences - sum of hits| per bin over N is |B_m|/N * |acc - conf|, without dividing by |B_m|.
    ece = float(np.abs(conf_sums - right_sums).sum() / conf.size) if conf.size else float("nan")
    return Reliability(edges, counts, mean_conf, accuracy, ece)


def expected_calibration_error(
    confidence: np.ndarray | torch.Tensor, correct: np.ndarray | torch.Tensor, num_bins: int = DEFAULT_BINS
) -> float:
    """ECE of (N,) confidences and (N,) right/wrong flags, as a fraction in [0, 1]; see :func:`reliability`."""
    return reliability(confidence, correct, num_bins).ece


@torch.no_grad()
def softmax_confidence(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C) logits and (N,) labels -> (N,) top-1 softmax probability and (N,) bool "prediction is right".

    For a nearest-class-mean classifier the "logits" are its scores (negative
    distances): the confidence is then a softmax of those, a convention rather
    than a probability the classifier was trained to produce.
    """
    confidence = torch.softmax(logits.float(), dim=1).amax(dim=1)
    predicted = logits.argmax(dim=1)  # as the accuracy is scored: ties go to the smallest class index
    return confidence, predicted == labels.to(predicted.device)
