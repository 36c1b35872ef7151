"""Any image dataset as one ``.npz`` file (``data.name=npz``, ``data.path=FILE``).

Arrays: ``x_train``, ``y_train``, ``x_test``, ``y_test`` and optionally
``x_val``, ``y_val`` and ``class_names``. Images are uint8, N x H x W (grey)
or N x H x W x C (e.g. RGB); labels are integers 0 to C-1. The data is used as
given (no long-tailed subsetting). Without ``x_val`` the validation split is
held out of the training images (at most a fifth of a class). The file is read
without pickle, so it cannot run code.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..config import DataConfig
from ..errors import DataError
from .dataset import DatasetSplits
from .in_memory import in_memory_splits
from .registry import register_dataset


def _images(path: Path, key: str, array: np.ndarray) -> np.ndarray:
    """N x H x W or N x H x W x C uint8 -> (N, C, H, W)."""
    if array.dtype != np.uint8 or array.ndim not in (3, 4):
        raise DataError(f"{path}: {key} is {array.dtype} of shape {array.shape}, expected uint8 N x H x W (x C)")
    return array[:, None] if array.ndim == 3 else array.transpose(0, 3, 1, 2)


def _labels(path: Path, key: str, array: np.ndarray, count: int) -> np.ndarray:
    if array.ndim != 1 or len(array) != count or not np.issubdtype(array.dtype, np.integer):
        raise DataError(f"{path}: {key} is {array.dtype} of shape {array.shape}, expected {count} integer labels")
    if count and array.min() < 0:
        raise DataError(f"{path}: {key} holds label {int(array.min())}, expected labels >= 0")
    return array.astype(np.int64)


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of the file, images as (N, C, H, W) uint8 and labels as int64, checked."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: .npz file not found (data.path)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            raw = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: not a readable .npz file ({error.__class__.__name__}: {error})") from None
    splits = ["train", "test"] + (["val"] if "x_val" in raw or "y_val" in raw else [])
    for key in (f"{xy}_{split}" for split in splits for xy in "xy"):
        if key not in raw:
            raise DataError(f"{path}: no array {key!r}; expected x_train, y_train, x_test, y_test (x_val, y_val)")
    arrays: dict[str, np.ndarray] = {}
    for split in splits:
        images = _images(path, f"x_{split}", raw[f"x_{split}"])
        arrays[f"x_{split}"] = images
        arrays[f"y_{split}"] = _labels(path, f"y_{split}", raw[f"y_{split}"], len(images))
    shapes = {arrays[f"x_{s}"].shape[1:] for s in splits}
    if len(shapes) != 1:
        raise DataError(f"{path}: the splits' images differ in shape ({sorted(shapes)}); expected one (C, H, W)")
    if len(arrays["y_train"]) == 0:
        raise DataError(f"{path}: x_train is empty")
    if "class_names" in raw:
        arrays["class_names"] = raw["class_names"]
    return arrays


@register_dataset("npz")
def build_npz(cfg: DataConfig) -> DatasetSplits:
    """The dataset in the ``.npz`` file ``data.path``."""
    if cfg.path is None:
        raise DataError("data.path is not set: the npz reader needs the .npz file (data.path=FILE)")
    path = Path(cfg.path)
    arrays = load_npz(path)
    num_classes = int(arrays["y_train"].max()) + 1
    for split in ("val", "test"):
        if f"y_{split}" in arrays and len(arrays[f"y_{split}"]) and arrays[f"y_{split}"].max() >= num_classes:
            raise DataError(
                f"{path}: y_{split} holds label {int(arrays[f'y_{split}'].max())}, "
                f"but y_train has labels 0 to {num_classes - 1} only"
            )
    names = [str(n) for n in arrays.get("class_names", np.arange(num_classes))]
    if len(names) != num_classes:
        raise DataError(f"{path}: {len(names)} class_names for {num_classes} classes")
    val = (arrays["x_val"], arrays["y_val"]) if "x_val" in arrays else None
    return in_memory_splits(
        "npz:" + path.stem,
        cfg,
        images=arrays["x_train"],
        labels=arrays["y_train"],
        test=(arrays["x_test"], arrays["y_test"]),
        val=val,
        num_classes=num_classes,
        class_names=names,
        info={"path": str(path)},
    )
