"""Classifier heads: modules mapping (N, d) features to (N, C) logits, and what every head offers.

Stage 2 swaps heads on a frozen backbone. Every head class is registered under
a ``kind`` (:func:`register_head`) and offers:

- ``as_linear()``: the head as one linear layer on (optionally centred and
  L2-normalised) features, a :class:`LinearForm`. Export folds heads with it,
  the report draws weight norms from it; no code needs to know head types.
- ``options()`` and ``from_state(num_features, num_classes, state_dict, options)``:
  what, beside its state dict, rebuilds it from a classifier file
  (:mod:`longtail.models.serialize`).

The heads of the stage-2 methods live with their method in :mod:`longtail.methods`;
here are the two stage-1 classifiers: :class:`LinearHead` (joint, and cRT's
re-trained one) and :class:`CosineHead` (what LDAM expects).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn
from torch.nn import functional as F

from ..registry import HEADS

_NORM_EPS = 1e-12  # keeps an all-zero weight row from dividing by zero

H = TypeVar("H", bound=type)


def register_head(kind: str) -> Callable[[H], H]:
    """Class decorator: classifier files name this head ``kind`` (:data:`~longtail.registry.HEADS`)."""

    def add(cls: H) -> H:
        cls.kind = kind  # type: ignore[attr-defined]
        HEADS.register(kind, cls)
        return cls

    return add


@dataclass
class LinearForm:
    """A head written as one linear layer: ``logits = W z + b`` on ``z``, the features after two optional steps.

    ``z = x``, minus ``center`` when given, then L2-normalised when
    ``l2_normalize``. With ``squared_distance`` the head's logits are
    ``W z + b - ||z||²``: with ``W = 2c`` and ``b = -||c||²`` that is
    ``-||z - c||²``, NCM's score (``||z||²`` is one number per row, so it
    changes logits but not predictions or softmax probabilities).

    Attributes:
        weight: (C, d).
        bias: (C,) or None.
        center: (d,) or None.
    """

    weight: torch.Tensor
    bias: torch.Tensor | None = None
    center: torch.Tensor | None = None
    l2_normalize: bool = False
    squared_distance: bool = False

    def row_norms(self) -> torch.Tensor:
        """(C,) L2 norm of each class's row of ``weight``: the paper's weight norms."""
        return weight_norms(self.weight.detach())


def weight_norms(weight: torch.Tensor) -> torch.Tensor:
    """(C, d) weight -> (C,) L2 norm of each class's row (at least 1e-12)."""
    return weight.norm(dim=1).clamp_min(_NORM_EPS)


def frozen_copy(tensor: torch.Tensor | None) -> torch.Tensor | None:
    """A detached copy (for buffers of heads built from another head's weights)."""
    return None if tensor is None else tensor.detach().clone()


@register_head("linear")
class LinearHead(nn.Linear):
    """The joint / cRT classifier: ``W x + b``, PyTorch's linear layer with its default initialisation."""

    def as_linear(self) -> LinearForm:
        return LinearForm(self.weight.detach(), frozen_copy(self.bias))

    def options(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_state(
        cls, num_features: int, num_classes: int, state_dict: dict[str, torch.Tensor], options: dict[str, Any]
    ) -> LinearHead:
        head = cls(num_features, num_classes, bias="bias" in state_dict)
        head.load_state_dict(state_dict)
        return head


@register_head("cosine")
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

    def as_linear(self) -> LinearForm:
        return LinearForm(F.normalize(self.weight.detach(), dim=1), None, l2_normalize=True)

    def options(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_state(
        cls, num_features: int, num_classes: int, state_dict: dict[str, torch.Tensor], options: dict[str, Any]
    ) -> CosineHead:
        head = cls(num_features, num_classes)
        head.load_state_dict(state_dict)
        return head


def create_head(kind: str, num_features: int, num_classes: int) -> nn.Module:
    """A fresh stage-1 classifier: ``linear`` or ``cosine``."""
    if kind == "cosine":
        return CosineHead(num_features, num_classes)
    return LinearHead(num_features, num_classes)
