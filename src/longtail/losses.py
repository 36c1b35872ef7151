"""Re-weighting and re-margining losses for long-tailed training.

Every loss is an ``nn.Module`` mapping ``(logits (N, C) float, targets (N,) int64)``
to a scalar mean loss, and has ``set_epoch(epoch)`` (a no-op unless the loss has
a schedule) so a training loop can call it uniformly. Per-class constants
(weights, margins, log priors) are buffers, so ``.to(device)`` moves them.

- :class:`CrossEntropyLoss`: plain softmax cross-entropy (instance-balanced).
- :class:`FocalLoss`: ``-(1 - p_t)^γ log p_t`` (Lin et al., "Focal Loss for Dense
  Object Detection", ICCV 2017), softmax form.
- :class:`ClassBalancedLoss`: cross-entropy or focal loss weighted per class by the
  inverse effective number of samples (Cui et al., "Class-Balanced Loss Based on
  Effective Number of Samples", CVPR 2019); weights from :func:`class_balanced_weights`;
  the focal form is Cao et al.'s weighted focal loss (:func:`weighted_focal_terms`).
- :class:`LDAMLoss`: label-distribution-aware margins ``m_j ∝ n_j^(-1/4)`` with
  optional deferred re-weighting, DRW (Cao et al., "Learning Imbalanced Datasets
  with Label-Distribution-Aware Margin Loss", NeurIPS 2019).
- :class:`BalancedSoftmaxLoss`: cross-entropy on ``logits + log n_j`` (Ren et al.,
  "Balanced Meta-Softmax for Long-Tailed Visual Recognition", NeurIPS 2020).
- :class:`LogitAdjustedLoss`: cross-entropy on ``logits + τ log π_j`` (Menon et al.,
  "Long-Tail Learning via Logit Adjustment", ICLR 2021).

Conventions:

- Weighted losses reduce like ``F.cross_entropy(..., weight=w)``:
  ``sum_i w_{y_i} l_i / sum_i w_{y_i}``, except the class-balanced focal loss
  (γ > 0), a plain mean over the batch as in Cao et al.'s code. A batch whose
  targets all have weight 0 gives loss 0 (and zero gradient) instead of NaN.
- A class with no training images gets class-balanced weight 0, the largest LDAM
  margin, and the log prior of ``ZERO_COUNT`` images (finite, very negative); see
  :func:`log_prior`.
- Half-precision logits are upcast to float32 inside the losses.

:func:`create_loss` builds one by name from :data:`LOSSES` (config key ``train.loss``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .errors import ConfigError
from .registry import Registry

ZERO_COUNT = 1e-6
"""The count :func:`log_prior` gives a class with no images: log π stays finite (≈ -13.8 - log Σn)."""

CountsLike = Sequence[int] | np.ndarray | torch.Tensor


# --------------------------------------------------------------------------- validation


def _number(name: str, value: Any, ok: bool | None, expected: str) -> float:
    """``value`` as a float if it is a finite real number and ``ok``; a one-line ConfigError otherwise."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or not ok:
        raise ConfigError(f"{name}={value!r}: expected {expected}")
    return float(value)


def _check_gamma(gamma: Any) -> float:
    return _number("gamma", gamma, isinstance(gamma, Real) and gamma >= 0, "a number >= 0")


def _check_beta(beta: Any) -> float:
    return _number("beta", beta, isinstance(beta, Real) and 0 <= beta < 1, "a number in [0, 1)")


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


def _check_inputs(logits: torch.Tensor, targets: torch.Tensor, num_classes: int | None) -> torch.Tensor:
    """Shape checks (host-side, no device sync); returns the logits upcast from half precision."""
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
    beta = _check_beta(beta)
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
    max_margin = _number("max_margin", max_margin, isinstance(max_margin, Real) and max_margin > 0, "a number > 0")
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


