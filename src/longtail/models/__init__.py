"""Models: backbones, the stage-1 classifier heads, backbone + head. (Stage-2 heads: :mod:`longtail.methods`.)"""

from .backbones import BACKBONES, BasicBlock, CifarResNet, create_backbone
from .classifier import Classifier
from .factory import create_model
from .heads import HEADS, CosineHead, LinearForm, LinearHead, register_head, weight_norms

__all__ = [
    "BACKBONES",
    "HEADS",
    "BasicBlock",
    "Classifier",
    "CifarResNet",
    "CosineHead",
    "LinearForm",
    "LinearHead",
    "create_backbone",
    "create_model",
    "register_head",
    "weight_norms",
]
