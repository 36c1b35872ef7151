"""Classifier heads: modules mapping (N, d) features to (N, C) logits.

Stage 2 swaps these on a frozen backbone: a fresh ``nn.Linear`` for cRT,
:class:`TauNormHead` for τ-normalisation, :class:`LWSHead` for learnable
weight scaling, :class:`LogitAdjustedHead` for post-hoc logit adjustment.
:class:`CosineHead` is the stage-1 classifier that LDAM expects.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn
from torch.nn import functional as F

_NORM_EPS = 1e-12  # keeps an all-zero weight row from dividing by zero


def linear_head(num_features: int, num_classes: int) -> nn.Linear:
    """The joint / cRT classifier: ``W x + b`` with PyTorch's default initialisation."""
    return nn.Linear(num_features, num_classes)


def weight_norms(weight: torch.Tensor) -> torch.Tensor:
    """(C, d) weight -> (C,) L2 norm of each class's row."""
    return weight.norm(dim=1).clamp_min(_NORM_EPS)


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


class LWSHead(nn.Module):
    """Learnable weight scaling: ``(W x + b) * s`` with W, b frozen and one scale ``s_j`` per class.

    As in the official code the bias is scaled too. ``scales`` (C,) start at 1
    and are the only parameter.

    Args:
        weight: (C, d) weight of the trained joint classifier (copied, frozen).
        bias: (C,) its bias, or None.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("weight", weight.detach().clone())
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.scales = nn.Parameter(torch.ones(weight.shape[0], dtype=weight.dtype, device=weight.device))

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> LWSHead:
        """Build from a trained linear classifier."""
        return cls(linear.weight, linear.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(N, d) -> (N, C)."""
        return F.linear(features, self.weight, self.bias) * self.scales


class CosineHead(nn.Module):
    """Cosine classifier: ``cos(x, w_j)`` per class, features and weights L2-normalised, no bias.

    Logits lie in [-1, 1]; losses that expect them (LDAM, Cao et al. 2019)
    apply their own scale. Initialised like the ``NormedLinear`` of LDAM-DRW
    (uniform rows renormalised).

    Args:
        num_features: d.
        num_classes: C.
    """

    def __init__(self, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, num_features).uniform_(-1, 1).renorm_(2, 0, 1e-5).mul_(1e5))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(N, d) -> (N, C) cosine similarities."""
        return F.linear(F.normalize(features, dim=1), F.normalize(self.weight, dim=1))


class LogitAdjustedHead(nn.Module):
    """Post-hoc logit adjustment (Menon et al. 2021): ``W x + b - τ log π`` on the frozen joint classifier.

    The same as a linear layer whose bias is ``b - τ log π``, which is how it
    can be folded for export.

    Args:
        weight: (C, d) weight of the trained joint classifier (copied, frozen).
        bias: (C,) its bias, or None.
        log_prior: (C,) ``log π_j`` of the training classes.
        tau: the strength τ (0: the joint classifier).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, log_prior: torch.Tensor, tau: float) -> None:
        super().__init__()
        self.register_buffer("weight", weight.detach().clone())
        self.register_buffer("bias", torch.zeros(weight.shape[0]) if bias is None else bias.detach().clone())
        self.register_buffer("log_prior", log_prior.detach().clone().to(weight.dtype))
        self.register_buffer("tau", torch.tensor(float(tau)))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(N, d) -> (N, C)."""
        return F.linear(features, self.weight, self.bias - self.tau * self.log_prior)
