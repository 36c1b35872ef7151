"""τ-normalisation (Kang et al. 2020, Section 4): ``w_j / ||w_j||^τ`` on the joint classifier, τ chosen on val.

As in the official script, the bias is dropped and τ is swept over
``decouple.tau`` (default ``linspace(0, 2, 21)``). Every τ is scored from one
matrix product (:func:`~longtail.methods.norm_sweep.tau_sweep_predictions`, the
fast form of :func:`tau_sweep`), on validation to choose and on test for display
only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..config import TauConfig
from ..models.heads import LinearForm, register_head, weight_norms
from . import register_method
from .base import FitContext, Fitted, MethodSpec, choose_on_validation
from .norm_sweep import tau_sweep_predictions


def tau_normalize(weight: torch.Tensor, tau: float) -> torch.Tensor:
    """``w_j / ||w_j||**tau`` for each row ``w_j`` of a (C, d) weight; τ = 0 leaves it unchanged."""
    return weight / weight_norms(weight).pow(tau).unsqueeze(1)


def tau_sweep(
    raw_logits: torch.Tensor, norms: torch.Tensor, taus: Sequence[float]
) -> Iterator[tuple[float, torch.Tensor]]:
    """Logits of the τ-normalised classifier for every τ from one matrix product.

    Since ``x · (w_j / ||w_j||^τ) = (x · w_j) * ||w_j||^-τ``, the logits for any τ
    are the bias-free logits rescaled per class.

    Args:
        raw_logits: (N, C) ``x @ W.T``, without bias.
        norms: (C,) ``||w_j||``.
        taus: the τ values.

    Yields:
        ``(tau, logits (N, C))`` per τ.
    """
    for tau in taus:
        yield float(tau), raw_logits * norms.pow(-float(tau))


@register_head("tau_norm")
class TauNormHead(nn.Module):
    """τ-normalised classifier: ``x @ (W / ||W||^τ).T``, bias dropped as in the official code.

    Args:
        weight: (C, d) weight of the trained joint classifier (copied, frozen).
        tau: the exponent, in [0, 2] in the paper.
    """

    def __init__(self, weight: torch.Tensor, tau: float) -> None:
        super().__init__()
        self.register_buffer("weight", weight.detach().clone())
        self.register_buffer("tau", torch.tensor(float(tau)))

    @classmethod
    def from_linear(cls, linear: nn.Linear, tau: float) -> TauNormHead:
        """Build from a trained linear classifier."""
        return cls(linear.weight, tau)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(N, d) -> (N, C)."""
        return F.linear(features, tau_normalize(self.weight, float(self.tau)))

    def as_linear(self) -> LinearForm:
        return LinearForm(tau_normalize(self.weight.detach(), float(self.tau)), None)

    def options(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_state(
        cls, num_features: int, num_classes: int, state_dict: dict[str, torch.Tensor], options: dict[str, Any]
    ) -> TauNormHead:
        head = cls(torch.zeros(num_classes, num_features), 0.0)
        head.load_state_dict(state_dict)
        return head


def fit(context: FitContext) -> Fitted:
    """τ over ``decouple.tau`` chosen on validation by ``decouple.select``; the joint weights τ-normalised."""
    weight = context.joint.weight.detach().cpu()
    taus = context.config.decouple.tau.values()

    def predictions(split: str) -> Iterator[tuple[float, torch.Tensor]]:
        return zip(taus, tau_sweep_predictions(context.features(split).x, weight, taus), strict=True)

    tau, curve = choose_on_validation(context, predictions)
    tau = round(float(tau), 6)
    return Fitted(TauNormHead(weight, tau), params={"tau": tau}, info={"tau": tau}, record={"tau_curve": curve})


SPEC = register_method(
    MethodSpec(
        name="tau_norm",
        summary="τ-normalised classifier: each class's weights divided by their norm to the power τ (bias dropped), "
        "τ chosen on validation",
        label="τ-norm",
        color="tab:orange",
        fit=fit,
        order=30,
        section="tau",
        config=TauConfig,
        needs_linear_joint=True,
        in_paper=True,
        show_norms=True,
        reads=("select",),
        sweep=("tau_curve", r"τ-norm: weights $w_j\,/\,\Vert w_j\Vert^{\tau}$"),
    )
)
