"""Precomputed features as a dataset (``data.name=features``, ``data.path=FILE``): the second half of the recipe
on a representation learned elsewhere.

The file is an ``.npz`` archive or a ``.pt`` file (``torch.save`` of a dict of
tensors) holding ``x_train`` (N, d) float, ``y_train`` (N,) int, ``x_test``,
``y_test`` and optionally ``x_val``, ``y_val`` and ``class_names``; float16,
float32 and float64 are accepted. float16 stays float16 in memory (half the
bytes: ``longtail features RUN --dtype float16`` writes such a file) and each
batch or row chunk is cast to float32 for the arithmetic
(:mod:`longtail.engine.feature_rows`); float64 is held as float32. Labels are 0 to C-1, every
class with at least one training vector. Without ``x_val`` the validation split
is held out of the training vectors, class-balanced, as for the image readers
(:mod:`longtail.data.holdout`), never from test. The features are used as given:
no normalisation, no augmentation (the batch transform is the identity).

``joint_weight`` (C, d) and ``joint_bias`` (C,), written by ``longtail
features``, are the run's joint classifier; ``model.joint=file`` makes it the
joint classifier of the new run (:func:`read_joint`).

Reading never unpickles and never decompresses what it does not use: an ``.npz``
goes through :func:`~longtail.safe_npz.open_npz` (each member's header checked
before it is read; only the entries above are read), a ``.pt`` through
``torch.load(weights_only=True)`` after its zip directory is checked (every entry
stored uncompressed, so what is loaded is no larger than the file).

Memory: the file is read once, into memory, and not memory-mapped: a mapped file
that another program rewrites while longtail trains on it would end the process
with SIGBUS and no message; a copy cannot change under the reader. A file is
refused, before it is read, when it declares more data than this machine's
memory. A float64 file copies to float32, a held-out validation split copies the
training rows it keeps; float16 and float32 are used as read.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import DataConfig
from ..errors import DataError
from ..safe_npz import memory_bytes, open_npz
from ..safe_torch import load_tensors
from .class_names import decode_class_names
from .dataset import DatasetSplits, TensorPairDataset
from .holdout import holdout_validation, require_evaluation_images
from .longtail import first_missing_class
from .registry import DatasetSpec, register_dataset

FLOAT_DTYPES = (torch.float16, torch.float32, torch.float64)
CHUNK_VALUES = 1 << 20  # values checked for NaN / inf at a time: small temporaries (see engine.feature_rows)
DATA_KEYS = tuple(f"{xy}_{split}" for split in ("train", "val", "test") for xy in "xy")


class FeatureDataset(TensorPairDataset):
    """Feature vectors held in memory: (N, d) float32 or float16 with (N,) int64 labels; items and batches
    come out float32.

    Items are (d,) vectors. Nothing is augmented or normalised: the batch
    transform of such a dataset is the identity
    (:class:`~longtail.data.transforms.FeatureTransform`).
    """

    holds_features = True
    per_item_augmentation = False

    @property
    def image_shape(self) -> tuple[int]:
        """(d,): the shape of one item, where the image datasets have (C, H, W)."""
        return (int(self.inputs.shape[1]),)

    def set_epoch(self, epoch: int, seed: int = 0) -> None:
        """Nothing to do: features are not augmented."""

    def eval_view(self) -> FeatureDataset:
        """The dataset as seen at test time: itself."""
        return self


def _read(path: Path, wanted: Callable[[list[str]], list[str]]) -> dict[str, Any]:
    """The entries ``wanted(names)`` picks of the file's entries: NumPy arrays (.npz), tensors and lists (.pt)."""
    if path.suffix.lower() == ".pt":  # F.PT too: read as an .npz, it was "not an .npz file"
        loaded = _read_pt(path)
        return {key: loaded[key] for key in wanted(list(loaded)) if key in loaded}
    with open_npz(path, what="features file (data.path)") as archive:
        keys = [key for key in wanted(archive.names) if key in archive]
        archive.check(keys)  # before any is decompressed: each within its member, all within memory
        return {key: archive.read(key) for key in keys}


