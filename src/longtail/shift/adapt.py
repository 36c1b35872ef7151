"""Prior adaptation of any method's logits: ``none``, ``known``, ``em``, ``bbse``.

One post-hoc step after a method's head and its calibration:

1. ``q = softmax(calibration(logits))``: calibrated posteriors for the
   calibration's source prior ``π_s`` (BCTS on validation: the validation
   class shares).
2. A target prior ``π_t``: ``none`` keeps ``π_s``; ``known`` takes the one
   given; ``em`` estimates it from the batch being scored (:mod:`.em`, started
   at ``π_s``); ``bbse`` from the batch's prediction counts and the validation
   confusion matrix (:mod:`.bbse`).
3. ``p_t(y|x) ∝ q(y|x) · π_t(y) / π_s(y)`` (:func:`.priors.reweight`); the
   prediction is its argmax.

Nothing here takes labels: the batch is unlabeled, and what was learned from
labels (the calibration, the BBSE confusion matrix) was fitted on validation
beforehand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from ..errors import DataError
from .bbse import BBSEFit, bbse_prior
from .calibrate import Calibration, identity_calibration
from .em import DEFAULT_MAX_ITERATIONS, DEFAULT_TOLERANCE, em_prior
from .priors import PriorLike, as_prior, check_logits, reweight

PriorMethod = Literal["none", "known", "em", "bbse"]
PRIOR_METHODS: tuple[str, ...] = ("none", "known", "em", "bbse")


@dataclass(frozen=True)
class Adapted:
    """Posteriors moved to a target prior.

    Attributes:
        method: the prior method (``none``, ``known``, ``em``, ``bbse``).
        log_posteriors: (N, C) float64 normalised log posteriors for :attr:`prior`.
        prior: (C,) float64 the target prior used (``none``: the calibration's source prior).
        source_prior: (C,) float64 the prior the calibrated posteriors were for.
        iterations: EM steps (``em`` only, else None).
        converged: whether EM converged (``em`` only, else None).
        applied: False when the adaptation was turned off for this method (:mod:`.select`): the
            posteriors are the method's own softmax, :attr:`prior` is still the estimate.
    """

    method: str
    log_posteriors: torch.Tensor
    prior: torch.Tensor
    source_prior: torch.Tensor
    iterations: int | None = None
    converged: bool | None = None
    applied: bool = True

    def predictions(self) -> torch.Tensor:
        """(N,) int64 argmax class (ties to the smallest index, as accuracy is scored)."""
        return self.log_posteriors.argmax(dim=1)

    def summary(self) -> dict[str, Any]:
        """Plain JSON-able data: the method, the prior used, EM's iterations and convergence."""
        out: dict[str, Any] = {"method": self.method, "prior": self.prior.tolist(), "applied": self.applied}
        if self.iterations is not None:
            out.update(iterations=self.iterations, converged=self.converged)
        return out


def adapt_prior(
    logits: torch.Tensor,
    method: PriorMethod = "none",
    *,
    calibration: Calibration | None = None,
    target_prior: PriorLike | None = None,
    bbse: BBSEFit | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
    pseudo_count: float = 0.0,
    direction: PriorLike | None = None,
) -> Adapted:
    """Adapt (N, C) scores of an unlabeled batch to its class prior.

    Args:
        logits: (N, C) a method's raw scores of the batch.
        method: ``none``, ``known`` (needs ``target_prior``), ``em`` or ``bbse`` (needs ``bbse``).
        calibration: fitted on validation (:func:`~.calibrate.fit_calibration`); None: the identity with a
            uniform source prior (right only for scores that already are calibrated uniform-prior posteriors).
        target_prior: (C,) the deployment prior, for ``known``.
        bbse: :func:`~.bbse.fit_bbse` of the same method's raw validation scores, for ``bbse``.
        tolerance, max_iterations, pseudo_count: EM's options (see :func:`~.em.em_prior`).
        direction: (C,) for ``em``: move the prior only along ``π_s · exp(θ φ)`` (e.g. ``φ = log π_train``,
            the forward/backward family); None: the full simplex.

    Returns:
        an :class:`Adapted`; its ``predictions()`` are the adapted argmax.
    """
    if method not in PRIOR_METHODS:
        raise DataError(f"prior {method!r}: expected one of {', '.join(PRIOR_METHODS)} (or a prior vector: known)")
    scores = check_logits(logits, float64=False)  # float64 where it is used: no whole-table copy kept beside log_q
    num_classes = scores.shape[1]
    calibration = calibration if calibration is not None else identity_calibration(num_classes)
    log_q = calibration.log_posteriors(scores)
    source = calibration.prior_tensor()
    if method == "none":
        return Adapted(method, log_q, source, source)
    if method == "known":
        if target_prior is None:
            raise DataError("prior 'known': expected a target prior (a vector of class probabilities)")
        target = as_prior(target_prior, num_classes, name="target prior")
        return Adapted(method, reweight(log_q, source, target, in_place=True), target, source)
    if method == "em":
        result = em_prior(
            log_q,
            source,
            tolerance=tolerance,
            max_iterations=max_iterations,
            pseudo_count=pseudo_count,
            direction=direction,
        )
        return Adapted(
            method,
            reweight(log_q, source, result.prior, in_place=True),
            result.prior,
            source,
            result.iterations,
            result.converged,
        )
    if bbse is None:
        raise DataError("prior 'bbse': expected a BBSE fit on the validation split (fit_bbse)")
    if bbse.confusion.shape[0] != num_classes:
        raise DataError(f"prior 'bbse': the BBSE fit has {bbse.confusion.shape[0]} classes, the logits {num_classes}")
    target = bbse_prior(bbse, scores)
    return Adapted(method, reweight(log_q, source, target, in_place=True), target, source)


def fold_known_prior(calibration: Calibration, target_prior: PriorLike | None = None) -> tuple[float, torch.Tensor]:
    """The affine map of logits that calibrates and moves to a fixed prior: ``logits · scale + offset``.

    ``argmax(logits · scale + offset)`` is the prediction of :func:`adapt_prior` with ``known`` (or ``none``
    when ``target_prior`` is None), so an exported linear head ``W x + b`` becomes ``(scale · W) x + (scale · b
    + offset)`` and needs no runtime step.

    Args:
        calibration: fitted on validation.
        target_prior: (C,) the deployment prior; None keeps the calibration's source prior.

    Returns:
        ``(scale, offset)``: ``1 / T`` and the (C,) float64 ``bias + log π_t - log π_s``.
    """
    source = calibration.prior_tensor()
    target = source if target_prior is None else as_prior(target_prior, calibration.num_classes, name="target prior")
    offset = torch.tensor(calibration.bias, dtype=torch.float64) + target.log() - source.log()
    return 1.0 / calibration.temperature, offset
