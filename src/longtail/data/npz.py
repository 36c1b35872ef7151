"""Any image dataset as one ``.npz`` file (``data.name=npz``, ``data.path=FILE``).

Arrays: ``x_train``, ``y_train``, ``x_test``, ``y_test`` and optionally
``x_val``, ``y_val`` and ``class_names``. Images are uint8, N x H x W (grey)
or N x H x W x C (C from 1 to 4, e.g. RGB); labels are integers 0 to C-1, every
class with at least one training image, and ``x_test`` (and ``x_val``) must not be
empty. The data is used as given (no long-tailed subsetting). Without ``x_val`` the validation split is
held out of the training images (at most a fifth of a class). The file is read
without pickle, so it cannot run code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..config import DataConfig
from ..errors import DataError
from .dataset import DatasetSplits
from .in_memory import in_memory_splits
from .longtail import first_missing_class
from .registry import register_dataset


def _images(path: Path, key: str, array: np.ndarray) -> np.ndarray:
    """N x H x W or N x H x W x C uint8 -> (N, C, H, W)."""
    if array.dtype != np.uint8 or array.ndim not in (3, 4):
        raise DataError(f"{path}: {key} is {array.dtype} of shape {array.shape}, expected uint8 N x H x W (x C)")
    if array.shape[1] < 1 or array.shape[2] < 1:
        raise DataError(f"{path}: {key} has shape {array.shape}, expected images of at least 1 x 1 pixels")
    if array.ndim == 4 and not 1 <= array.shape[3] <= 4:
        hint = "; it looks like N x C x H x W, transpose it to channels last" if array.shape[1] <= 4 else ""
        raise DataError(f"{path}: {key} has {array.shape[3]} channels (shape {array.shape}), expected 1 to 4{hint}")
    return array[:, None] if array.ndim == 3 else array.transpose(0, 3, 1, 2)


def _labels(path: Path, key: str, array: np.ndarray, count: int) -> np.ndarray:
    """(N,) integer labels >= 0, checked against the ``count`` images of their split; dtype kept."""
    if array.ndim != 1 or len(array) != count or not np.issubdtype(array.dtype, np.integer):
        raise DataError(f"{path}: {key} is {array.dtype} of shape {array.shape}, expected {count} integer labels")
    if count and array.min() < 0:
        raise DataError(f"{path}: {key} holds label {int(array.min())}, expected labels >= 0")
    return array


def _class_names(path: Path, raw: dict[str, Any], num_classes: int) -> list[str]:
    if "class_names" not in raw:
        return [str(c) for c in range(num_classes)]
    names = raw["class_names"]
    if not isinstance(names, np.ndarray) or names.ndim != 1 or len(names) != num_classes:
        shape = getattr(names, "shape", None)
        raise DataError(f"{path}: class_names has shape {shape}, expected {num_classes} names (one per class)")
    return [str(n) for n in names]


def load_npz(path: str | Path) -> dict[str, Any]:
    """The arrays of the file, checked: images as (N, C, H, W) uint8, labels as (N,) int64.

    Also ``num_classes`` (the largest training label + 1; every class below it
    must have a training image) and ``class_names``.

    Raises:
        DataError: naming the file and the array that is missing or malformed.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: .npz file not found (data.path)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not hasattr(archive, "files"):
                raise DataError(f"{path}: a single .npy array, expected an .npz archive of x_train, y_train, ...")
            raw = {key: archive[key] for key in archive.files}
    except DataError:
        raise
    except Exception as error:  # noqa: BLE001 - NumPy and zipfile raise many types for a damaged archive
        raise DataError(f"{path}: not a readable .npz file ({error.__class__.__name__}: {error})") from None
    splits = ["train", "test"] + (["val"] if "x_val" in raw or "y_val" in raw else [])
    for key in (f"{xy}_{split}" for split in splits for xy in "xy"):
        if key not in raw:
            raise DataError(f"{path}: no array {key!r}; expected x_train, y_train, x_test, y_test (x_val, y_val)")
        if not isinstance(raw[key], np.ndarray):  # a member that is not a .npy file comes back as bytes
            raise DataError(f"{path}: {key} is not a NumPy array (.npy member)")
    arrays: dict[str, Any] = {}
    for split in splits:
        images = _images(path, f"x_{split}", raw[f"x_{split}"])
        arrays[f"x_{split}"] = images
        arrays[f"y_{split}"] = _labels(path, f"y_{split}", raw[f"y_{split}"], len(images))
    shapes = {arrays[f"x_{s}"].shape[1:] for s in splits}
    if len(shapes) != 1:
        raise DataError(f"{path}: the splits' images differ in shape ({sorted(shapes)}); expected one (C, H, W)")
    y_train = arrays["y_train"]
    if len(y_train) == 0:
        raise DataError(f"{path}: x_train is empty")
    missing = first_missing_class(y_train)
    if missing is not None:
        raise DataError(
            f"{path}: class {missing} has no training image in y_train (labels run up to {int(y_train.max())}); "
            "expected labels 0 to C-1 with every class in the training split"
        )
    num_classes = int(y_train.max()) + 1
    for split in splits[1:]:
        labels = arrays[f"y_{split}"]
        if len(labels) and labels.max() >= num_classes:
            raise DataError(
                f"{path}: y_{split} holds label {int(labels.max())}, but y_train has labels 0 to {num_classes - 1} only"
            )
    for split in splits:
        arrays[f"y_{split}"] = arrays[f"y_{split}"].astype(np.int64)
    arrays["num_classes"] = num_classes
    arrays["class_names"] = _class_names(path, raw, num_classes)
    return arrays


@register_dataset("npz")
def build_npz(cfg: DataConfig) -> DatasetSplits:
    """The dataset in the ``.npz`` file ``data.path``."""
    if cfg.path is None:
        raise DataError("data.path is not set: the npz reader needs the .npz file (data.path=FILE)")
    path = Path(cfg.path)
    arrays = load_npz(path)
    num_classes = arrays["num_classes"]
    val = (arrays["x_val"], arrays["y_val"]) if "x_val" in arrays else None
    return in_memory_splits(
        "npz:" + path.stem,
        cfg,
        images=arrays["x_train"],
        labels=arrays["y_train"],
        test=(arrays["x_test"], arrays["y_test"]),
        val=val,
        num_classes=num_classes,
        class_names=arrays["class_names"],
        info={"path": str(path)},
    )
