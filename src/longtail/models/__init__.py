"""Models: backbones, classifier heads, nearest-class-mean."""

from .backbones import BACKBONES, BasicBlock, CifarResNet, create_backbone
from .classifier import Classifier
from .heads import (
    CosineHead,
    LogitAdjustedHead,
    LWSHead,
    TauNormHead,
    linear_head,
    tau_normalize,
    tau_sweep,
    tau_sweep_predictions,
    weight_norms,
)
from .ncm import NCM_METRICS, NCMClassifier, NCMHead, ncm_scores

__all__ = [
    "BACKBONES",
    "NCM_METRICS",
    "BasicBlock",
    "Classifier",
    "CifarResNet",
    "CosineHead",
    "LogitAdjustedHead",
    "LWSHead",
    "NCMClassifier",
    "NCMHead",
    "TauNormHead",
    "create_backbone",
    "linear_head",
    "ncm_scores",
    "tau_normalize",
    "tau_sweep",
    "tau_sweep_predictions",
    "weight_norms",
]
