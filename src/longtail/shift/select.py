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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from ..errors import DataError
from .calibrate import Calibration, CalibrationKind, fit_calibration, identity_calibration, row_chunks
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
        fold_calibrations: (K,) the chosen kind fitted on the other folds of each fold k (what the
            cross-validation scored), for out-of-fold diagnostics without fitting them again.
    """

    calibration: Calibration
    cv_nll: dict[str, float]
    shift_gain: dict[str, float]
    enabled: bool
    folds: int
    fold_calibrations: tuple[Calibration, ...] = ()

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
    scores = check_logits(val_logits, "validation logits", float64=False)
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
    train_prior = torch.as_tensor(list(train_counts), dtype=torch.float64)
    fits = {kind: _fold_calibrations(scores, labels, kind, train_prior, fold) for kind in candidates}
    image_nll = {kind: _out_of_fold_nll(scores, labels, fold, fits[kind]) for kind in candidates}
    cv_nll = {kind: float(image_nll[kind].mean()) for kind in candidates}
    best = _simplest_within_one_se(image_nll, candidates)
    calibration = fit_calibration(scores, labels, best, train_prior=train_prior)
    gains = _shift_gains(scores, labels, fold, fits[best], train_counts)
    enabled = bool(gains) and statistics.fmean(gains.values()) > 0
    return Selection(calibration, cv_nll, gains, enabled, folds, tuple(fits[best]))


def _simplest_within_one_se(image_nll: dict[str, torch.Tensor], candidates: Sequence[str]) -> str:
    """The simplest kind (in ``candidates`` order) whose out-of-fold NLL is within one standard error of the
    lowest: the one-standard-error rule of cross-validation (Breiman et al. 1984), on the paired per-image
    differences (each kind's (N,) out-of-fold NLL per image)."""
    lowest = min(candidates, key=lambda kind: (float(image_nll[kind].mean()), candidates.index(kind)))
    for kind in candidates:
        excess = image_nll[kind] - image_nll[lowest]
        standard_error = float(excess.std()) / math.sqrt(len(excess)) if len(excess) > 1 else 0.0
        if float(excess.mean()) <= standard_error:
            return kind
    return lowest


def _fold_calibrations(
    scores: torch.Tensor, labels: torch.Tensor, kind: CalibrationKind, train_prior: torch.Tensor, fold: torch.Tensor
) -> list[Calibration]:
    """Per fold k, the ``kind`` calibration fitted on the other folds' rows (no copy of the table)."""
    return [
        fit_calibration(scores, labels, kind, train_prior=train_prior, rows=torch.nonzero(fold != k).squeeze(1))
        for k in range(int(fold.max()) + 1)
    ]


def _out_of_fold(
    scores: torch.Tensor, fold: torch.Tensor, fits: Sequence[Calibration]
) -> Iterator[tuple[torch.Tensor, torch.Tensor, Calibration]]:
    """``(index, calibrated logits, calibration)`` in row chunks: each image's (M, C) float64 calibrated
    logits by the calibration fitted without its fold (one chunk of the table in memory at a time)."""
    for k, calibration in enumerate(fits):
        for index, chunk in row_chunks(scores, torch.nonzero(fold == k).squeeze(1)):
            yield index, calibration.logits(chunk), calibration


def _out_of_fold_nll(
    scores: torch.Tensor, labels: torch.Tensor, fold: torch.Tensor, fits: Sequence[Calibration]
) -> torch.Tensor:
    """(N,) out-of-fold NLL of each image (nats)."""
    nll = torch.empty(len(labels), dtype=torch.float64)
    for index, logits, _ in _out_of_fold(scores, fold, fits):
        nll[index] = torch.logsumexp(logits, dim=1) - logits.gather(1, labels[index].unsqueeze(1)).squeeze(1)
    return nll


def out_of_fold_top1(
    val_logits: torch.Tensor,
    val_labels: torch.Tensor | Sequence[int],
    train_counts: Sequence[int],
    kind: CalibrationKind,
    folds: int = DEFAULT_FOLDS,
    *,
    fold_calibrations: Sequence[Calibration] = (),
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N_val,) float64 top-1 confidence and (N_val,) predicted class of the ``kind`` calibration on validation,
    each image's from the fit on the folds without it (the folds of :func:`select_calibration`): what the
    calibration does to images it was not fitted on, for a reliability diagram that does not grade the fit on
    its own data. ``fold_calibrations``: those fits where they are at hand (:attr:`Selection.fold_calibrations`,
    one per fold, of ``kind``), so that they are not fitted again (about a minute per classifier at iNaturalist's
    size)."""
    scores = check_logits(val_logits, "validation logits", float64=False)
    labels = torch.as_tensor(val_labels).detach().cpu().long().reshape(-1)
    if len(labels) != len(scores):
        raise DataError(f"validation labels: {len(labels)} labels for {len(scores)} rows of logits")
    smallest = int(torch.bincount(labels, minlength=scores.shape[1]).min())
    if min(folds, smallest) < 2:
        raise DataError(f"validation split: a class has {smallest} sample(s); cross-validation needs 2 per class")
    fold = stratified_folds(labels, min(folds, smallest))
    train_prior = torch.as_tensor(list(train_counts), dtype=torch.float64)
    confidence = torch.empty(len(labels), dtype=torch.float64)
    predicted = torch.empty(len(labels), dtype=torch.long)
    folds_used = int(fold.max()) + 1
    if fold_calibrations and (
        len(fold_calibrations) != folds_used or any(fit.kind != kind for fit in fold_calibrations)
    ):
        raise DataError(f"fold calibrations: expected {folds_used} of kind {kind!r}, got {len(fold_calibrations)}")
    if kind == "none":  # the raw softmax, with no fit (and no NLL pass) per fold
        fits: Sequence[Calibration] = [identity_calibration(scores.shape[1])] * folds_used
    else:
        fits = fold_calibrations or _fold_calibrations(scores, labels, kind, train_prior, fold)
    for index, logits, _ in _out_of_fold(scores, fold, fits):
        top, predicted[index] = logits.max(dim=1)
        confidence[index] = (top - torch.logsumexp(logits, dim=1)).exp()
    return confidence, predicted


def _shift_gains(
    scores: torch.Tensor,
    labels: torch.Tensor,
    fold: torch.Tensor,
    fits: Sequence[Calibration],
    train_counts: Sequence[int],
) -> dict[str, float]:
    """Per shifted prior: weighted accuracy (points) of the out-of-fold calibrated posteriors (``fits``, one
    per fold) moved to it, minus the raw argmax's."""
    num_classes = scores.shape[1]
    shares = class_shares(labels, num_classes)
    try:
        priors = shifted_priors(train_counts)
    except DataError:  # balanced training classes: no shifted prior to simulate
        return {}
    raw_right = torch.empty(len(labels), dtype=torch.float64)
    moved_right = {name: torch.empty(len(labels), dtype=torch.float64) for name in priors}
    for index, logits, calibration in _out_of_fold(scores, fold, fits):
        truth = labels[index]
        raw_right[index] = (scores[index].argmax(dim=1) == truth).double()
        log_source = calibration.prior_tensor().log()
        for name, prior in priors.items():  # the Bayes shift to each prior (argmax needs no softmax)
            moved_right[name][index] = ((logits + (prior.log() - log_source)).argmax(dim=1) == truth).double()
    gains = {}
    for name, prior in priors.items():
        weights = (prior / shares)[labels]
        gain = 100.0 * float((weights * (moved_right[name] - raw_right)).sum() / weights.sum())
        gains[name] = gain if math.isfinite(gain) else float("nan")
    return gains
