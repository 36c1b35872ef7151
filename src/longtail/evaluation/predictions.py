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

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import RunDirError
from ..fs.atomic import write_binary_atomic
from ..safe_npz import Member, open_npz

PREDICTIONS_DIR = "predictions"
LABELS_KEY = "labels"
FINGERPRINT_KEY = "fingerprint"  # the data fingerprint of the split scored (longtail.data.fingerprint)
RESERVED = (LABELS_KEY, FINGERPRINT_KEY)
MAX_FINGERPRINT_CHARS = 128


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


def read_predictions(
    run_dir: Path, split: str = "test", methods: Sequence[str] | None = None
) -> tuple[np.ndarray, dict[str, np.ndarray], str | None]:
    """(N,) labels, method -> (N,) predictions (int64) and the data fingerprint (None in a file of an older
    longtail) of ``predictions/<split>.npz``.

    Only the ``labels`` and the predictions of ``methods`` (None: every method) are
    decompressed, each after its header is checked (:mod:`longtail.safe_npz`).

    Raises:
        RunDirError: the file is absent (the run was scored by an older longtail), unreadable, holds
            arrays of the wrong shape, or lacks a method of ``methods``.
    """
    path = predictions_path(run_dir, split)
    rescore = f"`longtail eval {run_dir} --split {split}`"
    if not path.is_file():
        raise RunDirError(f"{path}: no per-image predictions; run {rescore} to write them")
    missing = None
    try:
        with open_npz(path, what="predictions file", error=RunDirError) as archive:
            available = [name for name in archive.names if name not in RESERVED]
            wanted = available if methods is None else list(dict.fromkeys(methods))
            missing = next((method for method in wanted if method not in archive), None)
            if missing is not None:  # not damage: said below, without the advice to re-score
                raise RunDirError(f"{run_dir}: no {split} predictions of method {missing!r}")
            if LABELS_KEY not in archive:
                raise RunDirError(f"{path}: no 1-D integer {LABELS_KEY!r} array")
            labels = _checked(path, LABELS_KEY, archive.header(LABELS_KEY), None)
            members = {method: _checked(path, method, archive.header(method), labels) for method in wanted}
            fingerprint = _fingerprint(path, archive) if FINGERPRINT_KEY in archive else None
            archive.check([LABELS_KEY, *wanted])
            arrays = {name: archive.read(name) for name in [LABELS_KEY, *members]}
    except RunDirError as error:
        if missing is not None:
            raise RunDirError(f"{error} (it has: {', '.join(available) or 'none'})") from None
        raise RunDirError(f"{error}; run {rescore} to rewrite it") from None
    labels_array = arrays.pop(LABELS_KEY)
    return labels_array.astype(np.int64), {m: v.astype(np.int64) for m, v in arrays.items()}, fingerprint


def _fingerprint(path: Path, archive: Any) -> str:
    """The ``fingerprint`` member: a 0-d string of hex digits."""
    member = archive.header(FINGERPRINT_KEY)
    if member.shape != () or member.dtype.kind != "U" or member.dtype.itemsize > 4 * MAX_FINGERPRINT_CHARS:
        raise RunDirError(f"{path}: {FINGERPRINT_KEY!r} is not a fingerprint string")
    archive.check([FINGERPRINT_KEY])
    return str(archive.read(FINGERPRINT_KEY))


def _checked(path: Path, name: str, member: Member, labels: Member | None) -> Member:
    """A member's header as a predictions file's: labels 1-D integers, each method's as many as the labels."""
    integer = np.issubdtype(member.dtype, np.integer)
    if labels is None and (len(member.shape) != 1 or not integer):
        raise RunDirError(f"{path}: no 1-D integer {LABELS_KEY!r} array")
    if labels is not None and (member.shape != labels.shape or not integer):
        raise RunDirError(f"{path}: {name!r} is not {labels.shape[0]} integer predictions, one per label")
    return member
