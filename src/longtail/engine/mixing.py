"""Mixup (Zhang et al., ICLR 2018) and CutMix (Yun et al., ICCV 2019) per batch, on the batch's device.

Each batch is mixed with a random permutation of itself: mixup blends whole
images, ``lam * x + (1 - lam) * x[perm]``; CutMix pastes a box of ``x[perm]``
into ``x``. Either way ``lam ~ Beta(α, α)`` and the loss becomes
``lam * loss(y) + (1 - lam) * loss(y[perm])`` (:func:`mixed_loss`).

Every random draw (whether the batch is mixed, which of the two, ``lam``, the
box, the permutation) comes from one CPU ``torch.Generator``: a handful of
scalars and an (N,) permutation per batch, so drawing them on the host costs
nothing, needs no device synchronisation to read ``lam``, gives the same draws
on CPU and GPU, and makes the state a small CPU tensor to checkpoint
(:meth:`Mixer.get_state` / :meth:`Mixer.set_state`). The images never leave
their device. Under DDP give each rank its own seed (as the crop-and-flip
augmentation does), or all ranks would mix their different images alike.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError

MixResult = tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]
"""``(mixed images (N, C, H, W), labels_a (N,), labels_b (N,), lam)``."""

SWITCH_PROB = 0.5
"""With both α > 0, the share of mixed batches that use CutMix rather than mixup (timm's default)."""


def _check_alpha(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name}={value!r}: expected a number >= 0 (0 = off)")
    return float(value)


def _check_prob(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not 0 <= value <= 1:
        raise ConfigError(f"mix_prob={value!r}: expected a number in [0, 1]")
    return float(value)


def _uniform(generator: torch.Generator) -> float:
    """One U[0, 1) draw."""
    return float(torch.rand((), generator=generator, dtype=torch.float64))


def sample_beta(alpha: float, generator: torch.Generator) -> float:
    """One draw of Beta(α, α) as G1 / (G1 + G2) with G ~ Gamma(α, 1).

    ``torch._standard_gamma`` is what ``torch.distributions.Gamma`` samples with;
    it is called directly because the distributions take no generator.
    """
    gammas = torch._standard_gamma(torch.full((2,), alpha, dtype=torch.float64), generator=generator)
    total = float(gammas.sum())
    # Both gammas underflow to 0 only for tiny α, where Beta(α, α) puts its mass at 0 and 1.
    return float(gammas[0]) / total if total > 0 else float(_uniform(generator) < 0.5)


def cutmix_box(lam: float, height: int, width: int, generator: torch.Generator) -> tuple[int, int, int, int]:
    """A box of area about ``(1 - lam) * H * W`` with a uniform centre, clipped to the image.

    Returns:
        ``(top, bottom, left, right)``: rows ``top:bottom`` and columns ``left:right``.
    """
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy = int(torch.randint(0, height, (), generator=generator))
    cx = int(torch.randint(0, width, (), generator=generator))
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    return top, bottom, left, right


def mix_batch(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    mixup_alpha: float,
    cutmix_alpha: float = 0.0,
    mix_prob: float = 1.0,
    generator: torch.Generator,
) -> MixResult:
    """Mix one batch with a permutation of itself.

    The batch is mixed with probability ``mix_prob``; with both α > 0 it then
    uses CutMix with probability :data:`SWITCH_PROB` (0.5, as timm's ``Mixup``)
    and mixup otherwise. CutMix's ``lam`` is corrected to the box actually pasted
    (``1 - box area / image area``, after clipping), so the loss weights match
    the pixels. An unmixed batch comes back as ``(images, labels, labels, 1.0)``.

    Args:
        images: (N, C, H, W) on any device (CutMix needs the two last dimensions; mixup any shape).
        labels: (N,) int64 on the same device.
        mixup_alpha, cutmix_alpha: Beta(α, α) parameters, >= 0; 0 turns that kind off.
        mix_prob: probability, in [0, 1], that a batch is mixed at all.
        generator: a CPU generator; every draw comes from it, so the same state gives the same result.

    Returns:
        ``(mixed images (N, C, H, W), labels_a (N,), labels_b (N,), lam)``, ``lam`` a float in [0, 1]:
        the weight of ``labels_a`` (the batch's own labels).
    """
    mixup_alpha = _check_alpha("mixup_alpha", mixup_alpha)
    cutmix_alpha = _check_alpha("cutmix_alpha", cutmix_alpha)
    mix_prob = _check_prob(mix_prob)
    if generator.device.type != "cpu":
        raise ValueError(f"expected a CPU generator (draws are made on the host), got one on {generator.device}")
    if (mixup_alpha == 0 and cutmix_alpha == 0) or len(labels) == 0:
        return images, labels, labels, 1.0
    if _uniform(generator) >= mix_prob:
        return images, labels, labels, 1.0
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha == 0 or _uniform(generator) < SWITCH_PROB)
    lam = sample_beta(cutmix_alpha if use_cutmix else mixup_alpha, generator)
    permutation = torch.randperm(len(labels), generator=generator).to(images.device, non_blocking=True)
    partner = images[permutation]
    if use_cutmix:
        mixed, lam = _paste_box(images, partner, lam, generator)
    else:
        mixed = partner.mul_(1.0 - lam).add_(images, alpha=lam)  # partner is a fresh copy: reuse its memory
    return mixed, labels, labels[permutation], lam


def _paste_box(
    images: torch.Tensor, partner: torch.Tensor, lam: float, generator: torch.Generator
) -> tuple[torch.Tensor, float]:
    """CutMix: ``images`` with a box of ``partner`` pasted in, and ``lam`` corrected to the box's area."""
    height, width = images.shape[-2:]
    top, bottom, left, right = cutmix_box(lam, height, width, generator)
    mixed = images.clone()
    mixed[..., top:bottom, left:right] = partner[..., top:bottom, left:right]
    return mixed, 1.0 - (bottom - top) * (right - left) / (height * width)


def mixed_loss(
    criterion: nn.Module | Any,
    logits: torch.Tensor,
    labels_a: torch.Tensor,
    labels_b: torch.Tensor,
    lam: float,
) -> torch.Tensor:
    """``lam * criterion(logits, labels_a) + (1 - lam) * criterion(logits, labels_b)``.

    Works for any ``criterion(logits (N, K), targets (N,)) -> scalar``, so for every
    loss of :mod:`longtail.losses` (a weighted loss normalises each of the two
    terms by its own targets' weights, as in the reference implementations).
    With ``lam == 1`` (an unmixed batch) only the first term is computed: the
    loss is then exactly the unmixed one.
    """
    if lam == 1.0:
        return criterion(logits, labels_a)
    return lam * criterion(logits, labels_a) + (1.0 - lam) * criterion(logits, labels_b)


def mixed_correct(
    predictions: torch.Tensor, labels_a: torch.Tensor, labels_b: torch.Tensor, lam: float
) -> torch.Tensor:
    """Training hits of a mixed batch, ``lam * #(pred == a) + (1 - lam) * #(pred == b)``: (N,) x3 -> float64 scalar."""
    hits_a = (predictions == labels_a).sum().double()
    if lam == 1.0:
        return hits_a
    return lam * hits_a + (1.0 - lam) * (predictions == labels_b).sum().double()


class Mixer:
    """Mixup / CutMix from its own seeded CPU generator; a ``mixer`` of :func:`~longtail.engine.loops.train_one_epoch`.

    ``mixer(images, labels)`` is :func:`mix_batch` with these settings. Save
    :meth:`get_state` with the checkpoint and :meth:`set_state` it on resume to
    repeat the very same draws.

    Args:
        mixup_alpha, cutmix_alpha: Beta(α, α) parameters, >= 0 (0 = off).
        mix_prob: probability that a batch is mixed.
        seed: seeds the generator (per rank under DDP).
    """

    def __init__(self, *, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, mix_prob: float = 1.0, seed: int = 0):
        self.mixup_alpha = _check_alpha("mixup_alpha", mixup_alpha)
        self.cutmix_alpha = _check_alpha("cutmix_alpha", cutmix_alpha)
        self.mix_prob = _check_prob(mix_prob)
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def enabled(self) -> bool:
        """Whether any batch can be mixed."""
        return (self.mixup_alpha > 0 or self.cutmix_alpha > 0) and self.mix_prob > 0

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> MixResult:
        """(N, C, H, W), (N,) -> (mixed images, labels_a, labels_b, lam); see :func:`mix_batch`."""
        return mix_batch(
            images,
            labels,
            mixup_alpha=self.mixup_alpha,
            cutmix_alpha=self.cutmix_alpha,
            mix_prob=self.mix_prob,
            generator=self.generator,
        )

    def get_state(self) -> torch.Tensor:
        """The generator's state (a CPU uint8 tensor, loadable with ``weights_only=True``)."""
        return self.generator.get_state()

    def set_state(self, state: torch.Tensor) -> None:
        """Continue from a state of :meth:`get_state`."""
        self.generator.set_state(state)


def create_mixer(
    *, mixup_alpha: float, cutmix_alpha: float = 0.0, mix_prob: float = 1.0, seed: int = 0
) -> Mixer | None:
    """A :class:`Mixer`, or None when the settings never mix (so that the training loop keeps its plain path)."""
    mixer = Mixer(mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, mix_prob=mix_prob, seed=seed)
    return mixer if mixer.enabled else None
