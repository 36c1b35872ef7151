"""Label-aware smoothing (Zhong et al., "Improving Calibration for Long-Tailed Recognition", CVPR 2021,
MiSLAS): cross-entropy smoothed per class, more for the large classes. LAS's stage-2 loss
(:mod:`longtail.methods.las`), not a stage-1 loss (it registers nothing)."""

from __future__ import annotations

import math
from numbers import Real

import torch
from torch.nn import functional as F

from ..errors import ConfigError
from .base import CountsLike, Loss, as_counts, batch_mean, check_inputs, check_number

LABEL_AWARE_SHAPES = ("concave", "linear", "convex", "exp")


def label_aware_epsilons(
    class_counts: CountsLike,
    eps_head: float,
    eps_tail: float,
    shape: str = "concave",
    power: float | None = None,
) -> torch.Tensor:
    """Per-class smoothing of label-aware smoothing (Zhong et al., "Improving Calibration for
    Long-Tailed Recognition", CVPR 2021, MiSLAS): ``eps_head`` for the largest class, ``eps_tail``
    for the smallest, in between by a function of ``t_j = (n_j - n_min) / (n_max - n_min)``.

    As in MiSLAS's ``LabelAwareSmoothing``:

    - ``concave``: ``eps_tail + (eps_head - eps_tail) * sin(π t / 2)`` (their default);
    - ``linear``: ``eps_tail + (eps_head - eps_tail) * t``;
    - ``convex``: ``eps_head + (eps_head - eps_tail) * sin(3π/2 + π t / 2)``, i.e.
      ``eps_tail + (eps_head - eps_tail) * (1 - cos(π t / 2))``;
    - ``exp``: ``eps_tail + (eps_head - eps_tail) * t ** power``.

    When every class has the same count (MiSLAS would divide by zero) every class
    is the largest one and gets ``eps_head``: a balanced set is smoothed uniformly.

    Args:
        class_counts: (C,) training images per class.
        eps_head, eps_tail: smoothing of the largest and the smallest class, each in [0, 1].
        shape: one of :data:`LABEL_AWARE_SHAPES`.
        power: the exponent of ``exp`` (> 0), unused otherwise.

    Returns:
        (C,) float32 smoothing per class.
    """
    for name, value in (("eps_head", eps_head), ("eps_tail", eps_tail)):
        check_number(name, value, isinstance(value, Real) and 0 <= value <= 1, "a number in [0, 1]")
    if shape not in LABEL_AWARE_SHAPES:
        raise ConfigError(f"shape={shape!r}: expected one of {', '.join(LABEL_AWARE_SHAPES)}")
    counts = as_counts(class_counts)
    spread = counts.max() - counts.min()
    if spread == 0:
        return torch.full_like(counts, float(eps_head)).float()
    t = (counts - counts.min()) / spread  # (C,) in [0, 1]: 1 for the largest class, 0 for the smallest
    if shape == "concave":
        curve = torch.sin(t * (math.pi / 2))
    elif shape == "linear":
        curve = t
    elif shape == "convex":
        curve = 1.0 - torch.cos(t * (math.pi / 2))
    else:
        power = check_number("power", power, isinstance(power, Real) and power > 0, "a number > 0 (shape='exp')")
        curve = t.pow(power)
    return (eps_tail + (eps_head - eps_tail) * curve).float()


class LabelAwareSmoothingLoss(Loss):
    """Label-aware smoothing (MiSLAS): cross-entropy smoothed per sample by its class's ``ε_y``.

    ``loss_i = (1 - ε_{y_i}) * (-log p_{y_i}) + ε_{y_i} * mean_k(-log p_k)``, mean over
    the batch (MiSLAS's form: the smoothed mass ε is spread over all C classes,
    the true one included). ``ε`` comes from :func:`label_aware_epsilons`.

    Args:
        class_counts: (C,) training images per class.
        eps_head, eps_tail, shape, power: as in :func:`label_aware_epsilons`
            (MiSLAS's CIFAR-100-LT IF 100 setting: 0.4, 0.1, concave).
    """

    def __init__(
        self,
        class_counts: CountsLike,
        eps_head: float,
        eps_tail: float,
        shape: str = "concave",
        power: float | None = None,
    ) -> None:
        super().__init__()
        self.register_buffer("epsilons", label_aware_epsilons(class_counts, eps_head, eps_tail, shape, power))
        self.num_classes = self.epsilons.numel()
        self.eps_head, self.eps_tail, self.shape = float(eps_head), float(eps_tail), shape

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(N, C) float, (N,) int64 -> scalar."""
        logits = check_inputs(logits, targets, self.num_classes)
        log_probs = F.log_softmax(logits, dim=1)
        nll = -log_probs.gather(1, targets.unsqueeze(1)).squeeze(1)  # (N,)
        uniform = -log_probs.mean(dim=1)  # (N,)
        eps = self.epsilons.to(log_probs.dtype)[targets]
        return batch_mean((1.0 - eps) * nll + eps * uniform)
