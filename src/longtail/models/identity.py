"""The identity backbone (``model.backbone=identity``): for precomputed features, the representation is the data."""

from __future__ import annotations

import torch
from torch import nn


class IdentityBackbone(nn.Module):
    """(N, d) features -> themselves: no parameters, nothing to freeze or train.

    With it stage 1 trains the linear classifier alone (the linear probe) and
    stage 2 needs no backbone pass: the features are the dataset's own tensors
    (:func:`~longtail.pipeline.run_state.split_features`).

    Args:
        num_features: d, the width of the features.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, d) -> (N, d)."""
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def extra_repr(self) -> str:
        return f"num_features={self.num_features}"


def identity(in_channels: int) -> IdentityBackbone:
    """The identity backbone for features of width ``in_channels`` (a feature dataset's item shape is (d,))."""
    return IdentityBackbone(in_channels)
