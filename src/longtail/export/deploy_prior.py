"""The deployment prior of an exported model: recorded at export, folded in (``export --prior FILE``) or applied
at prediction (``predict --prior em|FILE``).

At export, the exported classifier's :class:`~longtail.shift.PriorAdapter` is
fitted on the run's validation split (its calibration chosen by 5-fold NLL, and
the check that prior adaptation helps on simulated shifts of validation) and
recorded in the metadata as ``prior_adapter`` (without BBSE's C x C matrix).
``longtail predict --prior em`` reads it back: the batch's logits are
calibrated, EM estimates the batch's prior from the calibration's source prior,
and the posteriors move to it. ``--prior FILE`` moves them to a given prior.

``longtail export --prior FILE`` folds a known prior into the exported model:
``logits / T + bias_cal + log π_t − log π_s`` (:func:`longtail.shift.fold_known_prior`)
becomes the weight and bias of its last linear layer, so its argmax is
``adapt(logits, "known")``'s and nothing runs after it. Where the validation
check turned adaptation off for the method, nothing is folded (as ``adapt``
would leave the predictions as they are) and the metadata says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from ..shift import Adapted, PriorAdapter, fold_known_prior
from ..shift.adapter import MIN_EM_IMAGES, NOT_APPLIED
from ..shift.prior_file import read_prior_file
from .errors import ExportError

ADAPTER_KEY = "prior_adapter"
PRIOR_KEY = "prior"
UNAVAILABLE_KEY = "prior_adapter_unavailable"  # why an export has no adapter (validation too small to fit one)


def folded_prior(adapter: PriorAdapter, path: str | Path) -> tuple[dict[str, Any], tuple[float, torch.Tensor] | None]:
    """The metadata entry of ``export --prior FILE``, and ``(scale, offset)`` to fold (None: nothing folded)."""
    prior = read_prior_file(path, adapter.num_classes)
    record: dict[str, Any] = {
        "kind": "known",
        "file": str(path),
        "prior": prior.tolist(),
        "calibration": adapter.calibration.kind,
        "temperature": adapter.calibration.temperature,
        "applied": adapter.enabled,
    }
    if not adapter.enabled:
        return {**record, "note": NOT_APPLIED}, None
    scale, offset = fold_known_prior(adapter.calibration, prior)
    record["folded"] = "logits / T + calibration bias + log(prior) - log(validation prior), in the last layer"
    return record, (scale, offset)


def recorded_adapter(metadata: dict[str, Any], model: str) -> PriorAdapter:
    """The exported classifier's adapter, read back from the metadata; an error naming ``model`` when absent."""
    if metadata.get(PRIOR_KEY, {}).get("kind", "none") != "none":
        raise ExportError(
            f"{model}: a known prior is folded into this model (longtail export --prior); export it without "
            "--prior to adapt the prior at prediction time"
        )
    data = metadata.get(ADAPTER_KEY)
    if data is None and isinstance(metadata.get(UNAVAILABLE_KEY), str):
        raise ExportError(f"{model}: {metadata[UNAVAILABLE_KEY]}; --prior needs one")
    if not isinstance(data, dict):
        raise ExportError(f"{model}: no prior adapter in its metadata (exported by an older longtail); export again")
    adapter = PriorAdapter.from_dict(data, f"{model}: {ADAPTER_KEY}")
    if adapter.num_classes != len(metadata.get("class_names", [])):
        raise ExportError(f"{model}: {ADAPTER_KEY} has {adapter.num_classes} classes, the model its class names")
    return adapter


def read_target_prior(prior: str, num_classes: int) -> np.ndarray:
    """The prior file of ``predict --prior FILE``, read (and checked) before any image is.

    A word that is no file but reads as ``none`` or ``em`` in other capitals (``EM``, ``None``) says what is
    accepted, rather than only "prior file not found".
    """
    if prior.lower() in ("none", "em") and not Path(prior).exists():
        raise DataError(f"--prior {prior}: expected none, em (lower case) or the name of a prior file")
    return read_prior_file(prior, num_classes)


def adapt_logits(logits: torch.Tensor, adapter: PriorAdapter, target: np.ndarray | None) -> Adapted:
    """(N, C) logits of a batch moved to ``target`` (a prior file's, from :func:`read_target_prior`), or to the
    prior EM estimates from the batch (``target`` None)."""
    if target is not None:
        return adapter.adapt(logits.double(), "known", target_prior=target)
    if len(logits) < MIN_EM_IMAGES:  # one image's own posterior "estimated" its prior and moved itself
        raise DataError(
            f"--prior em: {len(logits)} image{'s' if len(logits) != 1 else ''}; EM estimates the class prior "
            f"of a batch and needs at least {MIN_EM_IMAGES} (a few dozen do about as well as thousands): "
            "give more images, or a known prior as --prior FILE"
        )
    return adapter.adapt(logits.double(), "em")


def format_prior(adapted: Adapted, class_names: list[str], images: int, top: int = 10) -> str:
    """The prior EM estimated, readable at 1000 classes: its largest classes, and how far it is from the source."""
    prior = adapted.prior
    order = torch.argsort(prior, descending=True)
    shown = ", ".join(f"{class_names[i]} {100 * float(prior[i]):.1f}%" for i in order[:top].tolist())
    more = f" (top {top} of {len(prior):,})" if len(prior) > top else ""
    distance = 50.0 * float((prior - adapted.source_prior).abs().sum())
    steps = f", {adapted.iterations} EM steps" if adapted.iterations is not None else ""
    lines = [
        f"estimated prior from {images:,} images{steps}{more}: {shown}",
        f"  total-variation distance from the validation prior it started from: {distance:.1f} points",
    ]
    if not adapted.applied:
        lines.append(f"  not applied: {NOT_APPLIED}")
    return "\n".join(lines)
