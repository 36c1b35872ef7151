"""Post-hoc logit adjustment (Menon et al., ICLR 2021): ``W x + b - τ log π`` on the joint classifier.

The related post-hoc baseline: no training, τ swept over ``decouple.logit_adjust``
(default ``linspace(0, 2, 21)``) and chosen on validation; π is the training
class prior.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..config import TauConfig
from ..engine.feature_rows import chunk_rows, float_chunks
from ..losses import log_prior
from ..models.heads import LinearForm, frozen_copy, register_head
from . import register_method
from .base import FitContext, Fitted, MethodSpec, choose_on_validation


@register_head("logit_adjust")
class LogitAdjustedHead(nn.Module):
    """``W x + b - τ log π`` on the frozen joint classifier: a linear layer whose bias is ``b - τ log π``.

    Args:
        weight: (C, d) weight of the trained joint classifier (copied, frozen).
        bias: (C,) its bias, or None.
        log_prior: (C,) ``log π_j`` of the training classes.
        tau: the strength τ (0: the joint classifier).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, log_prior: torch.Tensor, tau: float) -> None:
        super().__init__()
        self.register_buffer("weight", weight.detach().clone())
        self.register_buffer("bias", torch.zeros(weight.shape[0]) if bias is None else frozen_copy(bias))
        self.register_buffer("log_prior", log_prior.detach().clone().to(weight.dtype))
        self.register_buffer("tau", torch.tensor(float(tau)))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(N, d) -> (N, C)."""
        return F.linear(features, self.weight, self.bias - self.tau * self.log_prior)

    def as_linear(self) -> LinearForm:
        return LinearForm(self.weight.detach(), (self.bias - self.tau * self.log_prior).detach())

    def options(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_state(
        cls, num_features: int, num_classes: int, state_dict: dict[str, torch.Tensor], options: dict[str, Any]
    ) -> LogitAdjustedHead:
        head = cls(torch.zeros(num_classes, num_features), None, torch.zeros(num_classes), 0.0)
        head.load_state_dict(state_dict)
        return head


def adjusted_predictions(
    features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, log_prior: torch.Tensor, taus: list[float]
) -> torch.Tensor:
    """(T, N) int64: the predicted class of ``W x + b - τ log π`` for each of the T ``taus`` and each row.

    One matrix product per chunk of rows, then a shift and an arg-max per τ on
    that (rows, C) block: no (N, C) logit matrix is held (at 10,000 classes and
    30,000 rows it is 1.2 GB, and a shifted copy per τ was another).

    Args:
        features: (N, d) features (float16 is used in float32, a chunk at a time).
        weight: (C, d) joint weight; bias: (C,) or None; log_prior: (C,) ``log π``.
    """
    shifts = torch.stack([tau * log_prior for tau in taus]) if taus else log_prior[:0]  # (T, C), as tau * prior
    out = torch.empty(len(taus), len(features), dtype=torch.int64)
    rows = chunk_rows(max(len(weight), features.shape[1]))
    shifted = torch.empty(min(rows, len(features)), len(weight), dtype=weight.dtype)  # reused: no page faults
    for start, chunk in float_chunks(features, rows):
        block = F.linear(chunk, weight, bias)  # (B, C)
        for t in range(len(taus)):
            torch.argmax(
                torch.sub(block, shifts[t], out=shifted[: len(block)]), 1, out=out[t, start : start + len(block)]
            )
    return out


def fit(context: FitContext) -> Fitted:
    """τ over ``decouple.logit_adjust`` chosen on validation by ``decouple.select``."""
    weight = context.joint.weight.detach().cpu()
    bias = None if context.joint.bias is None else context.joint.bias.detach().cpu()
    prior = log_prior(context.counts)
    taus = context.config.decouple.logit_adjust.values()

    def predictions(split: str) -> Iterator[tuple[float, torch.Tensor]]:
        return zip(taus, adjusted_predictions(context.features(split).x, weight, bias, prior, taus), strict=True)

    tau, curve = choose_on_validation(context, predictions)
    tau = round(float(tau), 6)
    head = LogitAdjustedHead(weight, bias, prior, tau)
    return Fitted(head, params={"tau": tau}, info={"tau": tau}, record={"logit_adjust_curve": curve})


SPEC = register_method(
    MethodSpec(
        name="logit_adjust",
        summary="post-hoc logit adjustment: logits − τ log prior, τ chosen on validation (Menon et al. 2021)",
        label="Logit adj.",
        color="tab:red",
        fit=fit,
        order=50,
        section="logit_adjust",
        config=TauConfig,
        needs_linear_joint=True,
        reads=("select",),
        sweep=("logit_adjust_curve", r"logit adjustment: $w_j \cdot x + b_j - \tau \log \pi_j$"),
    )
)
