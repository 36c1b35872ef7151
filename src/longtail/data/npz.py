"""Any image dataset as one ``.npz`` file (``data.name=npz``, ``data.path=FILE``).

Arrays: ``x_train``, ``y_train``, ``x_test``, ``y_test`` and optionally
``x_val``, ``y_val`` and ``class_names``. Images are uint8, N x H x W (grey)
or N x H x W x C (C from 1 to 4, e.g. RGB); labels are integers 0 to C-1, every
class with at least one training image, and ``x_test`` (and ``x_val``) must not be
empty. The data is used as given (no long-tailed subsetting). Without ``x_val`` the validation split is
held out of the training images (at most a fifth of a class). The file is read
without pickle, so it cannot run code. Only the arrays above are read, and
each array's size is checked from its header before it is decompressed: an
array that is not what its role allows (labels that outnumber their images,
a header that declares more data than its member holds, more data in all than
this machine's memory) is refused unread, so a small file cannot make the
reader allocate gigabytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..config import DataConfig
from ..errors import DataError
from ..safe_npz import Header, Member, open_npz
from .class_names import decode_class_names
from .dataset import DatasetSplits
from .in_memory import in_memory_splits
from .longtail import first_missing_class
from .registry import DatasetSpec, register_dataset

MAX_NAME_BYTES = 4096  # one class name (NumPy stores 4 bytes per character): longer is not a name


def _check_images(path: Path, key: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
    """Images are uint8, N x H x W or N x H x W x C with C from 1 to 4."""
    if dtype != np.uint8 or len(shape) not in (3, 4):
        raise DataError(f"{path}: {key} is {dtype} of shape {shape}, expected uint8 N x H x W (x C)")
    if shape[1] < 1 or shape[2] < 1:
        raise DataError(f"{path}: {key} has shape {shape}, expected images of at least 1 x 1 pixels")
    if len(shape) == 4 and not 1 <= shape[3] <= 4:
        hint = "; it looks like N x C x H x W, transpose it to channels last" if shape[1] <= 4 else ""
        raise DataError(f"{path}: {key} has {shape[3]} channels (shape {shape}), expected 1 to 4{hint}")


def _check_labels(path: Path, key: str, shape: tuple[int, ...], dtype: np.dtype, count: int) -> None:
    """Labels are ``count`` integers, one per image of their split.

    By dtype kind: NumPy counts timedelta64 among its integer types, whose values then fail as labels.
    """
    if len(shape) != 1 or shape[0] != count or dtype.kind not in "iu":
        raise DataError(f"{path}: {key} is {dtype} of shape {shape}, expected {count} integer labels")


def _images(path: Path, key: str, array: np.ndarray) -> np.ndarray:
    """N x H x W or N x H x W x C uint8 -> (N, C, H, W)."""
    _check_images(path, key, array.shape, array.dtype)
    return array[:, None] if array.ndim == 3 else array.transpose(0, 3, 1, 2)


def _labels(path: Path, key: str, array: np.ndarray, count: int) -> np.ndarray:
    """(N,) integer labels >= 0, checked against the ``count`` images of their split; dtype kept."""
    _check_labels(path, key, array.shape, array.dtype, count)
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
    return decode_class_names(path, names.tolist())


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
    raw, splits = _read_members(path)
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


def _read_members(path: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    """The arrays the reader needs, each checked from its header before it is decompressed, and the splits.

    Members the reader does not use are never decompressed (:mod:`longtail.safe_npz`)."""
    with open_npz(path, what=".npz file (data.path)") as archive:
        splits = ["train", "test"] + (["val"] if "x_val" in archive or "y_val" in archive else [])
        keys = [f"{xy}_{split}" for split in splits for xy in "xy"]
        for key in keys:
            if key not in archive:
                raise DataError(f"{path}: no array {key!r}; expected x_train, y_train, x_test, y_test (x_val, y_val)")
        keys += ["class_names"] if "class_names" in archive else []
        headers = {key: _header(archive.header(key)) for key in keys}
        _check_roles(path, headers, splits)
        archive.check(keys)
        return {key: archive.read(key) for key in keys}, splits


def _header(member: Member) -> Header:
    return member.shape, member.dtype


def _check_roles(path: Path, headers: dict[str, Header], splits: list[str]) -> None:
    """Refuse, before decompressing anything, an array whose declared shape or dtype is absurd for its role."""
    for split in splits:
        images, labels = headers[f"x_{split}"], headers[f"y_{split}"]
        _check_images(path, f"x_{split}", *images)
        _check_labels(path, f"y_{split}", *labels, images[0][0])
    if "class_names" in headers:  # one name per class, every class with a training image
        shape, dtype = headers["class_names"]
        if len(shape) != 1 or shape[0] > headers["x_train"][0][0] or dtype.itemsize > MAX_NAME_BYTES:
            raise DataError(
                f"{path}: class_names is {dtype} of shape {shape}, expected at most one name per training image, "
                f"each under {MAX_NAME_BYTES // 4} characters"
            )


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


SPEC = register_dataset(
    DatasetSpec(
        name="npz",
        create=build_npz,
        label="images in an .npz",
        summary="uint8 images of every split in the .npz file data.path (x_train, y_train, x_test, y_test, optional "
        "x_val, y_val, class_names), used as given",
    )
)
