"""Frozen-backbone features kept in the run directory, so stage 2 runs the backbone once.

Layout: ``RUN/features/<name>.pt``, one file per split (``train``, ``val``,
``test``) and per augmented-view set (``train_views<K>``), each holding the
tensors and the key they were computed under::

    {"x": (N, d) or (K, N, d) float32 (float16 with decouple.cache_dtype=float16), "y": (N,) int64, "key": {...}}

The key names the SHA-256 of the stage-1 checkpoint and everything else that
decides the numbers (split, transform, number of views and their seed). A file
whose key differs from the one asked for, or whose labels differ from the
dataset's, is stale: it is recomputed and replaced, never used. Files are
written atomically and read memory-mapped, so a second process (another
``longtail decouple`` on the same run) starts in well under a second and shares
the pages with the first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..errors import DataError
from ..fs.atomic import save_torch_atomic
from ..safe_torch import load_tensors

log = logging.getLogger(__name__)

FEATURE_DIR = "features"
# Bumped when the layout of a cache file changes, so older files are recomputed.
CACHE_FORMAT = 1


def feature_path(run_dir: Path, name: str) -> Path:
    """Where the features called ``name`` (``train``, ``val``, ``test``, ``train_views4``) of a run live."""
    return Path(run_dir) / FEATURE_DIR / f"{name}.pt"


def _read(path: Path) -> dict[str, Any] | None:
    """The cache file at ``path``, memory-mapped; ``None`` when absent or unreadable (it is then recomputed)."""
    if not path.is_file():
        return None
    try:
        stored = load_tensors(path, mmap=True)
    except Exception as error:  # a truncated or foreign file is a cache miss, not a failure
        log.warning("%s: unreadable feature cache (%s); recomputing", path, error.__class__.__name__)
        return None
    if not isinstance(stored, dict) or not all(isinstance(stored.get(k), torch.Tensor) for k in ("x", "y")):
        log.warning("%s: not a feature cache (no x and y tensors); recomputing", path)
        return None
    return stored


def peak_beyond(x: torch.Tensor, dtype: torch.dtype) -> float | None:
    """The largest magnitude in ``x`` where it is beyond what ``dtype`` holds (cast, it would be inf), else None.

    max and -min: no copy of features of gigabytes, as abs() would make; NaN is not this check's business.
    """
    if not (x.is_floating_point() and x.numel() and dtype.is_floating_point):
        return None
    peak = max(float(x.max()), -float(x.min()))
    return peak if peak > torch.finfo(dtype).max else None


def cached_features(
    run_dir: Path,
    name: str,
    key: dict[str, Any],
    labels: torch.Tensor,
    compute: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Features ``name`` of a run: from its cache when the cache matches ``key`` and ``labels``, else computed, stored.

    Args:
        run_dir: the run directory.
        name: file stem, e.g. ``"train"``.
        key: what the features depend on (checkpoint hash, split, transform, views); JSON-like values.
        labels: (N,) int64 labels of the dataset, in order; a cache with other labels is stale.
        compute: returns ``(x, y)`` when the cache cannot be used.
        dtype: the dtype the features are stored and returned in (float32, or float16: half the memory; the
            consumers cast each batch to float32). A cache of another dtype is stale.

    Returns:
        ``(x, y, hit)``: features ``(N, d)`` or ``(K, N, d)``, labels ``(N,)``, and whether the cache was used.

    Raises:
        DataError: computed features beyond the range of ``dtype`` (float16: 65504); nothing is stored.
    """
    path = feature_path(run_dir, name)
    key = {**key, "format": CACHE_FORMAT}
    if dtype != torch.float32:  # float32 caches keep their key, so that existing ones stay valid
        key["dtype"] = str(dtype).removeprefix("torch.")
    stored = _read(path)
    if stored is not None and stored.get("key") == key and torch.equal(stored.get("y", torch.empty(0)), labels):
        return stored["x"], stored["y"], True
    if stored is not None:
        log.info("%s: cached features are stale (another checkpoint, data or transform); recomputing", path)
    x, y = compute()
    peak = peak_beyond(x, dtype)  # stored as inf, stage 2 would fit on them
    if peak is not None:
        kind = str(dtype).removeprefix("torch.")
        raise DataError(
            f"decouple.cache_dtype={kind}: the {name} features reach {peak:.4g} in magnitude, beyond "
            f"{kind}'s largest value ({torch.finfo(dtype).max:g}); set decouple.cache_dtype=float32"
        )
    x = x.to(dtype)
    save_torch_atomic(path, {"x": x.contiguous(), "y": y.contiguous(), "key": key})
    return x, y, False
