"""Focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017), softmax form."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F

from ..config import Interval, option
from ..errors import ConfigError
from .base import Loss, LossSpec, check_gamma, check_inputs, register_loss, weighted_mean


def focal_terms(logits: torch.Tensor, targets: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-sample softmax focal loss ``-(1 - p_t)^γ log p_t``: (N, C), (N,) -> (N,).

    Computed from ``log_softmax`` (stable for large logits); γ = 0 is cross-entropy.
    """
    if gamma == 0:
        return F.cross_entropy(logits, targets, reduction="none")
    log_pt = F.log_softmax(logits, dim=1).gather(1, targets.unsqueeze(1)).squeeze(1)
    # 1 - p_t = -expm1(log p_t) keeps precision near p_t = 1; the clamp keeps the gradient of
    # (1 - p_t)^γ finite where p_t == 1 and γ < 1 (there it is multiplied by log p_t = 0 anyway).
    one_minus_pt = (-torch.expm1(log_pt)).clamp_min(torch.finfo(log_pt.dtype).tiny)
    return -one_minus_pt.pow(gamma) * log_pt


class FocalLoss(Loss):
    """Softmax focal loss ``-(1 - p_t)^γ log p_t`` (Lin et al. 2017); γ = 0 is cross-entropy.

    Args:
        gamma: focusing parameter, >= 0.
        weight: optional (C,) per-class weights; the mean is then ``Σ w_y l / Σ w_y``
            as in ``F.cross_entropy(weight=...)``.
    """

    def __init__(self, gamma: float = 2.0, weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.gamma = check_gamma(gamma)
        if weight is not None:
            weight = torch.as_tensor(weight, dtype=torch.float32).detach().clone()
            if weight.ndim != 1:
                raise ConfigError(f"weight: expected a (C,) tensor, got shape {tuple(weight.shape)}")
            self.num_classes = weight.numel()
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(N, C) float, (N,) int64 -> scalar."""
        logits = check_inputs(logits, targets, self.num_classes)
        return weighted_mean(focal_terms(logits, targets, self.gamma), targets, self.weight)


@dataclass
class FocalConfig:
    """train.focal: the focusing parameter."""

    gamma: float = option(2.0, "γ of -(1 - p_t)^γ log p_t (0: cross-entropy)", Interval(0))


def create(counts: torch.Tensor, section: Any, epochs: int) -> Loss:
    return FocalLoss(gamma=section.gamma)


SPEC = register_loss(
    LossSpec(
        name="focal",
        label="Focal",
        summary="-(1 - p_t)^γ log p_t (Lin et al. 2017)",
        create=create,
        config=FocalConfig,
        renamed={"focal_gamma": "gamma"},
    )
)
