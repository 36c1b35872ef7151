"""Datasets by name: ``create_dataset(cfg)`` for ``data.name``."""

from __future__ import annotations

from collections.abc import Callable

from ..config import DataConfig
from ..registry import Registry
from .dataset import DatasetSplits

DATASETS: Registry[DatasetSplits] = Registry("dataset", "data.name")


def register_dataset(name: str) -> Callable:
    """Decorator registering a ``(DataConfig) -> DatasetSplits`` builder as ``name``."""
    return DATASETS.register(name)


def create_dataset(cfg: DataConfig) -> DatasetSplits:
    """Build the dataset named by ``cfg.name``; ``cfg.seed`` fixes its long-tailed subset."""
    return DATASETS.create(cfg.name, cfg)
