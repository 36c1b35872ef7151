"""Logit-adjusted loss (Menon et al., "Long-Tail Learning via Logit Adjustment", ICLR 2021)."""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Real
from typing import Any

import torch
from torch.nn import functional as F

from ..config import Interval, option
from .base import CountsLike, Loss, LossSpec, check_inputs, check_number, log_prior, register_loss


class LogitAdjustedLoss(Loss):
    """Logit-adjusted loss (Menon et al. 2021): ``CE(z + τ log π, y)``, π the class prior.

    A class with no images gets the finite log prior described in :func:`log_prior`.

    Args:
        class_counts: (C,) images per class.
        tau: adjustment strength, >= 0; 0 is cross-entropy.
    """

    def __init__(self, class_counts: CountsLike, tau: float = 1.0) -> None:
        super().__init__()
        self.tau = check_number("tau", tau, isinstance(tau, Real) and tau >= 0, "a number >= 0")
        self.register_buffer("log_prior", log_prior(class_counts))
        self.num_classes = self.log_prior.numel()

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(N, C) float, (N,) int64 -> scalar."""
        logits = check_inputs(logits, targets, self.num_classes)
        if not len(targets):  # an empty batch: 0, as every loss gives it (F.cross_entropy's mean is NaN)
            return logits.sum()
        return F.cross_entropy(logits + self.tau * self.log_prior.to(logits.dtype), targets)


@dataclass
class LogitAdjustedConfig:
    """train.logit_adjusted: the adjustment's strength."""

    tau: float = option(1.0, "τ: cross-entropy on logits + τ·log prior", Interval(0))


def create(counts: torch.Tensor, section: Any, epochs: int) -> Loss:
    return LogitAdjustedLoss(counts, tau=section.tau)


SPEC = register_loss(
    LossSpec(
        name="logit_adjusted",
        label="Logit-adjusted CE",
        summary="cross-entropy on logits + τ log π_j (Menon et al. 2021)",
        create=create,
        config=LogitAdjustedConfig,
        renamed={"la_tau": "tau"},
    )
)
