"""Datasets: readers, long-tailed subsets, validation hold-out, image transforms, class-size statistics."""

import importlib
import pkgutil

from .dataset import DatasetSplits, ImageDataset, TensorImageDataset, TensorPairDataset, channel_stats, keep_batch
from .features import FeatureDataset, load_features
from .filelist import read_split_lines
from .holdout import Holdout, holdout_validation
from .idx import read_idx, write_idx
from .image_files import ImageFileDataset, PathTable
from .image_transforms import CenterCrop, PadCrop, RandomResizedCrop
from .longtail import balanced_holdout, class_counts, longtail_counts, longtail_subset
from .registry import DATASETS, DatasetSpec, create_dataset, register_dataset, unregister_dataset
from .stats import class_size_stats, plot_class_sizes
from .transforms import NORMALIZATION, BatchTransform, train_batch_transform

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "NORMALIZATION",
    "BatchTransform",
    "CenterCrop",
    "DatasetSplits",
    "FeatureDataset",
    "Holdout",
    "ImageDataset",
    "ImageFileDataset",
    "PadCrop",
    "PathTable",
    "RandomResizedCrop",
    "TensorImageDataset",
    "TensorPairDataset",
    "balanced_holdout",
    "channel_stats",
    "class_counts",
    "class_size_stats",
    "create_dataset",
    "holdout_validation",
    "keep_batch",
    "load_features",
    "longtail_counts",
    "longtail_subset",
    "plot_class_sizes",
    "read_idx",
    "read_split_lines",
    "register_dataset",
    "unregister_dataset",
    "train_batch_transform",
    "write_idx",
]

# The readers register themselves by name (data.name) when imported: every module of the package is, so
# adding a reader is adding a file.
for _module in sorted(info.name for info in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")
