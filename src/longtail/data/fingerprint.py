"""What each split of a dataset holds, as one SHA-256: the data half of an artifact's provenance.

A split's fingerprint is computed from what the reader produced, not from
where it came from, so every reader is covered the same way and a moved copy
of the same data keeps its fingerprint:

- in-memory splits (Fashion-MNIST, CIFAR, ``.npz`` images, feature vectors):
  the bytes of the inputs (their dtype and shape too) and of the labels, after
  the long-tailed subset and the validation hold-out were drawn;
- image files (``filelist``, ``imagefolder``): every image's path relative to
  the data root, its label, size and modification time (the files are not
  read again: a changed size or time stands for a changed file).

Hashing runs at about 1 GB/s a core and releases the GIL, so
:func:`begin_fingerprints` starts it in background threads as soon as the
dataset is built, and :func:`data_fingerprints` waits for it only when the
answer is needed (437,513 feature vectors of 2,048 float32: 3.6 GB, about 3 s
on one core, overlapped with the rest of the command).
"""

from __future__ import annotations

import hashlib
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from .dataset import DatasetSplits
from .image_check import stat_signature
from .image_files import ImageFileDataset

SPLITS = ("train", "val", "test")
SHORT = 12  # hex characters of a fingerprint as shown: 48 bits, no accidental collision among a user's runs
CHUNK_BYTES = 64 << 20  # rows hashed at a time: bounded temporaries for non-contiguous or memory-mapped inputs
_FUTURES_KEY = "fingerprint_futures"


def _hash_tensor(digest: Any, tensor: torch.Tensor) -> None:
    """Feed ``tensor``'s dtype, shape and bytes (row chunks, C order) into ``digest``."""
    digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
    if tensor.numel() == 0:
        return
    row_bytes = max(1, tensor[0].numel() * tensor.element_size())
    step = max(1, CHUNK_BYTES // row_bytes)
    for start in range(0, len(tensor), step):
        chunk = tensor[start : start + step].contiguous().cpu()
        digest.update(memoryview(chunk.numpy()).cast("B"))


def split_fingerprint(dataset: Any, num_classes: int) -> str:
    """Hex SHA-256 of one split: labels and inputs (in memory), or paths, labels, sizes and times (files)."""
    digest = hashlib.sha256(f"classes={num_classes};".encode())
    _hash_tensor(digest, dataset.labels)
    if isinstance(dataset, ImageFileDataset):
        digest.update(b"files:" + dataset.paths.fingerprint().encode())
        digest.update(stat_signature(dataset.root, dataset.paths, dataset.threads).encode())
    else:
        _hash_tensor(digest, dataset.inputs)
    return digest.hexdigest()


def begin_fingerprints(splits: DatasetSplits) -> None:
    """Start hashing train, val and test in background threads (idempotent)."""
    if _FUTURES_KEY in splits.cache:
        return
    pool = ThreadPoolExecutor(max_workers=len(SPLITS), thread_name_prefix="fingerprint")
    futures = {split: pool.submit(split_fingerprint, splits.split(split), splits.num_classes) for split in SPLITS}
    pool.shutdown(wait=False)  # the threads end with their task; nothing else is queued
    splits.cache[_FUTURES_KEY] = futures


def data_fingerprints(splits: DatasetSplits) -> dict[str, str]:
    """``{"train": hex, "val": hex, "test": hex}`` of ``splits`` (waits for :func:`begin_fingerprints`)."""
    begin_fingerprints(splits)
    futures: dict[str, Future[str]] = splits.cache[_FUTURES_KEY]
    return {split: futures[split].result() for split in SPLITS}


def short(digest: str | None) -> str:
    """A fingerprint as shown in tables and messages (``3f2a9c1e07b4``); "none" for a missing one."""
    return digest[:SHORT] if isinstance(digest, str) and digest else "none"


def array_fingerprint(*arrays: np.ndarray | torch.Tensor) -> str:
    """Hex SHA-256 of tensors or arrays, in order (dtype, shape and bytes)."""
    digest = hashlib.sha256()
    for array in arrays:
        _hash_tensor(digest, torch.as_tensor(array))
    return digest.hexdigest()
