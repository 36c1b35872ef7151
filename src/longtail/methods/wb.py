"""Weight balancing's second stage (Alshammari et al., "Long-Tailed Recognition via Weight Balancing", CVPR 2022).

On the frozen backbone, the joint classifier (weight and bias, not
re-initialised) is fine-tuned with the class-balanced loss (effective number,
``β``), weight decay, and MaxNorm: every class row ``w_j`` of the weight is
kept inside the ball of radius ``r`` by projected gradient descent. The
radius is the reference's relative one, ``min_j ||w_j|| + thresh * (max_j
||w_j|| - min_j ||w_j||)`` of the joint weights, or an absolute
``decouple.wb.radius``. Weight decay and the radius are chosen on validation
(``decouple.select``) from a small grid, ``weight_decay_grid`` × ``thresh_grid``;
the configured ``weight_decay`` and ``thresh`` are tried first, so a tie keeps
them.

What the reference (ShadeAlsha/LTR-weight-balancing, ``demo2_second-stage-training``
and ``utils/``) does, and where this differs:

- lr 0.01, momentum 0.9, weight decay 0.1, 10 epochs, cosine, batch 64,
  instance-balanced shuffling (the loss does the re-balancing): the defaults
  here, with ``decouple.wb.sampler=instance`` in place of ``decouple.sampler``.
  ``batch_size=auto`` is 64 wherever the data gives 64 steps an epoch at 64
  (4,096 samples and more), smaller below, at least 32
  (:mod:`longtail.engine.head_schedule`).
- It projects once per epoch, after the epoch's last step; here after every
  optimiser step (projected gradient descent proper, as the paper describes
  it): the rows never leave the ball, and the result does not depend on how
  many steps an epoch has. The bias is never projected, as in the reference.
- Its loss is ``CB_loss(..., "softmax", 0.9999, 2.0)``: binary cross-entropy on
  the softmax probabilities, weighted per class; the γ = 2.0 it passes is
  ignored by that ``"softmax"`` branch (only ``"focal"`` reads it). Here the
  class-balanced loss is the weighted softmax cross-entropy (γ = 0, the
  default) or Cao et al.'s weighted focal loss (γ > 0).
- Its stage 1 uses a tuned, larger weight decay (5e-3), which is a stage-1
  setting (``train.weight_decay``, chosen with ``longtail grid --sweep``).
- Its fine-tuning runs the whole network in ``train()`` mode, so the frozen
  backbone's BatchNorm normalises with batch statistics and its running
  statistics drift; its scheduler steps at the start of each epoch; and it keeps
  the epoch with the best per-class accuracy on the set it evaluates, which in
  its demo is the test set. Here the head trains on cached eval-mode features,
  the cosine runs per step, the last epoch is kept, and only the grid point is
  chosen, on validation.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from ..config import Each, HeadTrainingConfig, Interval, OneOf, option
from ..config.schema import DECAY
from ..engine.feature_rows import predicted_classes
from ..engine.maxnorm import MaxNorm, project_rows_, relative_radius
from ..errors import ConfigError
from ..evaluation.metrics import SUMMARY_KEYS
from ..losses import ClassBalancedLoss
from ..models.heads import LinearHead
from ..registry import SAMPLERS
from . import register_method
from .base import TRAINED_HEAD_KEYS, FitContext, Fitted, MethodSpec


@dataclass
class WBConfig(HeadTrainingConfig):
    """``decouple.wb``: weight balancing's stage 2 (reference: 10 epochs, batch 64, lr 0.01, wd 0.1, thresh 0.1)."""

    reference_batch_size: ClassVar[int] = 64

    epochs: int = option(10, "WB fine-tuning epochs (reference: 10)")
    batch_size: int | Literal["auto"] = option(
        "auto", "WB batch size; auto: the reference 64 wherever that gives at least 64 steps an epoch, else less"
    )
    lr: float = option(0.01, "WB peak learning rate, cosine to 0 per step (reference: 0.01)")
    weight_decay: float = option(0.1, "WB weight decay, the grid point tried first (reference: 0.1)")
    weight_decay_grid: list[float] = option(
        [0.001, 0.01, 0.1],
        "WB weight decays chosen among on validation, with weight_decay ([]: weight_decay alone)",
        Each(DECAY),
    )
    thresh: float = option(
        0.1,
        "WB MaxNorm radius relative to the joint weight norms, min + thresh * (max - min), tried first "
        "(reference: 0.1)",
        Interval(0),
    )
    thresh_grid: list[float] = option(
        [0.0, 0.1, 0.5],
        "WB relative radii chosen among on validation, with thresh ([]: thresh alone)",
        Each(Interval(0)),
    )
    radius: float | None = option(
        None,
        "WB absolute MaxNorm radius; set, it replaces thresh and thresh_grid (0: no MaxNorm); null: relative",
        Interval(0),
    )
    beta: float = option(
        0.9999, "WB class-balanced loss: effective-number β (reference: 0.9999)", Interval(0, 1, "left")
    )
    gamma: float = option(
        0.0, "WB class-balanced loss: focal γ (0: weighted cross-entropy, as the reference)", Interval(0)
    )
    sampler: str = option(
        "instance",
        "WB sampling, in place of decouple.sampler (reference: instance; the loss re-balances)",
        OneOf(SAMPLERS),
    )


