"""cRT, classifier re-training (Kang et al. 2020, Section 4): a fresh linear classifier on the frozen backbone.

Weight and bias are re-initialised and trained with class-balanced sampling
(``decouple.sampler``, the official class-aware one by default) for a few
epochs. ``decouple.trainable=last_stage|all`` answers the paper's other
question, frozen versus fine-tuned representation: the backbone's last stage
(or the whole network) trains too, on images with the stage-1 augmentation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import HeadTrainingConfig, option
from ..models.heads import LinearHead
from . import register_method
from .base import TRAINED_HEAD_KEYS, FitContext, Fitted, MethodSpec, lr_variants


@dataclass
class CRTConfig(HeadTrainingConfig):
    """``decouple.crt``: classifier re-training (official: 10 epochs, batch 512, lr 0.2, cosine, wd 5e-4)."""

    epochs: int = option(10, "cRT epochs (official: 10)")
    weight_decay: float = option(5e-4, "cRT weight decay (official: 5e-4)")


def fresh_linear_head(num_features: int, num_classes: int, seed: int) -> LinearHead:
    """cRT's classifier before training: a linear layer initialised from ``seed`` (the same on every path)."""
    torch.manual_seed(seed)
    return LinearHead(num_features, num_classes)


def fit(context: FitContext) -> Fitted:
    """Train a freshly initialised linear classifier with ``decouple.crt`` (and ``decouple.trainable``)."""
    num_features = context.joint.as_linear().weight.shape[1]
    head = fresh_linear_head(num_features, context.num_classes, context.seed)
    trainable = context.config.decouple.trainable
    fitted = context.train_head(head, context.section("crt"), method="crt", trainable=trainable)
    fitted.info["trainable"] = trainable  # what cRT re-trained: the paper's cRT is the classifier alone
    return fitted


SPEC = register_method(
    MethodSpec(
        name="crt",
        summary="classifier re-training: a fresh linear classifier trained on the frozen features, class-balanced",
        label="cRT",
        color="tab:blue",
        fit=fit,
        order=20,
        section="crt",
        config=CRTConfig,
        in_paper=True,
        show_norms=True,
        variants=lr_variants(fit),
        reads=(*TRAINED_HEAD_KEYS, "trainable"),
    )
)