def _weighted_mean(losses: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """(N,) per-sample losses -> scalar: plain mean, or ``Σ w_y l / Σ w_y`` (0 when ``Σ w_y = 0``)."""
    if weight is None:
        return losses.mean()
    w = weight.to(losses.dtype)[targets]
    total = w.sum()
    return torch.where(total > 0, (w * losses).sum() / total.clamp_min(torch.finfo(w.dtype).tiny), 0.0)


def focal_terms(logits: torch.Tensor, targets: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-sample softmax focal loss ``-(1 - p_t)^γ log p_t``: (N, C), (N,) -> (N,).

    Computed from ``log_softmax`` (stable for large logits); γ = 0 is cross-entropy.
    """
    if gamma == 0:
        return F.cross_entropy(logits, targets, reduction="none")
    log_pt = F.log_softmax(logits, dim=1).gather(1, targets.unsqueeze(1)).squeeze(1)
    # 1 - p_t = -expm1(log p_t) keeps precision near p_t = 1; the clamp keeps the gradient of
    # (1 - p_t)^γ finite where p_t == 1 and γ < 1 (there it is multiplied by log p_t = 0 anyway).
    one_minus_pt = (-torch.expm1(log_pt)).clamp_min(torch.finfo(log_pt.dtype).tiny)
    return -one_minus_pt.pow(gamma) * log_pt


def weighted_focal_terms(
    logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor, gamma: float
) -> torch.Tensor:
    """Per-sample weighted focal loss of Cao et al. (2019): (N, C), (N,), (C,) -> (N,).

    With ``ce_i = w_{y_i} (-log p_{y_i})`` (the per-sample ``F.cross_entropy`` with
    ``weight=w``) and ``p_i = exp(-ce_i) = p_{y_i}^{w_{y_i}}``, the term is
    ``(1 - p_i)^γ ce_i``: the class weight sits inside the focal factor too.
    """
    ce = F.cross_entropy(logits, targets, weight=weight.to(logits.dtype), reduction="none")
    # 1 - exp(-ce) = -expm1(-ce) keeps precision near ce = 0; the clamp keeps the gradient of
    # (1 - p)^γ finite where ce == 0 (a weight-0 class) and γ < 1 (it is multiplied by ce = 0).
    one_minus_p = (-torch.expm1(-ce)).clamp_min(torch.finfo(ce.dtype).tiny)
    return one_minus_p.pow(gamma) * ce


# --------------------------------------------------------------------------- losses


class Loss(nn.Module):
    """Base class: ``forward(logits (N, C), targets (N,)) -> scalar``; :meth:`set_epoch` is a no-op."""

    num_classes: int | None = None

    def set_epoch(self, epoch: int) -> None:
        """Tell the loss which 0-based epoch starts; losses with a schedule override this."""


class CrossEntropyLoss(Loss):
    """Plain softmax cross-entropy, mean over the batch."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(N, C) float, (N,) int64 -> scalar."""
        logits = _check_inputs(logits, targets, None)
        return F.cross_entropy(logits, targets)


class FocalLoss(Loss):
    """Softmax focal loss ``-(1 - p_t)^γ log p_t`` (Lin et al. 2017); γ = 0 is cross-entropy.

    Args:
        gamma: focusing parameter, >= 0.
        weight: optional (C,) per-class weights; the mean is then ``Σ w_y l / Σ w_y``
            as in ``F.cross_entropy(weight=...)``.
    """

    def __init__(self, gamma: float = 2.0, weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.gamma = _check_gamma(gamma)
        if weight is not None:
            weight = torch.as_tensor(weight, dtype=torch.float32).detach().clone()
            if weight.ndim != 1:
                raise ConfigError(f"weight: expected a (C,) tensor, got shape {tuple(weight.shape)}")
            self.num_classes = weight.numel()
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(N, C) float, (N,) int64 -> scalar."""
        logits = _check_inputs(logits, targets, self.num_classes)
        return _weighted_mean(focal_terms(logits, targets, self.gamma), targets, self.weight)


class ClassBalancedLoss(FocalLoss):
    """Class-balanced loss (Cui et al. 2019): CE (γ = 0) or focal (γ > 0) weighted by :func:`class_balanced_weights`.

    γ = 0: weighted cross-entropy, ``F.cross_entropy(logits, y, weight=w)``, i.e.
    ``Σ_i w_{y_i} l_i / Σ_i w_{y_i}`` (Cao et al.'s "CE + Reweight").

    γ > 0: the weighted focal loss of Cao et al.'s LDAM-DRW code (``FocalLoss`` in
    its ``losses.py``, "Focal + Reweight"): ``ce_i = w_{y_i} (-log p_{y_i})``,
    ``p_i = exp(-ce_i)``, loss ``= mean_i (1 - p_i)^γ ce_i`` — the class weight
    inside the focal term (``p_i = p_{y_i}^{w_{y_i}}``, not ``p_{y_i}``) and a plain
    mean over the N samples, not ``Σ w`` (so a batch of weight-0 targets gives 0).
    Cui et al.'s own focal variant is sigmoid-based; this is the softmax form.

    Args:
        class_counts: (C,) images per class.
        beta: effective-number hyper-parameter in [0, 1).
        gamma: focal parameter, >= 0; 0 gives weighted cross-entropy.
    """

    def __init__(self, class_counts: CountsLike, beta: float = 0.9999, gamma: float = 0.0) -> None:
        super().__init__(gamma=gamma, weight=class_balanced_weights(class_counts, beta))
        self.beta = float(beta)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(N, C) float, (N,) int64 -> scalar."""
        if self.gamma == 0:
            return super().forward(logits, targets)
        logits = _check_inputs(logits, targets, self.num_classes)
        return weighted_focal_terms(logits, targets, self.weight, self.gamma).mean()


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
        self.scale = _number("scale", scale, isinstance(scale, Real) and scale > 0, "a number > 0")
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
        if epoch < 0:
            raise ValueError(f"epoch={epoch!r}: expected an integer >= 0")
        self.epoch = int(epoch)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(N, C) cosine logits in [-1, 1], (N,) int64 -> scalar."""
        logits = _check_inputs(logits, targets, self.num_classes)
        margin = self.margins.to(logits.dtype)[targets]
        adjusted = logits.scatter_add(1, targets.unsqueeze(1), -margin.unsqueeze(1))
        losses = F.cross_entropy(self.scale * adjusted, targets, reduction="none")
        return _weighted_mean(losses, targets, self.drw_weights if self.drw_active else None)


class LogitAdjustedLoss(Loss):
    """Logit-adjusted loss (Menon et al. 2021): ``CE(z + τ log π, y)``, π the class prior.

    A class with no images gets the finite log prior described in :func:`log_prior`.

    Args:
        class_counts: (C,) images per class.
        tau: adjustment strength, >= 0; 0 is cross-entropy.
    """

    def __init__(self, class_counts: CountsLike, tau: float = 1.0) -> None:
        super().__init__()
        self.tau = _number("tau", tau, isinstance(tau, Real) and tau >= 0, "a number >= 0")
        self.register_buffer("log_prior", log_prior(class_counts))
        self.num_classes = self.log_prior.numel()

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(N, C) float, (N,) int64 -> scalar."""
        logits = _check_inputs(logits, targets, self.num_classes)
        return F.cross_entropy(logits + self.tau * self.log_prior.to(logits.dtype), targets)


class BalancedSoftmaxLoss(LogitAdjustedLoss):
    """Balanced softmax (Ren et al. 2020): ``CE(z + log n_j, y)``.

    Implemented as ``CE(z + log π_j, y)``: the two differ by the constant
    ``log Σ n`` per row, which softmax ignores, so values and gradients are
    identical, and it equals :class:`LogitAdjustedLoss` with τ = 1.

    Args:
        class_counts: (C,) images per class.
    """

    def __init__(self, class_counts: CountsLike) -> None:
        super().__init__(class_counts, tau=1.0)


# --------------------------------------------------------------------------- registry

LOSSES: Registry[Loss] = Registry("loss", "train.loss")


@LOSSES.register("ce")
def _ce(class_counts: CountsLike, **_: Any) -> Loss:
    return CrossEntropyLoss()


@LOSSES.register("focal")
def _focal(class_counts: CountsLike, *, focal_gamma: float, **_: Any) -> Loss:
    return FocalLoss(gamma=focal_gamma)


@LOSSES.register("class_balanced")
def _class_balanced(class_counts: CountsLike, *, cb_beta: float, **_: Any) -> Loss:
    return ClassBalancedLoss(class_counts, beta=cb_beta)


@LOSSES.register("ldam_drw")
def _ldam_drw(
    class_counts: CountsLike,
    *,
    ldam_max_margin: float,
    ldam_scale: float,
    drw_epoch: int | None,
    cb_beta: float,
    **_: Any,
) -> Loss:
    return LDAMLoss(class_counts, max_margin=ldam_max_margin, scale=ldam_scale, drw_epoch=drw_epoch, beta=cb_beta)


@LOSSES.register("balanced_softmax")
def _balanced_softmax(class_counts: CountsLike, **_: Any) -> Loss:
    return BalancedSoftmaxLoss(class_counts)


@LOSSES.register("logit_adjusted")
def _logit_adjusted(class_counts: CountsLike, *, la_tau: float, **_: Any) -> Loss:
    return LogitAdjustedLoss(class_counts, tau=la_tau)


def create_loss(
    name: str,
    class_counts: Sequence[int],
    *,
    focal_gamma: float = 2.0,
    cb_beta: float = 0.9999,
    ldam_max_margin: float = 0.5,
    ldam_scale: float = 30.0,
    drw_epoch: int | None = None,
    la_tau: float = 1.0,
) -> Loss:
    """Build the loss registered as ``name`` (one of ``LOSSES.names()``) for these class counts.

    Each loss takes only its own options: ``focal`` uses ``focal_gamma``;
    ``class_balanced`` ``cb_beta`` (cross-entropy form); ``ldam_drw``
    ``ldam_max_margin``, ``ldam_scale``, ``drw_epoch`` (None: LDAM without DRW)
    and ``cb_beta`` for the DRW weights; ``logit_adjusted`` ``la_tau``.

    Raises:
        ConfigError: an unknown name (naming ``train.loss`` and the choices), invalid
            class counts, or an invalid option of the chosen loss.
    """
    factory = LOSSES.get(name)
    as_counts(class_counts)  # the same validation for every loss, including "ce"
    return factory(
        class_counts,
        focal_gamma=focal_gamma,
        cb_beta=cb_beta,
        ldam_max_margin=ldam_max_margin,
        ldam_scale=ldam_scale,
        drw_epoch=drw_epoch,
        la_tau=la_tau,
    )


# --------------------------------------------------------------------------- label-aware smoothing (MiSLAS)

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
        _number(name, value, isinstance(value, Real) and 0 <= value <= 1, "a number in [0, 1]")
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
        power = _number("power", power, isinstance(power, Real) and power > 0, "a number > 0 (shape='exp')")
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
        logits = _check_inputs(logits, targets, self.num_classes)
        log_probs = F.log_softmax(logits, dim=1)
        nll = -log_probs.gather(1, targets.unsqueeze(1)).squeeze(1)  # (N,)
        uniform = -log_probs.mean(dim=1)  # (N,)
        eps = self.epsilons.to(log_probs.dtype)[targets]
        return ((1.0 - eps) * nll + eps * uniform).mean()