@dataclass(frozen=True)
class GridPoint:
    """One (weight decay, radius) of the grid; ``thresh`` is None when the radius is absolute."""

    weight_decay: float
    radius: float
    thresh: float | None

    def params(self) -> dict[str, float]:
        """What results.json and ``auto`` record of it."""
        relative = {} if self.thresh is None else {"thresh": self.thresh}
        return {"weight_decay": self.weight_decay, **relative, "radius": round(self.radius, 6)}

    def tag(self, first: bool) -> str:
        """Names the training (TensorBoard, resumable state): ``wb`` for the configured point, else e.g.
        ``wb_wd0.01_t0.3``; file-name safe (digits, letters, ``.``, ``-``, ``_``)."""
        if first:
            return "wb"
        where = f"r{self.radius:g}" if self.thresh is None else f"t{self.thresh:g}"
        return f"wb_wd{self.weight_decay:g}_{where}"


def _first_then_rest(first: float, rest: list[float]) -> list[float]:
    """``first``, then the values of ``rest`` not yet listed, in their order."""
    values = [float(first)]
    values += [float(v) for v in rest if float(v) not in values]
    return values


def grid_points(section: WBConfig, joint_weight: torch.Tensor) -> list[GridPoint]:
    """The grid: weight decays × radii, the configured (weight_decay, thresh or radius) first.

    Args:
        section: ``decouple.wb``.
        joint_weight: (C, d) the joint classifier's weight, which relative radii are measured on.
    """
    decays = _first_then_rest(section.weight_decay, section.weight_decay_grid)
    if section.radius is not None:
        radii = [(float(section.radius), None)]
    else:
        radii = [(relative_radius(joint_weight, t), t) for t in _first_then_rest(section.thresh, section.thresh_grid)]
    return [GridPoint(wd, radius, thresh) for wd in decays for radius, thresh in radii]


def joint_copy(joint: nn.Module) -> LinearHead:
    """A trainable copy of the linear joint classifier (weight and bias), on the CPU."""
    weight = joint.weight.detach()
    head = LinearHead(weight.shape[1], weight.shape[0], bias=joint.bias is not None)
    with torch.no_grad():
        head.weight.copy_(weight)
        if joint.bias is not None:
            head.bias.copy_(joint.bias.detach())
    return head


@torch.no_grad()
def _scores(context: FitContext, head: nn.Module, split: str) -> dict[str, Any]:
    """Accuracies of ``head`` on ``split``'s frozen-backbone features (the head stays where it is)."""
    device = next(head.parameters()).device
    predicted = predicted_classes(head.eval(), context.features(split).x, device=device)
    return context.summary(predicted, split)


def _best(points: list[dict[str, Any]], select: str) -> int:
    """Index of the point with the highest validation ``select`` (None counts as worst); the first on ties."""
    # Rounded: a macro of 83.0 computed as 82.99999999999999 is a tie, not a loss.
    scores = [-math.inf if p["val"][select] is None else round(p["val"][select], 6) for p in points]
    return scores.index(max(scores))


def fit_point(context: FitContext, section: WBConfig, point: GridPoint, first: bool) -> Fitted:
    """Fine-tune a copy of the joint classifier at one grid point: class-balanced loss, MaxNorm after every step."""
    head = joint_copy(context.joint)
    # Start inside the ball too: the constraint then holds even for a training with no step.
    project_rows_(head.weight.data, point.radius)
    return context.train_head(
        head,
        dataclasses.replace(section, weight_decay=point.weight_decay),
        method=point.tag(first),
        criterion=ClassBalancedLoss(context.counts, beta=section.beta, gamma=section.gamma),
        after_step=MaxNorm(head, point.radius),
        sampler=section.sampler,
    )


def fit(context: FitContext) -> Fitted:
    """Every grid point fine-tuned, the best on validation (``decouple.select``) kept; test scored for display."""
    section = context.section("wb")
    points = grid_points(section, context.joint.weight.detach().cpu())
    select = context.config.decouple.select
    fits, curve = [], []
    for index, point in enumerate(points):
        fitted = fit_point(context, section, point, first=index == 0)
        if fitted.backbone is not None and len(points) > 1:
            raise ConfigError(
                "decouple.wb: its validation grid needs the frozen backbone, and decouple.bn=train changes it; "
                "set decouple.wb.weight_decay_grid=[] decouple.wb.thresh_grid=[]"
            )
        fits.append(fitted)
        curve.append({**point.params(), "val": _scores(context, fitted.head, "val")})
    chosen = _best(curve, select)
    # The choice above read val alone; the test scores are for the record (display), as for τ.
    for entry, fitted in zip(curve, fits, strict=True):
        entry["test_display_only"] = _scores(context, fitted.head, "test")
        for split in ("val", "test_display_only"):
            entry[split] = {key: entry[split].get(key) for key in SUMMARY_KEYS}
    best, params = fits[chosen], points[chosen].params()
    best.params.update(params)
    best.info.update({**params, "beta": section.beta, "gamma": section.gamma})
    best.settings["grid_points"] = len(points)
    best.record["wb_grid"] = {"select": f"val {select}", "chosen": {"lr": section.lr, **params}, "points": curve}
    return best


SPEC = register_method(
    MethodSpec(
        name="wb",
        summary="weight balancing's stage 2: the joint classifier fine-tuned with the class-balanced loss and MaxNorm "
        "(Alshammari et al. 2022)",
        label="WB",
        color="tab:olive",
        fit=fit,
        order=60,
        section="wb",
        config=WBConfig,
        needs_linear_joint=True,
        show_norms=True,
        reads=(*TRAINED_HEAD_KEYS, "select"),
        selects=True,
    )
)
