"""MiSLAS's second stage (Zhong et al., "Improving Calibration for Long-Tailed Recognition", CVPR 2021).

The classifier is re-trained with class-balanced sampling (``decouple.sampler``)
and label-aware smoothing: class ``j`` gets smoothing ``ε_j``, from
``eps_head`` for the largest class to ``eps_tail`` for the smallest, along
``shape`` (MiSLAS's default, concave: ``ε_tail + (ε_head - ε_tail) sin(π/2 ·
(n_j - n_min) / (n_max - n_min))``). The rarest classes get the least
smoothing, so their scores are pushed up the most.

What the reference (dvlab-research/MiSLAS, ``train_stage2.py``, ``methods.py``,
``config/*stage2*``) does, and where this differs:

- It fine-tunes the stage-1 classifier (``init=joint``, the default here), at
  ``lr_factor × lr`` (CIFAR-10-LT IF 100: 0.5 × 0.1; CIFAR-100-LT: 0.2 × 0.1;
  ImageNet-LT: 0.05 × 0.1), 10 epochs, per-epoch cosine, class-balanced
  sampler, weight decay 2e-4 (CIFAR) / 5e-4 (ImageNet-LT). ``init=fresh``
  re-initialises it instead, cRT-style.
- It also learns an LWS-like scale per class on the logits, at the full lr.
  A scale is absorbed by ``W`` and ``b`` (``s_j (w_j x + b_j)`` is linear), so
  the head here is the linear classifier alone; what is lost is the scale's own
  learning rate and its own weight decay (it sits in the optimiser with the
  classifier), which shape the training path, not what the head can express.
- It keeps the epoch with the best top-1 on its evaluation set; here the last
  epoch is kept.
- Shift learning (``shift_bn``): the backbone runs in train mode under
  ``no_grad`` during stage 2, so its BatchNorm normalises with batch statistics
  and re-estimates its running statistics on class-balanced batches; no
  BatchNorm parameter is trained (the affine ones stay as stage 1 left them).
  Here ``decouple.las.shift_bn=true`` trains on images with the frozen
  backbone's BatchNorm in train mode (``decouple.bn=train`` for this method
  alone): slower than cached features, and the classifier is saved with its
  re-estimated backbone.
- Smoothing: CIFAR-10-LT IF 100 and ImageNet-LT use ε 0.3 / 0.0 (the defaults
  here), CIFAR-100-LT 0.4 / 0.1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from ..config import Config, HeadTrainingConfig, Interval, option, require
from ..errors import ConfigError
from ..losses import LabelAwareSmoothingLoss
from ..registry import DATASETS
from . import register_method
from .base import TRAINED_HEAD_KEYS, FitContext, Fitted, MethodSpec, lr_variants
from .crt import fresh_linear_head
from .wb import joint_copy


@dataclass
class LASConfig(HeadTrainingConfig):
    """``decouple.las``: MiSLAS's stage 2 (reference CIFAR-10-LT: 10 epochs, batch 128, lr 0.05, wd 2e-4)."""

    reference_batch_size: ClassVar[int] = 128

    epochs: int = option(10, "LAS epochs (reference: 10)")
    batch_size: int | Literal["auto"] = option(
        "auto",
        "LAS batch size; auto: the reference 128 (CIFAR; 256 on ImageNet-LT) wherever that gives at least 64 steps "
        "an epoch, else less",
    )
    lr: float = option(
        0.05, "LAS peak learning rate, cosine to 0 (reference: lr_factor x lr = 0.05 on CIFAR-10-LT IF 100)"
    )
    weight_decay: float = option(5e-4, "LAS weight decay (reference: 2e-4 CIFAR, 5e-4 ImageNet-LT)")
    eps_head: float = option(
        0.3, "label-aware smoothing of the largest class (reference: 0.3; CIFAR-100-LT 0.4)", Interval(0, 1)
    )
    eps_tail: float = option(
        0.0, "label-aware smoothing of the smallest class (reference: 0.0; CIFAR-100-LT 0.1)", Interval(0, 1)
    )
    shape: Literal["concave", "linear", "convex", "exp"] = option(
        "concave", "how the smoothing goes from eps_tail to eps_head with the class size (reference: concave)"
    )
    power: float | None = option(
        None, "shape=exp: the exponent of (n_j - n_min) / (n_max - n_min)", Interval(0, None, "neither")
    )
    init: Literal["joint", "fresh"] = option(
        "joint", "joint: fine-tune the stage-1 classifier (reference); fresh: re-initialise it (cRT-style)"
    )
    shift_bn: bool = option(
        False,
        "shift learning: the frozen backbone's BatchNorm in train mode during LAS (batch statistics, running "
        "statistics re-estimated on class-balanced batches); trains on images, slower (reference: true for "
        "CIFAR-100-LT, ImageNet-LT, Places-LT and iNaturalist 2018, false for CIFAR-10-LT)",
    )

    def check(self, prefix: str) -> None:
        """shape=exp needs its exponent."""
        require(
            self.shape != "exp" or self.power is not None,
            f"{prefix}.power",
            self.power,
            f"a number > 0 with {prefix}.shape=exp",
        )


def fit(context: FitContext) -> Fitted:
    """Train the classifier with label-aware smoothing (``decouple.las``), from the joint one or afresh."""
    section = context.section("las")
    if section.init == "joint":
        head = joint_copy(context.joint)
    else:
        head = fresh_linear_head(context.joint.weight.shape[1], context.num_classes, context.seed)
    criterion = LabelAwareSmoothingLoss(
        context.counts, section.eps_head, section.eps_tail, section.shape, section.power
    )
    bn = "train" if section.shift_bn else None
    fitted = context.train_head(head, section, method="las", criterion=criterion, bn=bn)
    fitted.info.update(
        {"init": section.init, "eps_head": section.eps_head, "eps_tail": section.eps_tail, "shift_bn": section.shift_bn}
    )
    return fitted


_lr_variants = lr_variants(fit)


def check(config: Config) -> None:
    """Shift learning re-estimates the backbone's BatchNorm on images: a run on precomputed features has none
    (it was accepted and did nothing)."""
    if config.decouple.las.shift_bn and DATASETS.get(config.data.name).holds_features:
        raise ConfigError(
            f"decouple.las.shift_bn=true: data.name={config.data.name} holds precomputed features, with no "
            "BatchNorm to re-estimate; set it false"
        )


def check_for_auto(config: Config) -> None:
    """``auto`` compares classifiers on the frozen backbone; shift learning's classifier needs its own
    re-estimated one. Refused before any method is fit (it was refused after every one had been)."""
    if config.decouple.las.shift_bn:
        raise ConfigError(
            "--method auto: compares classifiers on the frozen backbone, and decouple.las.shift_bn=true changes "
            "its BatchNorm statistics; set it false, or fit --method las alone"
        )


def variants(context: FitContext, fitted: Fitted) -> list[Fitted]:
    """``auto``'s candidates: the fit at lr × each ``decouple.auto_lr_factors``; not with shift learning
    (:func:`check_for_auto`)."""
    check_for_auto(context.config)
    return _lr_variants(context, fitted)


SPEC = register_method(
    MethodSpec(
        name="las",
        summary="MiSLAS's stage 2: the classifier fine-tuned with label-aware smoothing (Zhong et al. 2021)",
        label="LAS",
        color="tab:pink",
        fit=fit,
        order=70,
        section="las",
        config=LASConfig,
        needs_linear_joint=True,
        show_norms=True,
        variants=variants,
        check=check,
        check_for_auto=check_for_auto,
        reads=TRAINED_HEAD_KEYS,
    )
)
