"""Train / val / test of a dataset held in memory (Fashion-MNIST, CIFAR, ``.npz``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..config import DataConfig
from ..errors import ConfigError
from .dataset import DatasetSplits, TensorImageDataset, channel_stats
from .holdout import holdout_validation, require_evaluation_images
from .transforms import named_normalization


def tensor_dataset(images: np.ndarray, labels: np.ndarray) -> TensorImageDataset:
    """(N, C, H, W) uint8 images and (N,) labels as a :class:`TensorImageDataset`."""
    return TensorImageDataset(
        torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8)),
        torch.from_numpy(np.asarray(labels, dtype=np.int64)),
    )


def in_memory_splits(
    name: str,
    cfg: DataConfig,
    *,
    images: np.ndarray,
    labels: np.ndarray,
    test: tuple[np.ndarray, np.ndarray],
    num_classes: int,
    class_names: list[str],
    subset: np.ndarray | None = None,
    val: tuple[np.ndarray, np.ndarray] | None = None,
    info: dict[str, Any] | None = None,
) -> DatasetSplits:
    """Build the splits; a missing validation split is held out of the training images.

    Args:
        name: dataset name for reports.
        cfg: ``data.*`` (val_per_class, seed, augment, normalize).
        images, labels: every available training image, (N, C, H, W) uint8, and (N,) labels.
        test: test images and labels, same layout.
        num_classes, class_names: the classes.
        subset: indices of ``images`` forming the training set (the long-tailed
            subset); None: all of them. The rest may serve as validation.
        val: the dataset's own validation split, if it has one.
        info: facts for reports (root, source files).
    """
    if cfg.augment == "imagenet":
        raise ConfigError(
            f"data.augment='imagenet': random resized crops need a file-based reader (filelist, imagefolder); "
            f"{name} is held in memory, use data.augment=cifar or auto"
        )
    info = dict(info or {})
    if val is None:
        holdout = holdout_validation(labels, subset, cfg.val_per_class, num_classes, cfg.seed + 1)
        train_index, val_index = holdout.train, holdout.val
        val_set = tensor_dataset(images[val_index], labels[val_index])
        info["val_source"] = holdout.describe()
    else:
        train_index = np.arange(len(labels)) if subset is None else subset
        val_set = tensor_dataset(*val)
        info["val_source"] = "the dataset's own validation split"
    require_evaluation_images(name, val_set.labels, test[1], held_out=val is None)
    train = tensor_dataset(images[train_index], labels[train_index])
    if cfg.normalize == "auto":
        mean, std = channel_stats(train.images)
    else:
        mean, std = named_normalization(cfg.normalize, train.image_shape[0])
    return DatasetSplits(
        name=name,
        train=train,
        val=val_set,
        test=tensor_dataset(*test),
        num_classes=num_classes,
        class_names=class_names,
        mean=mean,
        std=std,
        info=info,
    )
