"""LWS, learnable weight scaling (Kang et al. 2020, Section 4): one learned scale per class on the joint classifier.

``W`` and ``b`` stay frozen; the official forward is ``(W x + b) * s``, the bias
scaled too. The official code applies weight decay to ``s``, pulling it toward
0; here ``decouple.lws.weight_decay`` defaults to 0 and says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..config import HeadTrainingConfig, option
from ..models.heads import LinearForm, frozen_copy, register_head
from . import register_method
from .base import TRAINED_HEAD_KEYS, FitContext, Fitted, MethodSpec, lr_variants


@dataclass
class LWSConfig(HeadTrainingConfig):
    """``decouple.lws``: learnable weight scaling (official: 5 epochs, batch 512, lr 0.2, cosine)."""

    epochs: int = option(5, "LWS epochs (official: 5)")
    weight_decay: float = option(
        0.0, "weight decay on the scales; the official code uses 5e-4, which pulls them toward 0 (set it to reproduce)"
    )


@register_head("lws")
class LWSHead(nn.Module):
    """Learnable weight scaling: ``(W x + b) * s`` with W, b frozen and one scale ``s_j`` per class.

    ``scales`` (C,) start at 1 and are the only parameter.

    Args:
        weight: (C, d) weight of the trained joint classifier (copied, frozen).
        bias: (C,) its bias, or None.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("weight", weight.detach().clone())
        self.register_buffer("bias", frozen_copy(bias))
        self.scales = nn.Parameter(torch.ones(weight.shape[0], dtype=weight.dtype, device=weight.device))

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> LWSHead:
        """Scales on a trained linear classifier (all 1: the classifier itself)."""
        return cls(linear.weight, linear.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(N, d) -> (N, C)."""
        return F.linear(features, self.weight, self.bias) * self.scales

    def as_linear(self) -> LinearForm:
        scales = self.scales.detach()
        bias = None if self.bias is None else self.bias * scales
        return LinearForm(self.weight * scales.unsqueeze(1), bias)

    def options(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_state(
        cls, num_features: int, num_classes: int, state_dict: dict[str, torch.Tensor], options: dict[str, Any]
    ) -> LWSHead:
        bias = torch.zeros(num_classes) if "bias" in state_dict else None
        head = cls(torch.zeros(num_classes, num_features), bias)
        head.load_state_dict(state_dict)
        return head


def fit(context: FitContext) -> Fitted:
    """Learn the scales with ``decouple.lws`` on the frozen joint classifier."""
    head = LWSHead.from_linear(context.joint)
    return context.train_head(head, context.section("lws"), method="lws")


SPEC = register_method(
    MethodSpec(
        name="lws",
        summary="learnable weight scaling: one scale per class on the joint classifier, learned class-balanced",
        label="LWS",
        color="tab:green",
        fit=fit,
        order=40,
        section="lws",
        config=LWSConfig,
        needs_linear_joint=True,
        in_paper=True,
        show_norms=True,
        variants=lr_variants(fit),
        reads=TRAINED_HEAD_KEYS,
    )
)
