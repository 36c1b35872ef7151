"""CIFAR-10 and CIFAR-100 from the official python pickles, and their long-tailed subsets (CIFAR-LT).

Layout in ``data.root`` (what ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``
unpack to; ``data.root`` may also be that folder itself)::

    cifar-10-batches-py/data_batch_1 ... data_batch_5, test_batch, batches.meta
    cifar-100-python/train, test, meta

Each pickle is a dict with byte-string keys: ``b"data"`` (N, 3072) uint8 rows
(1024 red, 1024 green, 1024 blue values, row-major 32x32), and ``b"labels"``
(CIFAR-10) or ``b"fine_labels"`` (CIFAR-100). They are read with an unpickler
that only rebuilds NumPy arrays and plain containers, so a tampered file cannot
run code.

CIFAR-LT (Cao et al. 2019): ``n_i = int(n_max * IF^(-i / (C - 1)))`` images of
class ``i`` from the training set after a seeded shuffle; with ``data.n_max`` 5000
(CIFAR-10) or 500 (CIFAR-100) and imbalance factor 100 that is 12,406 and 10,847
images. Validation comes from the training images the subset leaves unused;
where a class has none (class 0 is used whole at ``n_max`` = its size) its 20
are held out of its training images (see :mod:`~longtail.data.holdout`). Test: the
balanced official test set.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import DataConfig
from ..errors import DataError
from .dataset import DatasetSplits
from .in_memory import in_memory_splits
from .longtail import class_counts, longtail_counts, longtail_subset
from .registry import DatasetSpec, register_dataset

DOWNLOAD_HINT = "download {archive} from https://www.cs.toronto.edu/~kriz/cifar.html and unpack it into data.root"


@dataclass(frozen=True)
class CifarLayout:
    """Where one CIFAR variant keeps what, as its official archive unpacks."""

    folder: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: bytes
    names_key: bytes
    num_classes: int
    per_class: int  # training images per class
    archive: str


CIFAR = {
    "cifar10": CifarLayout(
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test_batch",
        "batches.meta",
        b"labels",
        b"label_names",
        10,
        5000,
        "cifar-10-python.tar.gz",
    ),
    "cifar100": CifarLayout(
        "cifar-100-python",
        ("train",),
        "test",
        "meta",
        b"fine_labels",
        b"fine_label_names",
        100,
        500,
        "cifar-100-python.tar.gz",
    ),  # fmt: skip
}

# What an official CIFAR pickle may reference: NumPy's array rebuild machinery (module
# names of NumPy 1 and 2) and nothing else.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_pickle(path: Path) -> dict[bytes, Any]:
    """One CIFAR pickle as a dict with byte-string keys."""
    try:
        with open(path, "rb") as handle:
            obj = _SafeUnpickler(handle, encoding="bytes").load()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as error:
        raise DataError(f"{path}: not a CIFAR python pickle ({error})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: not a CIFAR python pickle (a {type(obj).__name__}, expected a dict)")
    # Files pickled by Python 3 may have str keys; accept both.
    return {k.encode() if isinstance(k, str) else k: v for k, v in obj.items()}


def _folder(root: str | None, kind: str) -> Path:
    layout = CIFAR[kind]
    folder_name = layout.folder
    if root is None:
        raise DataError(f"data.root is not set: the {kind}_lt reader needs the directory holding {folder_name}/")
    root_path = Path(root)
    for candidate in (root_path / folder_name, root_path):
        if (candidate / layout.test_file).is_file():
            return candidate
    raise DataError(
        f"{root_path / folder_name}: CIFAR folder not found (no {layout.test_file}); "
        + DOWNLOAD_HINT.format(archive=layout.archive)
    )


def _read_batches(
    folder: Path, files: tuple[str, ...], label_key: bytes, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 of the pickles ``files``."""
    images, labels = [], []
    for name in files:
        path = folder / name
        batch = read_pickle(path)
        if b"data" not in batch or label_key not in batch:
            raise DataError(f"{path}: no {b'data'!r} and {label_key!r} entries; not a CIFAR pickle of this kind")
        data = np.asarray(batch[b"data"])
        y = np.asarray(batch[label_key])
        if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or len(y) == 0):
            raise DataError(f"{path}: {label_key!r} is {y.dtype} of shape {y.shape}, expected a list of integer labels")
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(y):
            raise DataError(
                f"{path}: expected uint8 data of shape (N, 3072) and N labels, got {data.dtype} {data.shape}, {len(y)}"
            )
        outside = y[(y < 0) | (y >= num_classes)]
        if len(outside):
            raise DataError(f"{path}: label {int(outside[0])}, expected 0 to {num_classes - 1}")
        y = y.astype(np.int64)
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels)


