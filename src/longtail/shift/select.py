"""Per method, on the validation split alone: which calibration, and whether prior adaptation helps at all.

Two questions, both answered by K-fold cross-validation on the validation
split (stratified: the k-th image of each class goes to fold ``k mod K``, so
the folds are deterministic and every fold keeps the class shares):

1. **Which calibration.** Each candidate kind (``temperature``, ``pcts``,
   ``bcts``; :mod:`.calibrate`) is fitted on K - 1 folds and scored by its NLL
   on the held-out fold; the simplest kind within one standard error of the
   lowest out-of-fold NLL wins (the one-standard-error rule) and is refitted
   on the whole split. More parameters fit the split better and the held-out
   images worse: cross-validation weighs the two, and the rule keeps a kind
   with C more parameters from winning by a margin smaller than its noise
   (on the demo's 200 images, BCTS's 11 parameters won for Joint by 0.001
   nats and cost it 1.5 points where the test prior was near its own).
2. **Whether to adapt.** A prior shift helps only if the calibrated scores
   behave like posteriors when the prior moves. This is checked on validation
   by importance weighting: a validation image of class ``y`` gets weight
   ``π_t(y) / π_v(y)``, so weighted accuracy is accuracy under ``π_t``
   (Sugiyama et al.'s covariate-shift identity, here for labels). For each of
   SADE's shifted priors (forward-F and backward-F, F in 2..50, shaped on the
   training sizes), the out-of-fold calibrated posteriors moved to ``π_t``
   (``known``) are compared with the method's raw argmax. If the mean gain is
   not positive, adaptation is off for that method: its predictions stay its
   own (``adapt`` still estimates and reports the prior). Nearest-class-mean
   scores fail this on the demo (their Bayes adjustment loses up to 9 points
   under backward shifts even with the true prior).

Nothing of test enters: the inputs are validation logits and labels, and the
training class sizes (which define the shifted priors' shape).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from ..errors import DataError
from .calibrate import Calibration, CalibrationKind, fit_calibration
from .priors import check_logits, class_shares
from .subsets import IMBALANCES, Shift, target_shape

DEFAULT_FOLDS = 5
CANDIDATES: tuple[str, ...] = ("temperature", "pcts", "bcts")


@dataclass(frozen=True)
class Selection:
    """What cross-validation on the validation split chose for one method.

    Attributes:
        calibration: the chosen kind, refitted on the whole validation split.
        cv_nll: out-of-fold mean NLL (nats) per candidate kind.
        shift_gain: per shifted prior name (``forward-50`` ...), the importance-weighted validation
            accuracy of the out-of-fold calibrated posteriors moved to that prior, minus that of the raw
            argmax, in points.
        enabled: whether the mean of ``shift_gain`` is positive (prior adaptation is applied).
        folds: K.
    """

    calibration: Calibration
    cv_nll: dict[str, float]
    shift_gain: dict[str, float]
    enabled: bool
    folds: int

    @property
    def mean_gain(self) -> float:
        """Mean of :attr:`shift_gain` (points)."""
        return statistics.fmean(self.shift_gain.values()) if self.shift_gain else float("nan")


def stratified_folds(labels: torch.Tensor, folds: int) -> torch.Tensor:
    """(N,) fold index of each image: the k-th image of its class (in order) goes to fold ``k mod folds``."""
    fold = torch.empty_like(labels)
    for cls in labels.unique():
        members = torch.nonzero(labels == cls).squeeze(1)
        fold[members] = torch.arange(len(members)) % folds
    return fold


def shifted_priors(train_counts: Sequence[int], imbalances: Sequence[float] = IMBALANCES) -> dict[str, torch.Tensor]:
    """SADE's shifted priors by name (forward-F, backward-F): (C,) float64 each, shaped on the training sizes."""
    priors = {}
    for direction in ("forward", "backward"):
        for factor in imbalances:
            shape = torch.as_tensor(target_shape(train_counts, Shift(direction, float(factor))))
            priors[Shift(direction, float(factor)).name] = shape / shape.sum()
    return priors


