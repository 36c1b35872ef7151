"""Plain softmax cross-entropy: the instance-balanced baseline of stage 1."""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from .base import Loss, LossSpec, check_inputs, register_loss


class CrossEntropyLoss(Loss):
    """Plain softmax cross-entropy, mean over the batch."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(N, C) float, (N,) int64 -> scalar."""
        logits = check_inputs(logits, targets, None)
        if not len(targets):  # an empty batch: 0, as every loss gives it (F.cross_entropy's mean is NaN)
            return logits.sum()
        return F.cross_entropy(logits, targets)


def create(counts: torch.Tensor, section: Any, epochs: int) -> Loss:
    return CrossEntropyLoss()


SPEC = register_loss(LossSpec(name="ce", label="Cross-entropy", summary="cross-entropy", create=create, baseline=True))
