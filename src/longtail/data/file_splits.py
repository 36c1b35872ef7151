"""Train / val / test of a dataset of image files (the ``filelist`` and ``imagefolder`` readers)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..config import DataConfig
from ..errors import DataError
from .dataset import DatasetSplits
from .holdout import holdout_validation, require_evaluation_images
from .image_check import describe_skipped, screen_split
from .image_files import ImageFileDataset, PathTable
from .image_transforms import CenterCrop, ImageTransform, PadCrop, RandomResizedCrop
from .longtail import class_counts
from .transforms import named_normalization

Split = tuple[PathTable, np.ndarray]  # relative paths and (N,) labels

log = logging.getLogger(__name__)


def image_transforms(cfg: DataConfig) -> tuple[ImageTransform, ImageTransform]:
    """(training, test-time) per-image transforms from ``data.*``.

    ``augment`` auto or imagenet: the paper's RandomResizedCrop + flip +
    ColorJitter; cifar: the test geometry, then a padded random crop and flip.
    """
    test = CenterCrop(size=cfg.image_size, resize=cfg.resize)
    if cfg.augment == "cifar":
        train: ImageTransform = PadCrop(cfg.image_size, cfg.resize, cfg.crop_padding, cfg.hflip)
    else:
        train = RandomResizedCrop(cfg.image_size, (cfg.scale_min, 1.0), flip=cfg.hflip, jitter=cfg.color_jitter)
    return train, test


def file_splits(
    name: str,
    cfg: DataConfig,
    *,
    root: Path,
    train: Split,
    test: Split,
    num_classes: int,
    class_names: list[str],
    val: Split | None = None,
    info: dict[str, Any] | None = None,
) -> DatasetSplits:
    """Build the splits of an image-file dataset; a missing validation split is held out of ``train``.

    Every image is checked first (:mod:`~longtail.data.image_check`): an
    unreadable one stops the build, or with ``data.skip_bad`` is dropped and
    listed in ``info["skipped_images"]``.

    Raises:
        DataError: naming an unreadable image; when a class has no training image
            (every class in 0..C-1 must have one); when validation or test is empty.
    """
    threads = cfg.decode_threads or os.cpu_count() or 1
    screened: dict[str, Split] = {}
    skipped: list[dict[str, str]] = []
    for split_name, split in (("train", train), ("val", val), ("test", test)):
        if split is not None:
            paths, labels, dropped = screen_split(
                root, split[0], split[1], split_name, skip_bad=cfg.skip_bad, threads=threads
            )
            screened[split_name] = (paths, labels)
            skipped += dropped
    if skipped:
        log.warning(describe_skipped(skipped))
    train, test, val = screened["train"], screened["test"], screened.get("val")
    counts = class_counts(train[1], num_classes)
    if (counts == 0).any():
        empty = np.flatnonzero(counts == 0)
        first = int(empty[0])
        # Its name, where it has one: an empty class folder of imagefolder is found by its name, not its index.
        named = f" ({class_names[first]!r})" if class_names[first] != str(first) else ""
        raise DataError(
            f"{name}: class {first}{named} has no training image ({len(empty)} such classes); "
            f"labels must run from 0 to {num_classes - 1} with every class present in the training split"
        )
    train_transform, test_transform = image_transforms(cfg)

    def dataset(split: Split, transform: ImageTransform) -> ImageFileDataset:
        return ImageFileDataset(
            root, split[0], split[1], transform, eval_transform=test_transform, seed=cfg.seed, threads=threads
        )

    info = dict(info or {})
    if skipped:
        info["skipped_images"] = skipped
    train_set = dataset(train, train_transform)
    if val is None:
        holdout = holdout_validation(train[1], None, cfg.val_per_class, num_classes, cfg.seed + 1)
        val_set = train_set.subset(holdout.val).eval_view()
        train_set = train_set.subset(holdout.train)
        info["val_source"] = holdout.describe()
    else:
        val_set = dataset(val, test_transform)
        info["val_source"] = "the dataset's own validation split"
    require_evaluation_images(name, val_set.labels, test[1], held_out=val is None)
    normalize = "imagenet" if cfg.normalize == "auto" else cfg.normalize
    mean, std = named_normalization(normalize, 3)
    return DatasetSplits(
        name=name,
        train=train_set,
        val=val_set,
        test=dataset(test, test_transform),
        num_classes=num_classes,
        class_names=class_names,
        mean=mean,
        std=std,
        info=info,
    )


def check_labels(split: Split, num_classes: int, source: str) -> None:
    """Every label of an evaluation split must be a training class."""
    labels = split[1]
    if len(labels) and labels.max() >= num_classes:
        raise DataError(
            f"{source}: label {int(labels.max())}, but the training split has classes 0 to {num_classes - 1}"
        )
