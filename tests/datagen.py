"""Generated stand-ins for real datasets, in the real file formats.

- image files written by Pillow (JPEG or PNG) with ``relative/path label`` split
  files (the ImageNet-LT format) or in ``train/<class>/`` folders;
- CIFAR python pickles in the official layout (dicts with byte-string keys,
  (N, 3072) uint8 rows, pickle protocol 2);
- ``.npz`` files.

Images of class ``c`` are told apart by the colour of a centred block (a
palette of ten hues) and, for c >= 10, by stripes; noise and jitter make it
less trivial. ``noise`` raises the difficulty (the long-tail accuracy check
needs classes that overlap).
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

PALETTE = np.array(
    [
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [128, 128, 0],
        [250, 190, 212],
    ],
    dtype=np.int64,
)


def class_images(labels: Sequence[int], size: int, seed: int, noise: int = 60) -> np.ndarray:
    """(N, size, size, 3) uint8 images, one per label."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    images = rng.integers(0, noise + 1, size=(n, size, size, 3)).astype(np.int64) + 40
    for i, label in enumerate(labels):
        half = max(2, size // 3 + int(rng.integers(-1, 2)))
        top = size // 2 - half // 2 + int(rng.integers(-1, 2))
        left = size // 2 - half // 2 + int(rng.integers(-1, 2))
        images[i, top : top + half, left : left + half] = PALETTE[label % 10] + rng.integers(-noise, noise + 1, 3) // 2
        if label >= 10:
            images[i, :: 2 + (label // 10) % 3] //= 2
    return np.clip(images, 0, 255).astype(np.uint8)


def labels_for(counts: Sequence[int], seed: int = 0) -> np.ndarray:
    """Labels with ``counts[c]`` of class ``c``, shuffled."""
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(len(counts)), counts))


def write_images(
    root: Path, folder: str, labels: Sequence[int], *, size: int = 24, seed: int = 0, fmt: str = "jpg", noise: int = 60
) -> list[tuple[str, int]]:
    """Write one image file per label under ``root/folder/<label>/``; returns (relative path, label) pairs."""
    pairs = []
    for i, (label, array) in enumerate(zip(labels, class_images(labels, size, seed, noise), strict=True)):
        rel = f"{folder}/{int(label):03d}/img_{i:05d}.{fmt}"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(root / rel, quality=90) if fmt == "jpg" else Image.fromarray(array).save(root / rel)
        pairs.append((rel, int(label)))
    return pairs


def write_list(path: Path, pairs: list[tuple[str, int]]) -> Path:
    """A split file: one ``relative/path label`` per line."""
    path.write_text("".join(f"{rel} {label}\n" for rel, label in pairs))
    return path


def write_filelist_dataset(
    root: Path,
    train_counts: Sequence[int],
    test_per_class: int = 5,
    val_per_class: int | None = None,
    *,
    size: int = 24,
    seed: int = 0,
    fmt: str = "jpg",
    noise: int = 60,
) -> dict[str, Path]:
    """Images under ``root`` and split files ``root/lists/{train,val,test}.txt`` (val only if asked for)."""
    num_classes = len(train_counts)
    (root / "lists").mkdir(parents=True, exist_ok=True)
    lists = {}
    splits = {"train": labels_for(train_counts, seed), "test": labels_for([test_per_class] * num_classes, seed + 1)}
    if val_per_class is not None:
        splits["val"] = labels_for([val_per_class] * num_classes, seed + 2)
    for offset, (split, labels) in enumerate(splits.items()):
        pairs = write_images(root, split, labels, size=size, seed=seed + 10 * offset, fmt=fmt, noise=noise)
        lists[split] = write_list(root / "lists" / f"{split}.txt", pairs)
    return lists


def write_imagefolder_dataset(
    root: Path,
    class_names: Sequence[str],
    train_counts: Sequence[int],
    test_per_class: int = 3,
    val_per_class: int | None = None,
    *,
    size: int = 20,
    fmt: str = "png",
) -> Path:
    """``root/train/<name>/``, ``root/test/<name>/`` (and ``root/val``) image folders."""
    splits = {"train": list(train_counts), "test": [test_per_class] * len(class_names)}
    if val_per_class is not None:
        splits["val"] = [val_per_class] * len(class_names)
    for offset, (split, counts) in enumerate(splits.items()):
        for label, (name, count) in enumerate(zip(class_names, counts, strict=True)):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i, array in enumerate(class_images([label] * count, size, 100 * offset + label)):
                Image.fromarray(array).save(folder / f"{i:04d}.{fmt}")
    return root


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=2)


def write_cifar(root: Path, kind: str, train_per_class: int, test_per_class: int, seed: int = 0) -> Path:
    """CIFAR-10 (``kind`` "cifar10") or CIFAR-100 pickles in the official layout under ``root``."""
    num_classes = 10 if kind == "cifar10" else 100
    label_key = b"labels" if kind == "cifar10" else b"fine_labels"

    def batch(labels: np.ndarray, s: int) -> dict:
        images = class_images(labels, 32, s)  # (N, 32, 32, 3)
        rows = images.transpose(0, 3, 1, 2).reshape(len(labels), 3072)  # R plane, G plane, B plane
        entry = {b"batch_label": b"generated", label_key: labels.tolist(), b"data": rows}
        entry[b"filenames"] = [f"img_{i}.png".encode() for i in range(len(labels))]
        if kind == "cifar100":
            entry[b"coarse_labels"] = (labels // 5).tolist()
        return entry

    train = labels_for([train_per_class] * num_classes, seed)
    test = labels_for([test_per_class] * num_classes, seed + 1)
    if kind == "cifar10":
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True, exist_ok=True)
        for i, part in enumerate(np.array_split(train, 5), 1):
            _dump(folder / f"data_batch_{i}", batch(part, seed + i))
        _dump(folder / "test_batch", batch(test, seed + 9))
        _dump(folder / "batches.meta", {b"label_names": [f"class{c}".encode() for c in range(10)]})
    else:
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True, exist_ok=True)
        _dump(folder / "train", batch(train, seed + 1))
        _dump(folder / "test", batch(test, seed + 9))
        names = {b"fine_label_names": [f"fine{c}".encode() for c in range(100)]}
        names[b"coarse_label_names"] = [f"coarse{c}".encode() for c in range(20)]
        _dump(folder / "meta", names)
    return root


def write_npz(
    path: Path,
    train_counts: Sequence[int],
    test_per_class: int = 5,
    val_per_class: int | None = None,
    *,
    size: int = 16,
    channels: int | None = 3,
    seed: int = 0,
    noise: int = 60,
) -> Path:
    """An ``.npz`` dataset; ``channels`` None writes N x H x W grey images."""
    arrays = {}
    splits = {"train": list(train_counts), "test": [test_per_class] * len(train_counts)}
    if val_per_class is not None:
        splits["val"] = [val_per_class] * len(train_counts)
    for offset, (split, counts) in enumerate(splits.items()):
        labels = labels_for(counts, seed + offset)
        images = class_images(labels, size, seed + 10 * offset, noise)
        if channels is None:
            images = images.mean(axis=3).astype(np.uint8)
        elif channels != 3:
            images = images[..., :channels]
        arrays[f"x_{split}"], arrays[f"y_{split}"] = images, labels
    np.savez(path, **arrays)
    return path
