"""Black-box shift estimation (BBSE, Lipton, Wang & Smola, ICML 2018).

Any fixed classifier ``h`` works, calibrated or not. On the validation split
(source distribution) measure the joint confusion matrix ``Ĉ[i, j] = P_s(h(x) =
i, y = j)``; on the unlabeled target batch the distribution of predictions
``μ̂[i] = P_t(h(x) = i)``. Under label shift ``P(h = i | y = j)`` is the same on
both, so

    μ_t = Ĉ · w,    w(y) = π_t(y) / π_s(y)

Solve for ``w`` (least squares, so a singular ``Ĉ`` still gives an answer),
clip it to ``w >= 0`` and renormalise ``π_t = w · π_s / Σ (w · π_s)``. Its error
shrinks as 1/√N in both the validation and the target sizes, and grows with
the confusion matrix's condition number: a small validation split (20 images
per class in the demo) makes it noisy.

The fit (:func:`fit_bbse`) takes validation logits and labels; the estimate
(:func:`bbse_prior`) takes target logits only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import DataError
from .priors import check_logits, class_shares


@dataclass(frozen=True)
class BBSEFit:
    """BBSE's validation statistics.

    Attributes:
        confusion: (C, C) float64 joint ``P_val(prediction = i, label = j)``.
        source_prior: (C,) float64 validation class shares ``π_s`` (the column sums of ``confusion``).
    """

    confusion: torch.Tensor
    source_prior: torch.Tensor

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data."""
        return {"confusion": self.confusion.tolist(), "source_prior": self.source_prior.tolist()}


def fit_bbse(val_logits: torch.Tensor, val_labels: torch.Tensor | Sequence[int]) -> BBSEFit:
    """(N_val, C) validation scores and (N_val,) labels -> the :class:`BBSEFit` of the argmax classifier."""
    scores = check_logits(val_logits, "validation logits", float64=False)  # only its argmax is read
    num_samples, num_classes = scores.shape
    labels = torch.as_tensor(val_labels).detach().cpu().long().reshape(-1)
    if len(labels) != num_samples:
        raise DataError(f"validation labels: {len(labels)} labels for {num_samples} rows of logits")
    shares = class_shares(labels, num_classes)
    predictions = scores.argmax(dim=1)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    confusion.index_put_((predictions, labels), torch.ones(num_samples, dtype=torch.float64), accumulate=True)
    return BBSEFit(confusion / num_samples, shares)


def bbse_prior(fit: BBSEFit, logits: torch.Tensor) -> torch.Tensor:
    """(N, C) target scores -> (C,) float64 estimated target prior (the source prior for an empty batch)."""
    scores = check_logits(logits, "logits", float64=False) if logits.numel() else logits.double()  # argmax only
    num_classes = fit.confusion.shape[0]
    if scores.ndim != 2 or scores.shape[1] != num_classes:
        raise DataError(f"logits: expected (N, {num_classes}) scores, got {tuple(scores.shape)}")
    if not len(scores):
        return fit.source_prior.clone()
    predicted = torch.bincount(scores.argmax(dim=1), minlength=num_classes).double() / len(scores)
    weights = torch.linalg.lstsq(fit.confusion, predicted.unsqueeze(1), driver="gelsd").solution.squeeze(1)
    prior = weights.clamp_min(0.0) * fit.source_prior
    if float(prior.sum()) <= 0:  # every weight clipped: no information, keep the source prior
        return fit.source_prior.clone()
    return prior / prior.sum()
