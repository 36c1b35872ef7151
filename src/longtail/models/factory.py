"""``create_model``: a backbone by name with a fresh classifier head, as timm's factory does."""

from __future__ import annotations

import torch

from ..registry import LOSSES
from .backbones import create_backbone
from .classifier import Classifier
from .heads import create_head


def joint_head_kind(loss: str) -> str:
    """The stage-1 head a loss trains, as its spec says (``cosine`` for LDAM's cosine logits, else ``linear``)."""
    return LOSSES.get(loss).head


def create_model(backbone: str, in_channels: int, num_classes: int, head: str = "linear") -> Classifier:
    """Backbone ``backbone`` with a ``linear`` or ``cosine`` classifier for ``num_classes``.

    Parameters are in channels-last layout, which runs convolutions about twice
    as fast on CPU (and suits tensor cores on GPU).
    """
    features = create_backbone(backbone, in_channels=in_channels)
    model = Classifier(features, create_head(head, features.num_features, num_classes))
    return model.to(memory_format=torch.channels_last)
