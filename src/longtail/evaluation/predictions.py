"""Every method's per-image predictions, kept in the run directory for paired comparisons.

``RUN_DIR/predictions/<split>.npz`` holds ``labels`` (N,), one (N,) int32
array of predicted classes per method, named after the method, all in the
split's image order, and ``fingerprint``, the data fingerprint of the split
(``compare --paired`` refuses predictions of different data). It is rewritten (atomically) whenever a command scores the
split, so it always holds the methods of the split's rows in ``results.json``.
A paired bootstrap (:func:`~longtail.evaluation.bootstrap.paired_bootstrap`)
needs to know which images each method got right, which the accuracies alone
do not say.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import RunDirError
from ..io import write_binary_atomic

PREDICTIONS_DIR = "predictions"
LABELS_KEY = "labels"
FINGERPRINT_KEY = "fingerprint"  # the data fingerprint of the split scored (longtail.data.fingerprint)
RESERVED = (LABELS_KEY, FINGERPRINT_KEY)


def predictions_path(run_dir: Path, split: str) -> Path:
    """``RUN_DIR/predictions/<split>.npz``."""
    return Path(run_dir) / PREDICTIONS_DIR / f"{split}.npz"


def _int_array(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values).astype(np.int32)  # class indices: 4 bytes each is plenty


def write_predictions(
    run_dir: Path, split: str, labels: Any, predictions: Mapping[str, Any], *, fingerprint: str
) -> Path:
    """Replace ``predictions/<split>.npz`` with ``labels`` (N,), each method's (N,) predictions and the
    ``fingerprint`` of the split's data."""
    for name in RESERVED:
        if name in predictions:
            raise ValueError(f"a method may not be named {name!r}: the name is a member of the predictions file")
    arrays = {LABELS_KEY: _int_array(labels), **{m: _int_array(p) for m, p in predictions.items()}}
    arrays[FINGERPRINT_KEY] = np.array(fingerprint)
    path = predictions_path(run_dir, split)
    write_binary_atomic(path, lambda handle: np.savez_compressed(handle, **arrays))
    return path


def read_predictions(run_dir: Path, split: str = "test") -> tuple[np.ndarray, dict[str, np.ndarray], str | None]:
    """(N,) labels, method -> (N,) predictions (int64) and the data fingerprint of ``predictions/<split>.npz``
    (None in a file of an older longtail).

    Raises:
        RunDirError: the file is absent (the run was scored by an older longtail), unreadable, or
            holds arrays of the wrong shape.
    """
    path = predictions_path(run_dir, split)
    rescore = f"`longtail eval {run_dir} --split {split}`"
    if not path.is_file():
        raise RunDirError(f"{path}: no per-image predictions; run {rescore} to write them")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        raise RunDirError(f"{path}: unreadable; run {rescore} to rewrite it") from None
    fingerprint = arrays.pop(FINGERPRINT_KEY, None)
    if fingerprint is not None and (fingerprint.ndim != 0 or fingerprint.dtype.kind != "U"):
        raise RunDirError(f"{path}: {FINGERPRINT_KEY!r} is not a fingerprint string; run {rescore} to rewrite it")
    labels = arrays.pop(LABELS_KEY, None)
    if labels is None or labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise RunDirError(f"{path}: no 1-D integer {LABELS_KEY!r} array; run {rescore} to rewrite it")
    for method, values in arrays.items():
        if values.shape != labels.shape or not np.issubdtype(values.dtype, np.integer):
            raise RunDirError(f"{path}: {method!r} is not {len(labels)} integer predictions, one per label")
    fingerprint = None if fingerprint is None else str(fingerprint)
    return labels.astype(np.int64), {m: v.astype(np.int64) for m, v in arrays.items()}, fingerprint
