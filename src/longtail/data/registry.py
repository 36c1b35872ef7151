"""Datasets by name: ``create_dataset(cfg)`` for ``data.name``."""

from __future__ import annotations

from collections.abc import Callable

from ..config import DataConfig
from ..errors import DataError
from ..registry import Registry
from .dataset import DatasetSplits

DATASETS: Registry[DatasetSplits] = Registry("dataset", "data.name")


def register_dataset(name: str) -> Callable:
    """Decorator registering a ``(DataConfig) -> DatasetSplits`` builder as ``name``."""
    return DATASETS.register(name)


def create_dataset(cfg: DataConfig) -> DatasetSplits:
    """Build the dataset named by ``cfg.name``; ``cfg.seed`` fixes its long-tailed subset.

    Raises:
        DataError: the data has fewer than two classes, whatever its reader: every method would score
            100 on one class, a number that compares nothing.
    """
    splits = DATASETS.create(cfg.name, cfg)
    if splits.num_classes < 2:
        source = cfg.path or cfg.root or cfg.name
        raise DataError(
            f"{source}: {splits.name} has {splits.num_classes} class in its training split; "
            "long-tailed recognition needs at least 2 classes"
        )
    return splits