def _read_pt(path: Path) -> dict[str, Any]:
    """A ``.pt`` file's dict, loaded into memory (not mapped) without pickle, after its zip directory is checked."""
    if not path.is_file():
        raise DataError(f"{path}: features file not found (data.path)")
    _check_pt_entries(path)
    try:
        loaded = load_tensors(path)
    except Exception as error:  # noqa: BLE001 - torch raises many types for files it refuses
        raise DataError(
            f"{path}: not a .pt file of tensors readable without pickle ({error.__class__.__name__})"
        ) from None
    if not isinstance(loaded, dict):
        raise DataError(f"{path}: holds a {type(loaded).__name__}, expected a dict of x_train, y_train, ...")
    return loaded


def _check_pt_entries(path: Path) -> None:
    """``torch.save`` stores every entry uncompressed: a compressed one could inflate without bound, so it is
    refused, and the file must fit in memory (it is read whole)."""
    size = path.stat().st_size
    memory = memory_bytes()
    if memory and size > memory:
        raise DataError(f"{path}: {size / 2**30:.1f} GiB, more than this machine's memory (the file is read whole)")
    if not zipfile.is_zipfile(path):
        return  # the legacy format: a plain pickle stream, nothing compressed
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise DataError(f"{path}: not a readable .pt file ({error.__class__.__name__})") from None
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
            raise DataError(f"{path}: entry {info.filename[:80]!r} is compressed; torch.save stores entries raw")


def _tensor(path: Path, key: str, value: Any) -> Any:
    """A ``.pt`` entry as a plain dense tensor (detached), or ``value`` as it is when it is no tensor."""
    if not isinstance(value, torch.Tensor):
        return value
    if value.layout != torch.strided:
        raise DataError(f"{path}: {key} is a {value.layout} tensor, expected a dense one (save tensor.to_dense())")
    if value.is_quantized or value.is_complex():
        raise DataError(f"{path}: {key} is a {value.dtype} tensor, expected real numbers")
    # Strides may address fewer bytes than the shape declares (a stride-0 view of one value as 10**12 rows):
    # copying such a tensor would allocate what the file never held.
    needed = value.numel() * value.element_size()
    if needed > value.untyped_storage().nbytes() and value.numel() > 0:
        raise DataError(
            f"{path}: {key} has shape {tuple(value.shape)} ({needed:,} bytes) over a storage of "
            f"{value.untyped_storage().nbytes():,} bytes (overlapping strides); expected a plain tensor"
        )
    return value.detach()


