"""Class-balanced loss (Cui et al., "Class-Balanced Loss Based on Effective Number of Samples", CVPR 2019)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F

from ..config import Interval, option
from .base import CountsLike, Loss, LossSpec, batch_mean, check_inputs, class_balanced_weights, register_loss
from .focal import FocalLoss


def weighted_focal_terms(
    logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor, gamma: float
) -> torch.Tensor:
    """Per-sample weighted focal loss of Cao et al. (2019): (N, C), (N,), (C,) -> (N,).

    With ``ce_i = w_{y_i} (-log p_{y_i})`` (the per-sample ``F.cross_entropy`` with
    ``weight=w``) and ``p_i = exp(-ce_i) = p_{y_i}^{w_{y_i}}``, the term is
    ``(1 - p_i)^γ ce_i``: the class weight sits inside the focal factor too.
    """
    ce = F.cross_entropy(logits, targets, weight=weight.to(logits.dtype), reduction="none")
    # 1 - exp(-ce) = -expm1(-ce) keeps precision near ce = 0; the clamp keeps the gradient of
    # (1 - p)^γ finite where ce == 0 (a weight-0 class) and γ < 1 (it is multiplied by ce = 0).
    one_minus_p = (-torch.expm1(-ce)).clamp_min(torch.finfo(ce.dtype).tiny)
    return one_minus_p.pow(gamma) * ce


class ClassBalancedLoss(FocalLoss):
    """Class-balanced loss (Cui et al. 2019): CE (γ = 0) or focal (γ > 0) weighted by :func:`class_balanced_weights`.

    γ = 0: weighted cross-entropy, ``F.cross_entropy(logits, y, weight=w)``, i.e.
    ``Σ_i w_{y_i} l_i / Σ_i w_{y_i}`` (Cao et al.'s "CE + Reweight").

    γ > 0: the weighted focal loss of Cao et al.'s LDAM-DRW code (``FocalLoss`` in
    its ``losses.py``, "Focal + Reweight"): ``ce_i = w_{y_i} (-log p_{y_i})``,
    ``p_i = exp(-ce_i)``, loss ``= mean_i (1 - p_i)^γ ce_i`` — the class weight
    inside the focal term (``p_i = p_{y_i}^{w_{y_i}}``, not ``p_{y_i}``) and a plain
    mean over the N samples, not ``Σ w`` (so a batch of weight-0 targets gives 0).
    Cui et al.'s own focal variant is sigmoid-based; this is the softmax form.

    Args:
        class_counts: (C,) images per class.
        beta: effective-number hyper-parameter in [0, 1).
        gamma: focal parameter, >= 0; 0 gives weighted cross-entropy.
    """

    def __init__(self, class_counts: CountsLike, beta: float = 0.9999, gamma: float = 0.0) -> None:
        super().__init__(gamma=gamma, weight=class_balanced_weights(class_counts, beta))
        self.beta = float(beta)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(N, C) float, (N,) int64 -> scalar."""
        if self.gamma == 0:
            return super().forward(logits, targets)
        logits = check_inputs(logits, targets, self.num_classes)
        return batch_mean(weighted_focal_terms(logits, targets, self.weight, self.gamma))


@dataclass
class ClassBalancedConfig:
    """train.class_balanced: the effective number's β."""

    beta: float = option(
        0.9999, "β of the effective number (1-β^n)/(1-β): weights ∝ (1-β)/(1-β^n_j)", Interval(0, 1, "left")
    )


def create(counts: torch.Tensor, section: Any, epochs: int) -> Loss:
    return ClassBalancedLoss(counts, beta=section.beta)


SPEC = register_loss(
    LossSpec(
        name="class_balanced",
        label="Class-balanced CE",
        summary="cross-entropy weighted by the inverse effective number (1 - β)/(1 - β^n_j) (Cui et al. 2019)",
        create=create,
        config=ClassBalancedConfig,
        renamed={"cb_beta": "beta"},
    )
)
