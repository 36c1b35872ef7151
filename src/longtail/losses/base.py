"""What every loss shares: the loss protocol, its spec, and the per-class constants several losses use.

Every loss is an ``nn.Module`` mapping ``(logits (N, C) float, targets (N,) int64)``
to a scalar mean loss, and has ``set_epoch(epoch)`` (a no-op unless the loss has
a schedule) so a training loop can call it uniformly. Per-class constants
(weights, margins, log priors) are buffers, so ``.to(device)`` moves them.

Conventions:

- Weighted losses reduce like ``F.cross_entropy(..., weight=w)``:
  ``sum_i w_{y_i} l_i / sum_i w_{y_i}``, except the class-balanced focal loss
  (γ > 0), a plain mean over the batch as in Cao et al.'s code. A batch whose
  targets all have weight 0 gives loss 0 (and zero gradient) instead of NaN, and
  so does an empty batch, for every loss.
- A class with no training images gets class-balanced weight 0, the largest LDAM
  margin, and the log prior of ``ZERO_COUNT`` images (finite, very negative); see
  :func:`log_prior`.
- Half-precision logits are upcast to float32 inside the losses.

A loss is one file of this package: its ``nn.Module``, its config section (a
dataclass, ``train.<name>.*``) and a :class:`LossSpec` registered with
:func:`register_loss` (see :mod:`longtail.losses`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from numbers import Real
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import Config, register_component_sections, unregister_component_sections
from ..errors import ConfigError
from ..registry import LOSSES

ZERO_COUNT = 1e-6
"""The count :func:`log_prior` gives a class with no images: log π stays finite (≈ -13.8 - log Σn)."""

CountsLike = Sequence[int] | np.ndarray | torch.Tensor


# --------------------------------------------------------------------------- validation


def check_number(name: str, value: Any, ok: bool | None, expected: str) -> float:
    """``value`` as a float if it is a finite real number and ``ok``; a one-line ConfigError otherwise."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or not ok:
        raise ConfigError(f"{name}={value!r}: expected {expected}")
    return float(value)


def check_gamma(gamma: Any) -> float:
    return check_number("gamma", gamma, isinstance(gamma, Real) and gamma >= 0, "a number >= 0")


def check_beta(beta: Any) -> float:
    return check_number("beta", beta, isinstance(beta, Real) and 0 <= beta < 1, "a number in [0, 1)")


def as_counts(class_counts: CountsLike) -> torch.Tensor:
    """Validated class counts as a (C,) float64 tensor.

    Raises:
        ConfigError: empty, not one-dimensional, non-finite or negative counts, or all counts 0.
    """
    if isinstance(class_counts, torch.Tensor):
        class_counts = class_counts.detach().cpu().numpy()
    try:
        counts = torch.as_tensor(np.asarray(class_counts, dtype=np.float64))
    except (TypeError, ValueError):
        raise ConfigError(
            f"class_counts={class_counts!r}: expected a sequence of numbers of images per class"
        ) from None
    if counts.ndim != 1 or counts.numel() == 0:
        raise ConfigError(f"class_counts: expected a non-empty 1-D sequence, got shape {tuple(counts.shape)}")
    bad = (~torch.isfinite(counts)) | (counts < 0)
    if bad.any():
        j = int(bad.nonzero()[0, 0])
        raise ConfigError(f"class_counts: expected counts >= 0, got {counts[j].item():g} for class {j}")
    if not (counts > 0).any():
        raise ConfigError("class_counts: expected at least one class with images, all counts are 0")
    return counts