def _features(path: Path, key: str, value: Any) -> torch.Tensor:
    """(N, d) float32 or float16 with d >= 1, checked finite; float32 and float16 are kept as they are (no copy),
    float64 becomes float32."""
    value = _tensor(path, key, value)
    if isinstance(value, np.ndarray) and value.dtype.kind == "f" and not value.dtype.isnative:
        value = value.astype(value.dtype.newbyteorder("="))  # big-endian: torch.from_numpy refuses other byte orders
    tensor = torch.from_numpy(value) if isinstance(value, np.ndarray) and value.dtype.kind == "f" else value
    if not isinstance(tensor, torch.Tensor) or tensor.dtype not in FLOAT_DTYPES or tensor.dim() != 2:
        dtype, shape = getattr(value, "dtype", type(value).__name__), tuple(getattr(value, "shape", ()))
        raise DataError(f"{path}: {key} is {dtype} of shape {shape}, expected float16/32/64 features of shape (N, d)")
    if tensor.shape[1] == 0:
        raise DataError(f"{path}: {key} has shape {tuple(tensor.shape)}: no feature per row; expected d >= 1")
    source, tensor = tensor, tensor if tensor.dtype == torch.float16 else tensor.to(torch.float32)
    rows = max(1, CHUNK_VALUES // tensor.shape[1])
    for start in range(0, len(tensor), rows):
        bad = ~torch.isfinite(tensor[start : start + rows])
        if bad.any():
            row = start + int(bad.any(1).nonzero()[0])
            if torch.isfinite(source[row]).all():  # finite float64 that the float32 it is held as cannot hold
                largest = f"{torch.finfo(torch.float32).max:.4g}"
                raise DataError(f"{path}: {key} row {row} holds values beyond float32's range ({largest}), in which "
                                "features are held; expected finite features within it")  # fmt: skip
            raise DataError(f"{path}: {key} row {row} holds NaN or infinite values; expected finite features")
    return tensor


def _labels(path: Path, key: str, value: Any, count: int) -> np.ndarray:
    """(N,) int64 labels >= 0 of a split with ``count`` feature vectors.

    uint64 labels beyond int64 are refused here: cast, they would wrap to negative labels (2**64 - 1 to -1).
    """
    value = _tensor(path, key, value)
    array = value.numpy() if isinstance(value, torch.Tensor) else value
    ok = isinstance(array, np.ndarray) and array.ndim == 1 and len(array) == count
    if not ok or array.dtype.kind not in "iu":  # by kind: NumPy counts timedelta64 among its integers
        dtype, shape = getattr(value, "dtype", type(value).__name__), tuple(getattr(value, "shape", ()))
        raise DataError(f"{path}: {key} is {dtype} of shape {shape}, expected {count} integer labels (one per row)")
    if count and array.min() < 0:
        raise DataError(f"{path}: {key} holds label {int(array.min())}, expected labels >= 0")
    if count and int(array.max()) > np.iinfo(np.int64).max:
        raise DataError(f"{path}: {key} holds label {int(array.max())}, expected class indices 0 to C-1")
    return array.astype(np.int64)


def _class_names(path: Path, raw: dict[str, Any], num_classes: int) -> list[str]:
    if "class_names" not in raw:
        return [str(c) for c in range(num_classes)]
    names = raw["class_names"]
    if isinstance(names, np.ndarray) and names.ndim == 1:
        names = names.tolist()
    if not isinstance(names, (list, tuple)) or len(names) != num_classes:
        raise DataError(f"{path}: class_names has {_length(names)} entries, expected {num_classes} (one per class)")
    return decode_class_names(path, names)


def _length(value: Any) -> str:
    return str(len(value)) if isinstance(value, Sequence) else f"shape {getattr(value, 'shape', '?')}"


def _num_classes(path: Path, labels: dict[str, np.ndarray]) -> int:
    """C: the largest training label + 1; every class below it must have a training vector."""
    y_train = labels["train"]
    if len(y_train) == 0:
        raise DataError(f"{path}: x_train is empty")
    missing = first_missing_class(y_train)
    if missing is not None:
        raise DataError(
            f"{path}: class {missing} has no training vector in y_train (labels run up to {int(y_train.max())}); "
            "expected labels 0 to C-1 with every class in the training split"
        )
    num_classes = int(y_train.max()) + 1
    for split, y in labels.items():
        if len(y) and y.max() >= num_classes:
            raise DataError(
                f"{path}: y_{split} holds label {int(y.max())}, but y_train has labels 0 to {num_classes - 1} only"
            )
    return num_classes


def load_features(path: str | Path) -> dict[str, Any]:
    """The checked contents of a features file.

    Returns:
        ``{"x": {split: (N, d) float32 or float16}, "y": {split: (N,) int64 array}, "num_classes", "class_names"}``
        with splits ``train``, ``test`` and ``val`` when the file has one.

    Raises:
        DataError: one line naming the file and the entry that is missing or malformed.
    """
    path = Path(path)
    raw = _read(path, lambda names: [*DATA_KEYS, "class_names"])
    splits = ["train", "test"] + (["val"] if "x_val" in raw or "y_val" in raw else [])
    for key in (f"{xy}_{split}" for split in splits for xy in "xy"):
        if key not in raw:
            raise DataError(f"{path}: no entry {key!r}; expected x_train, y_train, x_test, y_test (x_val, y_val)")
    x = {split: _features(path, f"x_{split}", raw[f"x_{split}"]) for split in splits}
    y = {split: _labels(path, f"y_{split}", raw[f"y_{split}"], len(x[split])) for split in splits}
    dims = {split: int(x[split].shape[1]) for split in splits}
    if len(set(dims.values())) != 1:
        found = ", ".join(f"x_{split} has {d}" for split, d in dims.items())
        raise DataError(f"{path}: the splits' feature dimensions differ ({found}); expected one d")
    num_classes = _num_classes(path, y)
    return {
        "x": x,
        "y": y,
        "num_classes": num_classes,
        "class_names": _class_names(path, raw, num_classes),
    }


def read_joint(path: str | Path, num_classes: int, num_features: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The joint classifier a features file carries: ``joint_weight`` (C, d) and ``joint_bias`` (C,), float32.

    Raises:
        DataError: when the file lacks them, or their shapes do not fit the file's classes and features.
    """
    path = Path(path)
    raw = _read(path, lambda names: ["joint_weight", "joint_bias"])
    if "joint_weight" not in raw or "joint_bias" not in raw:
        raise DataError(
            f"{path}: no joint_weight / joint_bias (model.joint=file reads the joint classifier from data.path; "
            "`longtail features RUN` writes them), or use model.joint=train to train a linear probe"
        )
    weight = _features(path, "joint_weight", raw["joint_weight"])
    bias = raw["joint_bias"]
    bias = bias.reshape(1, -1) if isinstance(bias, (np.ndarray, torch.Tensor)) and bias.ndim == 1 else bias
    bias = _features(path, "joint_bias", bias)[0]
    if tuple(weight.shape) != (num_classes, num_features) or len(bias) != num_classes:
        raise DataError(
            f"{path}: joint_weight has shape {tuple(weight.shape)} and joint_bias {tuple(bias.shape)}, expected "
            f"({num_classes}, {num_features}) and ({num_classes},): {num_classes} classes, {num_features} features"
        )
    return weight.float().clone(), bias.float().clone()


def features_dataset_name(path: str | Path) -> str:
    """The dataset name of a features file, as tables and reports show it: ``features (FILE)``.

    The file's whole name, suffix included: ``features (inat.npz)``, and ``features (features.npz)`` for a file
    literally called so (the ``kind:stem`` form of the image readers would read ``features:features``).
    """
    return f"features ({Path(path).name})"


def _holdout(cfg: DataConfig, x: torch.Tensor, y: np.ndarray, num_classes: int) -> tuple[Any, Any, str]:
    """(train, val) datasets and where val came from: up to ``data.val_per_class`` vectors of each class."""
    holdout = holdout_validation(y, None, cfg.val_per_class, num_classes, cfg.seed + 1)
    train = FeatureDataset(x[torch.from_numpy(holdout.train)], torch.from_numpy(y[holdout.train]))
    val = FeatureDataset(x[torch.from_numpy(holdout.val)], torch.from_numpy(y[holdout.val]))
    return train, val, holdout.describe()


def build_features(cfg: DataConfig) -> DatasetSplits:
    """The features in the file ``data.path``."""
    if cfg.path is None:
        raise DataError("data.path is not set: the features reader needs the .npz or .pt file (data.path=FILE)")
    path = Path(cfg.path)
    loaded = load_features(path)
    x, y, num_classes = loaded["x"], loaded["y"], loaded["num_classes"]
    name = features_dataset_name(path)
    if "val" in x:
        train = FeatureDataset(x["train"], torch.from_numpy(y["train"]))
        val = FeatureDataset(x["val"], torch.from_numpy(y["val"]))
        val_source = "the file's own validation split (x_val, y_val)"
    else:
        train, val, val_source = _holdout(cfg, x["train"], y["train"], num_classes)
    test = FeatureDataset(x["test"], torch.from_numpy(y["test"]))
    require_evaluation_images(name, val.labels, test.labels, held_out="val" not in x, unit="vectors")
    info = {
        "path": str(path),
        "val_source": val_source,
        "feature_dim": int(x["train"].shape[1]),
    }
    return DatasetSplits(name, train, val, test, num_classes, loaded["class_names"], (), (), info)


SPEC = register_dataset(
    DatasetSpec(
        name="features",
        create=build_features,
        label="feature vectors",
        summary="precomputed feature vectors of every split in the .npz or .pt file data.path (no backbone: "
        "model.backbone=identity)",
        holds_features=True,
    )
)
