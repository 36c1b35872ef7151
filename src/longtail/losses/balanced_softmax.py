"""Balanced softmax (Ren et al., "Balanced Meta-Softmax for Long-Tailed Visual Recognition", NeurIPS 2020)."""

from __future__ import annotations

from typing import Any

import torch

from .base import CountsLike, Loss, LossSpec, register_loss
from .logit_adjusted import LogitAdjustedLoss


class BalancedSoftmaxLoss(LogitAdjustedLoss):
    """Balanced softmax (Ren et al. 2020): ``CE(z + log n_j, y)``.

    Implemented as ``CE(z + log π_j, y)``: the two differ by the constant
    ``log Σ n`` per row, which softmax ignores, so values and gradients are
    identical, and it equals :class:`LogitAdjustedLoss` with τ = 1.

    Args:
        class_counts: (C,) images per class.
    """

    def __init__(self, class_counts: CountsLike) -> None:
        super().__init__(class_counts, tau=1.0)


def create(counts: torch.Tensor, section: Any, epochs: int) -> Loss:
    return BalancedSoftmaxLoss(counts)


SPEC = register_loss(
    LossSpec(
        name="balanced_softmax",
        label="Balanced softmax",
        summary="cross-entropy on logits + log n_j (Ren et al. 2020)",
        create=create,
    )
)
