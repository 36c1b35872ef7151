"""LDAM with deferred re-weighting (Cao et al., "Learning Imbalanced Datasets with Label-Distribution-Aware
Margin Loss", NeurIPS 2019). Its margins live on cosine logits: the run trains a cosine classifier."""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import torch
from torch.nn import functional as F

from ..config import Config, Interval, option, require
from ..errors import ConfigError
from .base import (
    CountsLike,
    Loss,
    LossSpec,
    check_inputs,
    check_number,
    class_balanced_weights,
    ldam_margins,
    register_loss,
    weighted_mean,
)


class LDAMLoss(Loss):
    """Label-distribution-aware margin loss with optional deferred re-weighting (Cao et al. 2019).

    ``loss = CE(scale * (z - m_y e_y), y)``: the per-class margin ``m_j ∝ n_j^(-1/4)``
    (largest = ``max_margin``) is subtracted from the true-class logit only.

    LDAM expects cosine logits in [-1, 1], i.e. a normalised classifier
    (``cos(w_j, x)``), as in Cao et al.; that is why it multiplies by ``scale``.
    With an ordinary linear head the logits are unbounded and the margins lose
    their meaning.

    DRW: for epochs ``< drw_epoch`` the loss is unweighted; from ``drw_epoch`` on
    it is weighted by :func:`class_balanced_weights` ``(class_counts, beta)``, with
    the mean ``Σ w_y l / Σ w_y``. Call :meth:`set_epoch` at the start of every
    epoch (also after resuming); ``drw_epoch=None`` never re-weights.

    Args:
        class_counts: (C,) images per class.
        max_margin: the largest margin, > 0 (0.5 in Cao et al.).
        scale: logit scale, > 0 (30 in Cao et al.).
        drw_epoch: 0-based epoch from which DRW is on, or None.
        beta: class-balanced β for DRW, in [0, 1).
    """

    def __init__(
        self,
        class_counts: CountsLike,
        max_margin: float = 0.5,
        scale: float = 30.0,
        drw_epoch: int | None = None,
        beta: float = 0.9999,
    ) -> None:
        super().__init__()
        self.scale = check_number("scale", scale, isinstance(scale, Real) and scale > 0, "a number > 0")
        if drw_epoch is not None and (isinstance(drw_epoch, bool) or not isinstance(drw_epoch, int) or drw_epoch < 0):
            raise ConfigError(f"drw_epoch={drw_epoch!r}: expected an integer >= 0 or None")
        self.register_buffer("margins", ldam_margins(class_counts, max_margin))
        self.register_buffer("drw_weights", class_balanced_weights(class_counts, beta))
        self.num_classes = self.margins.numel()
        self.max_margin = float(max_margin)
        self.beta = float(beta)
        self.drw_epoch = drw_epoch
        self.epoch = 0

    @property
    def drw_active(self) -> bool:
        """Whether the current epoch is re-weighted."""
        return self.drw_epoch is not None and self.epoch >= self.drw_epoch

    def set_epoch(self, epoch: int) -> None:
        """Set the 0-based epoch; DRW is on when ``epoch >= drw_epoch``."""
        if isinstance(epoch, bool) or not isinstance(epoch, Integral) or epoch < 0:
            raise ValueError(f"epoch={epoch!r}: expected an integer >= 0")
        self.epoch = int(epoch)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(N, C) cosine logits in [-1, 1], (N,) int64 -> scalar."""
        logits = check_inputs(logits, targets, self.num_classes)
        margin = self.margins.to(logits.dtype)[targets]
        adjusted = logits.scatter_add(1, targets.unsqueeze(1), -margin.unsqueeze(1))
        losses = F.cross_entropy(self.scale * adjusted, targets, reduction="none")
        return weighted_mean(losses, targets, self.drw_weights if self.drw_active else None)


@dataclass
class LDAMConfig:
    """train.ldam_drw: margins, scale, and when deferred re-weighting starts."""

    max_margin: float = option(0.5, "margin of the rarest class (margins ∝ n_j^-1/4)", Interval(0, None, "neither"))
    scale: float = option(30.0, "scale s applied to the cosine logits", Interval(0, None, "neither"))
    drw_epoch: int | None = option(
        None,
        "epoch (from 0) at which re-weighting starts; null: 80% of train.epochs (160 of 200)",
        Interval(0, integer=True),
    )
    beta: float = option(0.9999, "β of the effective number behind the DRW weights", Interval(0, 1, "left"))


def drw_epoch(section: Any, epochs: int) -> int:
    """The epoch DRW starts: ``drw_epoch``, or 80 % of the training epochs (Cao et al.'s 160 of 200)."""
    return section.drw_epoch if section.drw_epoch is not None else int(0.8 * epochs)


def create(counts: torch.Tensor, section: Any, epochs: int) -> Loss:
    return LDAMLoss(
        counts,
        max_margin=section.max_margin,
        scale=section.scale,
        drw_epoch=drw_epoch(section, epochs),
        beta=section.beta,
    )


def check(config: Config) -> None:
    """DRW starts within the training; MaxNorm would constrain nothing on a cosine classifier."""
    t = config.train
    within = t.ldam_drw.drw_epoch is None or t.ldam_drw.drw_epoch < t.epochs
    require(within, "train.ldam_drw.drw_epoch", t.ldam_drw.drw_epoch, "null or an integer in [0, train.epochs)")
    # A cosine classifier's logits ignore its row norms: a radius would constrain nothing (and only rescale
    # its gradients), so ask for a linear classifier instead of silently doing nothing.
    expected = "0 with train.loss=ldam_drw (its cosine classifier's rows are normalised)"
    require(t.maxnorm == 0, "train.maxnorm", t.maxnorm, expected)


SPEC = register_loss(
    LossSpec(
        name="ldam_drw",
        label="LDAM-DRW",
        summary="margins ∝ n_j^(-1/4) on cosine logits scaled by s, re-weighted by effective number from "
        "drw_epoch (Cao et al. 2019); trains a cosine classifier",
        create=create,
        config=LDAMConfig,
        head="cosine",
        check=check,
        renamed={"ldam_max_margin": "max_margin", "ldam_scale": "scale", "drw_epoch": "drw_epoch", "cb_beta": "beta"},
    )
)
