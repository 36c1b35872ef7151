"""In-memory image datasets and the train/val/test bundle every stage consumes.

Two kinds of image dataset fill a :class:`DatasetSplits`:

- :class:`TensorImageDataset`: all images in memory as one uint8 tensor
  (Fashion-MNIST, CIFAR, ``.npz``); stage-1 augmentation runs per batch on the
  training device;
- :class:`~longtail.data.image_files.ImageFileDataset`: image files decoded and
  augmented item by item (``filelist``, ``imagefolder``); the device only
  normalises.

Both have ``labels`` ((N,) int64), ``image_shape``, a batch-at-a-time
``__getitems__`` returning ((B, C, H, W) uint8, (B,) int64),
``per_item_augmentation``, ``set_epoch`` and ``eval_view`` (the same images
with the test-time transform).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import Dataset

from ..errors import DataError
from .image_files import ImageFileDataset
from .longtail import class_counts

LOW_PRECISION = (torch.float16, torch.bfloat16)
# Values per chunk (4 MiB of float32 at most for every temporary a chunk makes). Small temporaries matter for the
# peak, not only their size: glibc returns freed blocks above its mmap threshold to the system, but raises that
# threshold to each freed block's size (up to 32 MiB), so a run of large temporaries of varying sizes ends up on
# the heap, fragmented, and held (measured: 0.28 GB more peak on ImageNet-LT's shape with 8,192-row chunks).
CHUNK_VALUES = 1 << 20


def chunk_rows(width: int) -> int:
    """Rows per chunk when each row makes ``width`` values (d features, or C logits): at least 16."""
    return max(16, CHUNK_VALUES // max(1, width))


def as_compute(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 when it is stored in a low precision (float16, bfloat16); any other tensor as it is.

    Features may be held in float16 (half the memory); the arithmetic on them is float32, one batch or row
    chunk at a time (:mod:`longtail.engine.feature_rows`).
    """
    return x.float() if x.dtype in LOW_PRECISION else x


class TensorPairDataset(Dataset):
    """Inputs and labels held in memory as two tensors.

    Args:
        inputs: (N, ...) one row per item (images, features).
        labels: (N,) int64 class indices.

    Items are ``(inputs[i], labels[i])``; float16 inputs (features kept in half the memory) come out as
    float32, one item or batch at a time (:func:`as_compute`).
    ``__getitems__`` lets a DataLoader fetch a whole batch with one indexing op instead of N ``__getitem__`` calls
    and a collate; use :func:`keep_batch` as its collate_fn.
    """

    def __init__(self, inputs: torch.Tensor, labels: torch.Tensor) -> None:
        if labels.dim() != 1 or len(labels) != len(inputs):
            raise DataError(f"labels: expected shape ({len(inputs)},) to match the inputs, got {tuple(labels.shape)}")
        self.inputs = inputs
        self.labels = labels.to(torch.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return as_compute(self.inputs[index]), self.labels[index]

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.int64)
        return as_compute(self.inputs[index]), self.labels[index]


class TensorImageDataset(TensorPairDataset):
    """Images held in memory: (N, C, H, W) uint8 with (N,) int64 labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise DataError(f"images: expected a (N, C, H, W) uint8 tensor, got {tuple(images.shape)} {images.dtype}")
        super().__init__(images, labels)

    @property
    def images(self) -> torch.Tensor:
        """(N, C, H, W) uint8."""
        return self.inputs

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    # Stage-1 augmentation of in-memory images runs per batch on the device, not here.
    per_item_augmentation = False

    def set_epoch(self, epoch: int, seed: int = 0) -> None:
        """Nothing to do: items are not augmented here."""

    def eval_view(self) -> TensorImageDataset:
        """The dataset as seen at test time: itself (no per-item transform)."""
        return self


def keep_batch(batch: Any) -> Any:
    """Collate function for datasets whose ``__getitems__`` already returns a batch."""
    return batch


# What a split of a DatasetSplits can be.
ImageDataset = TensorImageDataset | ImageFileDataset


@dataclass
class DatasetSplits:
    """Train / val / test of one dataset, with what the stages need to know about it.

    ``mean`` and ``std`` are the per-channel normalisation statistics of images
    in [0, 1]. ``train`` is the training view (per-item augmentation for
    file-based datasets); ``split("train")`` is the same images with the
    test-time transform, which stage 2 extracts features from.
    """

    name: str
    train: ImageDataset
    val: ImageDataset
    test: ImageDataset
    num_classes: int
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    info: dict[str, Any] = field(default_factory=dict)
    # Values computed once per process from the splits (their fingerprints: longtail.data.fingerprint).
    cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def train_counts(self) -> list[int]:
        """Training images per class."""
        return class_counts(self.train.labels.numpy(), self.num_classes).tolist()

    def split(self, name: str) -> ImageDataset:
        """The split called ``name`` ("train", "val" or "test") with the test-time transform."""
        if name not in ("train", "val", "test"):
            raise DataError(f"split {name!r}: expected train, val or test")
        return getattr(self, name).eval_view()


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of (N, C, H, W) uint8 images scaled to [0, 1]."""
    scaled = images.to(torch.float64).div_(255.0)
    mean = scaled.mean(dim=(0, 2, 3))
    std = scaled.std(dim=(0, 2, 3)).clamp_min(1e-6)
    return tuple(mean.tolist()), tuple(std.tolist())
