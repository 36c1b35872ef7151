"""Batch transforms on uint8 image tensors, run on the training device, and normalisation statistics.

In-memory datasets hand whole uint8 batches to the loop; these modules turn them
into normalised float batches (with augmentation for stage 1) in one vectorised
step, instead of per-image Python work in DataLoader workers. File-based
datasets augment each image where it is decoded
(:mod:`~longtail.data.image_transforms`); for them the batch transform only
normalises.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..config import DataConfig
    from .dataset import DatasetSplits

# Per-channel (mean, std) of RGB images in [0, 1]: ImageNet's (used for ImageNet-LT and
# Places-LT) and iNaturalist 2018's, as in the paper's code.
NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "inaturalist": ((0.466, 0.471, 0.380), (0.195, 0.194, 0.192)),
}


def named_normalization(name: str, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The statistics called ``name`` (``data.normalize``), checked against the image channels."""
    if name not in NORMALIZATION:
        raise ConfigError(f"data.normalize={name!r}: expected auto, {', '.join(NORMALIZATION)}")
    if channels != 3:
        raise ConfigError(
            f"data.normalize={name!r}: {name} statistics are for RGB images, these have {channels} channel(s); "
            "use data.normalize=auto"
        )
    return NORMALIZATION[name]


class BatchTransform(nn.Module):
    """uint8 (N, C, H, W) -> float32 (N, C, H, W): optional random crop + flip, then normalise.

    Args:
        mean, std: per-channel statistics of images in [0, 1].
        crop_padding: pad by this many zero pixels, then crop back to (H, W) at a
            random offset per image; 0 disables cropping.
        hflip: flip each image horizontally with probability 1/2.
        generator: CPU generator for the random offsets and flips (reproducibility).
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        crop_padding: int = 0,
        hflip: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.crop_padding = crop_padding
        self.hflip = hflip
        self.generator = generator

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.mean.device, torch.float32).div_(255.0)
        if self.crop_padding > 0:
            x = self._random_crop(x)
        if self.hflip:
            flip = torch.rand(len(x), generator=self.generator) < 0.5
            x = torch.where(flip.to(x.device).view(-1, 1, 1, 1), x.flip(3), x)
        return (x - self.mean) / self.std

    def _random_crop(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        p = self.crop_padding
        padded = nn.functional.pad(x, (p, p, p, p))
        top = torch.randint(0, 2 * p + 1, (n,), generator=self.generator).to(x.device)
        left = torch.randint(0, 2 * p + 1, (n,), generator=self.generator).to(x.device)
        rows = (top.view(n, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1)
        cols = (left.view(n, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w)
        batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
        channel = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
        return padded[batch, channel, rows, cols]


class FeatureTransform(nn.Module):
    """The batch transform of precomputed features (``data.name=features``): (N, d) float32 as they are.

    Features are neither augmented nor normalised: the linear probe and every
    stage-2 method see exactly the vectors of the file, and an exported model
    takes them as they are. ``generator`` is None, like an un-augmented :class:`BatchTransform`.
    """

    generator = None

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def holds_features(splits: DatasetSplits) -> bool:
    """Whether ``splits`` are feature vectors (``data.name=features``) rather than images."""
    return bool(getattr(splits.train, "holds_features", False))


def train_batch_transform(
    splits: DatasetSplits, *, crop_padding: int, hflip: bool, seed: int
) -> BatchTransform | FeatureTransform:
    """The on-device part of stage-1 augmentation for ``splits``.

    In-memory images: random crop after ``crop_padding`` zero pixels and a flip
    (``hflip``), drawn from a generator seeded with ``seed``, then normalisation.
    File-based images were augmented where they were decoded: normalisation only.
    Feature vectors: the identity.
    """
    if holds_features(splits):
        return FeatureTransform()
    if splits.train.per_item_augmentation:
        return BatchTransform(splits.mean, splits.std)
    return BatchTransform(
        splits.mean,
        splits.std,
        crop_padding=crop_padding,
        hflip=hflip,
        generator=torch.Generator().manual_seed(seed),
    )


def eval_transform(splits: DatasetSplits) -> BatchTransform | FeatureTransform:
    """The test-time transform: normalisation only (feature vectors: the identity)."""
    return FeatureTransform() if holds_features(splits) else BatchTransform(splits.mean, splits.std)


def train_transform(
    splits: DatasetSplits, data: DataConfig, *, seed: int, rank: int = 0
) -> BatchTransform | FeatureTransform:
    """The on-device stage-1 training transform of ``data`` (``crop_padding``, ``hflip``) seeded by ``seed``.

    Under DDP each ``rank`` draws from its own generator (rank 0's is the
    single-process one), so ranks do not crop their different images alike.
    """
    return train_batch_transform(splits, crop_padding=data.crop_padding, hflip=data.hflip, seed=seed + 1_000_003 * rank)
