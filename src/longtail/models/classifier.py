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
        self._last_stage_trainable = False
        self._frozen_batch_stats = False
        # Set on a network that a stage-2 cRT fine-tuned: what it re-trained besides the head.
        self.fine_tuned: str | None = None

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

    def freeze_backbone(self, keep_last_stage: bool = False, batch_stats: bool = False) -> Classifier:
        """Stop gradients to the backbone and keep it in eval mode (BatchNorm statistics frozen).

        What stage 2 needs: after this, ``train()`` on the classifier trains the
        head only, or the head and the backbone's ``last_stage`` with
        ``keep_last_stage`` (that stage then follows ``train()``/``eval()``).
        With ``batch_stats`` the frozen backbone still follows ``train()``: its
        BatchNorm normalises with batch statistics and its running statistics
        drift, as in the official stage 2 (``decouple.bn=train``).
        """
        self.backbone.requires_grad_(False)
        self._backbone_frozen = True
        self._frozen_batch_stats = batch_stats
        self._last_stage_trainable = keep_last_stage
        if keep_last_stage:
            self.backbone.last_stage.requires_grad_(True)
        return self.train(self.training)

    def unfreeze_backbone(self) -> Classifier:
        """Undo :meth:`freeze_backbone`: the whole network trains again."""
        self.backbone.requires_grad_(True)
        self._backbone_frozen = False
        self._frozen_batch_stats = False
        self._last_stage_trainable = False
        return self.train(self.training)

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        if self._backbone_frozen:
            self.backbone.train(mode and self._frozen_batch_stats)
            if self._last_stage_trainable:
                self.backbone.last_stage.train(mode)
        return self