def check_inputs(logits: torch.Tensor, targets: torch.Tensor, num_classes: int | None) -> torch.Tensor:
    """Type and shape checks (host-side, no device sync); returns the logits upcast from half precision."""
    if not isinstance(logits, torch.Tensor) or not isinstance(targets, torch.Tensor):
        raise TypeError(
            f"expected logits and targets as tensors, got {type(logits).__name__} and {type(targets).__name__}"
        )
    # Integer logits would run through some losses with their float constants (LDAM's margins) cast to integers.
    if not logits.is_floating_point():
        raise TypeError(f"logits: expected a floating-point tensor, got {logits.dtype}")
    if targets.dtype != torch.int64:
        raise TypeError(f"targets: expected int64 class indices, got {targets.dtype}")
    if logits.ndim != 2 or targets.ndim != 1 or logits.shape[0] != targets.shape[0]:
        raise ValueError(
            f"expected logits (N, C) and targets (N,), got {tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    if num_classes is not None and logits.shape[1] != num_classes:
        raise ValueError(f"logits have {logits.shape[1]} classes, the loss was built for {num_classes}")
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return logits


# --------------------------------------------------------------------------- per-class constants


def class_balanced_weights(class_counts: CountsLike, beta: float) -> torch.Tensor:
    """Class-balanced weights of Cui et al. (2019): ``w_j ∝ 1 / E_{n_j}``, summing to C.

    ``E_n = (1 - β^n) / (1 - β)`` is the effective number of samples. β = 0 gives
    equal weights; β → 1 approaches inverse class frequency. A class with 0
    images gets weight 0 and the others sum to C.

    Args:
        class_counts: (C,) images per class.
        beta: in [0, 1).

    Returns:
        (C,) float32 weights.
    """
    beta = check_beta(beta)
    counts = as_counts(class_counts)
    present = counts > 0
    # 1 - β^n computed as -expm1(n log β), exact for β near 1; log 0 = -inf gives 1 for n > 0.
    log_beta = math.log(beta) if beta > 0 else -math.inf
    one_minus_pow = -torch.expm1(counts[present] * log_beta)
    weights = torch.zeros_like(counts)
    weights[present] = (1.0 - beta) / one_minus_pow  # 1 / E_n
    weights *= counts.numel() / weights.sum()
    return weights.float()


def ldam_margins(class_counts: CountsLike, max_margin: float) -> torch.Tensor:
    """LDAM margins of Cao et al. (2019): ``m_j ∝ n_j^(-1/4)``, the largest equal to ``max_margin``.

    A class with 0 images gets ``max_margin`` (it is never a target in training).

    Returns:
        (C,) float32 margins.
    """
    max_margin = check_number("max_margin", max_margin, isinstance(max_margin, Real) and max_margin > 0, "a number > 0")
    counts = as_counts(class_counts)
    smallest = counts[counts > 0].min()
    ratio = (smallest / counts.clamp_min(smallest)).pow(0.25)  # 1 for the rarest class (and empty ones)
    return (max_margin * ratio).float()


def log_prior(class_counts: CountsLike) -> torch.Tensor:
    """Log class prior ``log π_j`` with ``π_j = n_j / Σ_i n_i``.

    A class with 0 images is given ``ZERO_COUNT`` (1e-6) images, so its log prior
    is finite and about 13.8 below that of a one-image class: adding it to logits
    (logit-adjusted loss) leaves that class out of the softmax in practice. For
    post-hoc adjustment ``logits - τ log π`` it becomes a large *boost*; mask
    classes without images there if they must never be predicted.

    Returns:
        (C,) float32 tensor.
    """
    counts = as_counts(class_counts)
    return (counts.clamp_min(ZERO_COUNT) / counts.sum()).log().float()


# --------------------------------------------------------------------------- shared math


def batch_mean(losses: torch.Tensor) -> torch.Tensor:
    """(N,) per-sample losses -> scalar mean; 0 (with a zero gradient) for an empty batch, not the NaN of an
    empty mean: the same as a batch whose targets all have weight 0."""
    return losses.mean() if losses.numel() else losses.sum()


def weighted_mean(losses: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """(N,) per-sample losses -> scalar: plain mean, or ``Σ w_y l / Σ w_y`` (0 when ``Σ w_y = 0``)."""
    if weight is None:
        return batch_mean(losses)
    w = weight.to(losses.dtype)[targets]
    total = w.sum()
    return torch.where(total > 0, (w * losses).sum() / total.clamp_min(torch.finfo(w.dtype).tiny), 0.0)


class Loss(nn.Module):
    """Base class: ``forward(logits (N, C), targets (N,)) -> scalar``; :meth:`set_epoch` is a no-op."""

    num_classes: int | None = None

    def set_epoch(self, epoch: int) -> None:
        """Tell the loss which 0-based epoch starts; losses with a schedule override this."""


@dataclass(frozen=True)
class LossSpec:
    """A stage-1 loss's registry entry (see :func:`register_loss`).

    Attributes:
        name: ``train.loss`` value, and the name of its section ``train.<name>``.
        label: its row label in tables and the grid (``Focal``).
        summary: what it does, in one line (``longtail config --help``, the docs).
        create: ``(class counts (C,) float64, its section or None, training epochs) -> Loss``.
        config: its section's dataclass (defaults, help, constraints); None: no keys of its own.
        head: the classifier it trains: ``linear``, or ``cosine`` (LDAM's margins live on cosine logits;
            the stage-2 methods that transform a linear joint classifier then skip it).
        check: a rule across config keys (``check(config)``, a one-line ConfigError), when it is selected.
        renamed: its keys' names before they had a section (``{"focal_gamma": "gamma"}``: ``train.focal_gamma``
            is read as ``train.focal.gamma``), so older config files still load.
        baseline: the grid's reference row (plain cross-entropy), not one of its re-balancing loss rows.
    """

    name: str
    label: str
    summary: str
    create: Callable[[torch.Tensor, Any, int], Loss]
    config: type | None = None
    head: str = "linear"
    check: Callable[[Config], None] | None = None
    renamed: dict[str, str] = field(default_factory=dict)
    baseline: bool = False


def register_loss(spec: LossSpec) -> LossSpec:
    """Add ``spec`` to :data:`~longtail.registry.LOSSES`, with its ``train.<name>`` section; returns it."""
    LOSSES.register(spec.name, spec)
    register_component_sections(("train",), spec.name, spec.config, spec.renamed)
    return spec


def unregister_loss(name: str) -> None:
    """Remove a loss added by :func:`register_loss` (tests, plugins)."""
    if LOSSES.unregister(name) is not None:
        unregister_component_sections(("train",), name)