def _class_names(folder: Path, meta: str, key: bytes, num_classes: int) -> list[str]:
    names = read_pickle(folder / meta).get(key)
    if not isinstance(names, list) or len(names) != num_classes:
        raise DataError(f"{folder / meta}: expected {num_classes} class names under {key!r}")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def load_cifar(root: str | None, kind: str) -> dict[str, Any]:
    """``x_train`` (50000, 3, 32, 32) uint8, ``y_train``, ``x_test``, ``y_test``, ``class_names``, ``folder``."""
    layout = CIFAR[kind]
    folder = _folder(root, kind)
    x_train, y_train = _read_batches(folder, layout.train_files, layout.label_key, layout.num_classes)
    x_test, y_test = _read_batches(folder, (layout.test_file,), layout.label_key, layout.num_classes)
    return {
        "x_train": x_train,
        "y_train": y_train,
        "x_test": x_test,
        "y_test": y_test,
        "class_names": _class_names(folder, layout.meta_file, layout.names_key, layout.num_classes),
        "folder": folder,
    }


def build_cifar_lt(cfg: DataConfig, kind: str) -> DatasetSplits:
    """CIFAR-10-LT or CIFAR-100-LT (``kind`` "cifar10" / "cifar100") as configured by ``cfg``."""
    arrays = load_cifar(cfg.root, kind)
    num_classes, full = CIFAR[kind].num_classes, CIFAR[kind].per_class
    available = int(class_counts(arrays["y_train"], num_classes).min())
    if cfg.n_max > available:
        raise DataError(
            f"data.n_max={cfg.n_max}: {kind} has only {available} training images in its smallest class; "
            f"the {kind.upper()}-LT benchmark uses data.n_max={full}"
        )
    counts = longtail_counts(num_classes, cfg.n_max, cfg.imbalance_factor, cfg.profile)
    subset = longtail_subset(arrays["y_train"], counts, cfg.seed)
    return in_memory_splits(
        f"{kind}_lt",
        cfg,
        images=arrays["x_train"],
        labels=arrays["y_train"],
        subset=subset,
        test=(arrays["x_test"], arrays["y_test"]),
        num_classes=num_classes,
        class_names=arrays["class_names"],
        info={"root": str(arrays["folder"]), "subset_images": int(sum(counts))},
    )


def build_cifar10_lt(cfg: DataConfig) -> DatasetSplits:
    """CIFAR-10-LT from ``cifar-10-batches-py`` in ``data.root``."""
    return build_cifar_lt(cfg, "cifar10")


def build_cifar100_lt(cfg: DataConfig) -> DatasetSplits:
    """CIFAR-100-LT from ``cifar-100-python`` in ``data.root``."""
    return build_cifar_lt(cfg, "cifar100")


CIFAR10 = register_dataset(
    DatasetSpec(
        name="cifar10_lt",
        label="CIFAR-10-LT",
        summary="CIFAR-10's python pickles (cifar-10-batches-py) in data.root, a long-tailed subset drawn the CIFAR-LT "
        "way",
        create=build_cifar10_lt,
        draws_subset=True,
    )
)
CIFAR100 = register_dataset(
    DatasetSpec(
        name="cifar100_lt",
        label="CIFAR-100-LT",
        summary="CIFAR-100's python pickles (cifar-100-python) in data.root, a long-tailed subset drawn the "
        "CIFAR-LT way",
        create=build_cifar100_lt,
        draws_subset=True,
    )
)
