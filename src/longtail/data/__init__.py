"""Datasets: readers, long-tailed subsets, batch transforms."""

from . import fashion_mnist  # noqa: F401  (registers fashion_mnist_lt)
from .dataset import DatasetSplits, TensorImageDataset, TensorPairDataset, channel_stats, keep_batch
from .idx import read_idx, write_idx
from .longtail import balanced_holdout, class_counts, longtail_counts, longtail_subset
from .registry import DATASETS, create_dataset, register_dataset
from .transforms import BatchTransform

__all__ = [
    "DATASETS",
    "BatchTransform",
    "DatasetSplits",
    "TensorImageDataset",
    "TensorPairDataset",
    "balanced_holdout",
    "channel_stats",
    "class_counts",
    "create_dataset",
    "keep_batch",
    "longtail_counts",
    "longtail_subset",
    "read_idx",
    "register_dataset",
    "write_idx",
]
