"""``longtail features``: a run's frozen-backbone features of every split as one ``.npz``, the input of
``data.name=features``.

The file holds ``x_train``, ``x_val``, ``x_test`` ((N, d) float32, or float16 with ``--dtype float16``: the
test-time features that stage 2 fits on: from the run's feature cache, or
computed and cached), ``y_*`` ((N,) int64), ``class_names``, ``provenance``
(the run's provenance record as JSON text: what the features were computed
from) and, when the run's joint classifier is linear, ``joint_weight`` (C, d)
and ``joint_bias`` (C,).
``longtail train data.name=features data.path=FILE model.joint=file`` then
makes a run whose stage 2 is the original run's, number for number; with
``model.joint=train`` (the default) stage 1 trains a new linear probe instead.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..engine.feature_cache import peak_beyond
from ..errors import ConfigError, DataError
from ..fs.atomic import write_binary_atomic
from ..runs import check_output_path, require_run_dir, run_lock
from .run_state import LoadedRun, load_run
from .stage2 import run_features

log = logging.getLogger(__name__)

FEATURE_SPLITS = ("train", "val", "test")
FEATURE_DTYPES = ("float32", "float16")
PROVENANCE_MEMBER = "provenance"


@dataclass
class FeaturesFile:
    """What :func:`export_features` wrote: the file, items per split, d, and whether the joint classifier is in it."""

    path: Path
    counts: dict[str, int]
    num_features: int
    joint: bool


def _check_out(out: Path, overwrite: bool) -> None:
    if out.suffix.lower() != ".npz":  # f.NPZ is an .npz as much as f.npz is
        raise ConfigError(f"--out {out}: expected a file name ending in .npz (any case)")
    # Not a run's own file, a directory, an existing file without --overwrite, or a name too long.
    check_output_path(out, overwrite=overwrite, what="--out")


def _check_range(x: torch.Tensor, dtype: str, split: str) -> None:
    """Refuse features that ``dtype`` cannot hold: cast, they would be written as inf, which
    ``data.name=features`` then refuses (and the run they came from has no such values)."""
    peak = peak_beyond(x, getattr(torch, dtype))
    if peak is not None:
        raise DataError(
            f"--dtype {dtype}: the {split} features reach {peak:.4g} in magnitude, beyond {dtype}'s largest value "
            f"({float(np.finfo(dtype).max):g}); write them with --dtype float32"
        )


def _joint_arrays(run: LoadedRun) -> dict[str, np.ndarray]:
    """``joint_weight`` (C, d) and ``joint_bias`` (C,) of a linear joint classifier; none for a cosine one."""
    head = run.model.head
    if head.kind != "linear":
        log.info("the joint classifier is %s, not linear: the file holds no joint_weight / joint_bias", head.kind)
        return {}
    form = head.as_linear()
    bias = form.bias if form.bias is not None else form.weight.new_zeros(len(form.weight))
    return {"joint_weight": form.weight.cpu().numpy(), "joint_bias": bias.cpu().numpy()}


def export_features(
    run_dir: str | Path,
    out: str | Path,
    *,
    overwrite: bool = False,
    overrides: Sequence[str] = (),
    dtype: str = "float32",
) -> FeaturesFile:
    """Write the test-time features of every split of ``run_dir``, by its frozen backbone, to ``out`` (.npz).

    ``overrides`` are the run-time keys of :func:`~longtail.pipeline.load_run`
    (``data.root=DIR`` where the data moved, ``device=cpu``). An existing
    ``out`` is refused unless ``overwrite``; the file is replaced atomically.
    ``dtype`` (``float32`` or ``float16``) is the dtype of the features written.

    Raises:
        ConfigError: ``out`` is not a .npz name, or ``dtype`` is neither float32 nor float16.
        DataError: features beyond the range of ``dtype`` (float16: 65504); nothing is written.
        OutputPathError: ``out`` is a directory, a run's own file, exists without ``overwrite``, or cannot be
            examined (a name too long); see :func:`~longtail.runs.check_output_path`.
        RunDirError: ``run_dir`` is not a finished run.
    """
    out = Path(out)
    if dtype not in FEATURE_DTYPES:
        raise ConfigError(f"--dtype {dtype!r}: expected one of {', '.join(FEATURE_DTYPES)}")
    _check_out(out, overwrite)
    # Exclusive: the features may be computed and cached in the run, which no other command may write meanwhile.
    with run_lock(require_run_dir(run_dir), "longtail features"):
        run = load_run(run_dir, overrides)
        arrays: dict[str, np.ndarray] = {}
        for split in FEATURE_SPLITS:
            features = run_features(run, split)
            _check_range(features.x, dtype, split)
            arrays[f"x_{split}"] = features.x.numpy().astype(dtype, copy=False)
            arrays[f"y_{split}"] = features.y.numpy()
        arrays["class_names"] = np.array([str(name) for name in run.splits.class_names])
        arrays.update(_joint_arrays(run))
        # Where the features came from: the run's provenance (its data, config, program), as JSON text.
        arrays[PROVENANCE_MEMBER] = np.array(json.dumps(run.provenance, sort_keys=True))
        write_binary_atomic(out, lambda handle: np.savez(handle, **arrays))
    counts = {split: len(arrays[f"y_{split}"]) for split in FEATURE_SPLITS}
    return FeaturesFile(out, counts, int(arrays["x_train"].shape[1]), "joint_weight" in arrays)
