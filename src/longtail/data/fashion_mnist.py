"""Fashion-MNIST (Zalando) from its four IDX files, and its long-tailed subset."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import DataConfig
from ..errors import DataError
from .dataset import DatasetSplits
from .idx import read_idx
from .in_memory import in_memory_splits
from .longtail import longtail_counts, longtail_subset
from .registry import DatasetSpec, register_dataset

# Where Debian's package `dataset-fashion-mnist` puts the files.
DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
MISSING_HINT = (
    "install Debian's package (apt-get install dataset-fashion-mnist) or put the four IDX files "
    "from github.com/zalandoresearch/fashion-mnist in a directory and set data.root to it"
)


def _find(root: Path, name: str) -> Path:
    """The file ``name`` in ``root``, accepting an uncompressed copy too."""
    for candidate in (root / name, root / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    raise DataError(f"{root / name}: Fashion-MNIST file not found; {MISSING_HINT}")


def load_fashion_mnist(root: str | Path | None = None) -> dict[str, np.ndarray]:
    """The four arrays: ``x_train`` (60000, 28, 28) uint8, ``y_train`` (60000,), ``x_test``, ``y_test``."""
    root = Path(root) if root is not None else DEFAULT_ROOT
    if not root.is_dir():
        raise DataError(f"{root}: Fashion-MNIST directory not found; {MISSING_HINT}")
    arrays = {key: read_idx(_find(root, name)) for key, name in FILES.items()}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{root}: {split} images {x.shape} and labels {y.shape} do not match")
        if x.dtype != np.uint8:
            raise DataError(f"{_find(root, FILES[f'x_{split}'])}: images of type {x.dtype}, expected uint8")
        labels_file = _find(root, FILES[f"y_{split}"])
        if not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{labels_file}: labels of type {y.dtype}, expected integers 0 to {len(CLASS_NAMES) - 1}")
        outside = y[(y < 0) | (y >= len(CLASS_NAMES))]
        if len(outside):
            raise DataError(f"{labels_file}: label {int(outside[0])}, expected 0 to {len(CLASS_NAMES) - 1}")
    return arrays


def build_fashion_mnist_lt(cfg: DataConfig) -> DatasetSplits:
    """Fashion-MNIST-LT: a seeded long-tailed subset of the training set.

    Validation: ``cfg.val_per_class`` images per class from the training images
    not in the subset (see :mod:`~longtail.data.holdout`). Test: the full
    balanced 10,000-image test set.
    """
    arrays = load_fashion_mnist(cfg.root)
    y_train = arrays["y_train"].astype(np.int64)
    num_classes = len(CLASS_NAMES)
    counts = longtail_counts(num_classes, cfg.n_max, cfg.imbalance_factor, cfg.profile)
    return in_memory_splits(
        "fashion_mnist_lt",
        cfg,
        images=arrays["x_train"][:, None],
        labels=y_train,
        subset=longtail_subset(y_train, counts, cfg.seed),
        test=(arrays["x_test"][:, None], arrays["y_test"].astype(np.int64)),
        num_classes=num_classes,
        class_names=list(CLASS_NAMES),
        info={"root": str(Path(cfg.root) if cfg.root else DEFAULT_ROOT)},
    )


SPEC = register_dataset(
    DatasetSpec(
        name="fashion_mnist_lt",
        create=build_fashion_mnist_lt,
        label="Fashion-MNIST-LT",
        summary="Fashion-MNIST's four IDX files in data.root (default: Debian's /usr/share/datasets/fashion-mnist), a "
        "long-tailed subset of its training set drawn the CIFAR-LT way; the full test set",
        draws_subset=True,
    )
)
