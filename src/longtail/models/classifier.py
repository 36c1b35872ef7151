"""Backbone + head as one module."""

from __future__ import annotations

import torch
from torch import nn


class Classifier(nn.Module):
    """``head(backbone.forward_features(x))``: images (N, C, H, W) -> logits (N, num_classes).

    The head is swappable (:meth:`reset_classifier`), which is what cRT, τ-norm
    and LWS do on a frozen backbone.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self._backbone_frozen = False

    @property
    def num_features(self) -> int:
        """Width of the features the head receives."""
        return self.backbone.num_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, num_features)."""
        return self.backbone.forward_features(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """(N, num_features) -> (N, num_classes)."""
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, head: nn.Module) -> None:
        """Replace the head."""
        self.head = head

    def freeze_backbone(self) -> Classifier:
        """Stop gradients to the backbone and keep it in eval mode (BatchNorm statistics frozen).

        What stage 2 needs: after this, ``train()`` on the classifier trains the head only.
        """
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        self._backbone_frozen = True
        return self

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        if self._backbone_frozen:
            self.backbone.eval()
        return self