def select_calibration(
    val_logits: torch.Tensor,
    val_labels: torch.Tensor | Sequence[int],
    train_counts: Sequence[int],
    *,
    candidates: Sequence[CalibrationKind] = CANDIDATES,  # type: ignore[assignment]
    folds: int = DEFAULT_FOLDS,
) -> Selection:
    """Choose a method's calibration by K-fold NLL and check prior adaptation on validation (module docstring).

    Args:
        val_logits: (N_val, C) the method's raw scores of the validation images.
        val_labels: (N_val,) their labels; every class needs at least 2 images.
        train_counts: (C,) training images per class (``pcts``'s direction, the shifted priors' shape).
        candidates: calibration kinds to compare (any of ``temperature``, ``pcts``, ``bcts``).
        folds: K; lowered to the smallest class's number of validation images.

    Returns:
        a :class:`Selection`.
    """
    scores = check_logits(val_logits, "validation logits")
    labels = torch.as_tensor(val_labels).detach().cpu().long().reshape(-1)
    num_classes = scores.shape[1]
    if len(labels) != len(scores):
        raise DataError(f"validation labels: {len(labels)} labels for {len(scores)} rows of logits")
    if len(train_counts) != num_classes:
        raise DataError(f"training class sizes: {len(train_counts)} classes, the logits have {num_classes}")
    if not candidates or any(kind not in CANDIDATES for kind in candidates):
        raise DataError(f"calibration candidates {list(candidates)!r}: expected some of {', '.join(CANDIDATES)}")
    smallest = int(torch.bincount(labels, minlength=num_classes).min())
    folds = min(folds, smallest)
    if folds < 2:
        raise DataError(f"validation split: a class has {smallest} sample(s); cross-validation needs 2 per class")
    fold = stratified_folds(labels, folds)
    out_of_fold: dict[str, torch.Tensor] = {}
    sources: dict[str, torch.Tensor] = {}
    for kind in candidates:
        out_of_fold[kind], sources[kind] = _out_of_fold(scores, labels, kind, train_counts, fold)
    cv_nll = {kind: float(F.nll_loss(out_of_fold[kind], labels)) for kind in candidates}
    best = _simplest_within_one_se(out_of_fold, labels, candidates)
    train_prior = torch.as_tensor(list(train_counts), dtype=torch.float64)
    calibration = fit_calibration(scores, labels, best, train_prior=train_prior)
    gains = _shift_gains(scores, labels, out_of_fold[best], sources[best], train_counts)
    enabled = bool(gains) and statistics.fmean(gains.values()) > 0
    return Selection(calibration, cv_nll, gains, enabled, folds)


def _simplest_within_one_se(
    out_of_fold: dict[str, torch.Tensor], labels: torch.Tensor, candidates: Sequence[str]
) -> str:
    """The simplest kind (in ``candidates`` order) whose out-of-fold NLL is within one standard error of the
    lowest: the one-standard-error rule of cross-validation (Breiman et al. 1984), on the paired per-image
    differences (each kind's (N, C) out-of-fold log posteriors, (N,) labels)."""
    nll = {kind: -out_of_fold[kind].gather(1, labels[:, None]).squeeze(1) for kind in candidates}
    lowest = min(candidates, key=lambda kind: (float(nll[kind].mean()), candidates.index(kind)))
    for kind in candidates:
        excess = nll[kind] - nll[lowest]
        standard_error = float(excess.std()) / math.sqrt(len(excess)) if len(excess) > 1 else 0.0
        if float(excess.mean()) <= standard_error:
            return kind
    return lowest


def _out_of_fold(
    scores: torch.Tensor, labels: torch.Tensor, kind: CalibrationKind, train_counts: Sequence[int], fold: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C) log posteriors of each image by the ``kind`` calibration fitted on the other folds, and (N, C) the
    source prior of its fold's calibration (row by row)."""
    train_prior = torch.as_tensor(list(train_counts), dtype=torch.float64)
    log_q = torch.empty_like(scores)
    source = torch.zeros(len(labels), scores.shape[1], dtype=torch.float64)
    for k in range(int(fold.max()) + 1):
        held = fold == k
        cal = fit_calibration(scores[~held], labels[~held], kind, train_prior=train_prior)
        log_q[held] = cal.log_posteriors(scores[held])
        source[held] = cal.prior_tensor()
    return log_q, source


def out_of_fold_posteriors(
    val_logits: torch.Tensor,
    val_labels: torch.Tensor | Sequence[int],
    train_counts: Sequence[int],
    kind: CalibrationKind,
    folds: int = DEFAULT_FOLDS,
) -> torch.Tensor:
    """(N_val, C) float64 log posteriors of the ``kind`` calibration on validation, each image's from the fit on
    the folds without it (the folds of :func:`select_calibration`): what the calibration does to images it was
    not fitted on, for a reliability diagram that does not grade the fit on its own data."""
    scores = check_logits(val_logits, "validation logits")
    labels = torch.as_tensor(val_labels).detach().cpu().long().reshape(-1)
    if len(labels) != len(scores):
        raise DataError(f"validation labels: {len(labels)} labels for {len(scores)} rows of logits")
    smallest = int(torch.bincount(labels, minlength=scores.shape[1]).min())
    if min(folds, smallest) < 2:
        raise DataError(f"validation split: a class has {smallest} sample(s); cross-validation needs 2 per class")
    return _out_of_fold(scores, labels, kind, train_counts, stratified_folds(labels, min(folds, smallest)))[0]


def _shift_gains(
    scores: torch.Tensor,
    labels: torch.Tensor,
    log_q: torch.Tensor,
    source: torch.Tensor,
    train_counts: Sequence[int],
) -> dict[str, float]:
    """Per shifted prior: weighted accuracy (points) of ``log_q`` moved to it, minus the raw argmax's."""
    num_classes = scores.shape[1]
    shares = class_shares(labels, num_classes)
    raw_right = (scores.argmax(dim=1) == labels).double()
    gains = {}
    try:
        priors = shifted_priors(train_counts)
    except DataError:  # balanced training classes: no shifted prior to simulate
        return {}
    for name, prior in priors.items():
        weights = (prior / shares)[labels]
        # Each row carries its own fold's source prior: the Bayes shift row by row (argmax needs no softmax).
        moved = log_q + prior.log() - source.log()
        right = (moved.argmax(dim=1) == labels).double()
        gain = 100.0 * float((weights * (right - raw_right)).sum() / weights.sum())
        gains[name] = gain if math.isfinite(gain) else float("nan")
    return gains
