"""``longtail export``: a run's backbone with one re-balanced classifier folded in, as one self-contained file."""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.dataset import DatasetSplits
from ..data.image_transforms import CenterCrop
from ..data.transforms import eval_transform, holds_features
from ..errors import DataError, OutputPathError
from ..methods import Fitted, method_names
from ..pipeline import LoadedRun, load_fitted, load_run
from ..pipeline.shift_scores import adapter_for
from ..runs import check_output_path, read_results, require_run_dir, run_lock
from ..shift import PriorAdapter
from ..version import __version__
from .artifact import FORMAT, FORMAT_VERSION, ExportedClassifier, export_program, save_artifact
from .deploy_prior import ADAPTER_KEY, PRIOR_KEY, UNAVAILABLE_KEY, folded_prior
from .errors import ExportError
from .feature_program import export_feature_program, feature_input_spec
from .fold import ZERO_PRIOR_BIAS, fold_head, with_prior
from .onnx_file import onnx_bytes, require_onnx, write_onnx


def export_methods() -> list[str]:
    """What ``--method`` accepts: ``auto``, ``joint`` and every registered stage-2 method."""
    return ["auto", "joint", *(name for name in method_names() if name != "auto")]


CHECK_IMAGES = 32  # validation images the exported program is checked on against the pipeline
ADAPTER_BATCH = 256  # validation images per forward pass when the prior adapter is fitted
SUFFIX = ".pt2"


@dataclass
class ExportResult:
    """What :func:`export_run` wrote: the artifact, the ONNX file (or None) and the metadata stored in both;
    ``removed_onnx``: the replaced model's ONNX file, removed (``overwrite`` without ``onnx``), or None."""

    path: Path
    onnx_path: Path | None
    metadata: dict[str, Any]
    removed_onnx: Path | None = None


def input_spec(splits: DatasetSplits) -> dict[str, Any]:
    """The test-time input transform of ``splits`` as metadata.

    In-memory datasets (Fashion-MNIST, CIFAR, ``.npz``) have one image size:
    another size is resized to it. Image files are read as RGB, the shorter
    side resized to ``resize_shorter`` and the centre ``height`` x ``width`` kept.
    Feature vectors (``data.name=features``) are taken as they are.
    """
    test = splits.split("test")
    if holds_features(splits):
        return feature_input_spec(test.image_shape[0])
    transform = getattr(test, "transform", None)
    if isinstance(transform, CenterCrop):
        channels, height, width = 3, transform.size, transform.size
        geometry, resize = "resize_shorter_center_crop", transform.resize
    else:
        channels, height, width = test.image_shape
        geometry, resize = "resize", None
    return {
        "layout": "NCHW",
        "dtype": "float32",
        "range": [0.0, 1.0],
        "normalized_inside": True,
        "channels": int(channels),
        "height": int(height),
        "width": int(width),
        "geometry": geometry,
        "resize_shorter": resize,
        "mean": [float(v) for v in splits.mean],
        "std": [float(v) for v in splits.std],
    }


def _describe_classifier(run: LoadedRun, method: str, fitted: Fitted) -> dict[str, Any]:
    """``{"method", "label", "params"}``: what was exported, ``auto`` resolved to the method it chose."""
    if method == "auto":
        chosen = dict(read_results(run.run_dir).get("auto", {}).get("chosen", {}))
        resolved, label = chosen.pop("method", "auto"), chosen.pop("label", "auto")
        return {"method": resolved, "label": label, "params": chosen}
    described = Fitted(fitted.head, params={**fitted.params, **fitted.head.options()})
    if fitted.info.get("trainable", "classifier") != "classifier":
        described.params["trainable"] = fitted.info["trainable"]
    label = f"{method} ({described.label})" if described.params else method
    return {"method": method, "label": label, "params": described.params}


def _pipeline_check(
    run: LoadedRun,
    backbone: nn.Module,
    head: nn.Module,
    program_module: nn.Module,
    affine: tuple[float, torch.Tensor] | None = None,
) -> float:
    """Max |exported - pipeline| logit on the first validation images; raises when beyond float tolerance.

    ``affine``: the ``(scale, offset)`` of a folded prior, applied to the pipeline's logits too."""
    val = run.splits.split("val")
    images, _ = val.__getitems__(list(range(min(CHECK_IMAGES, len(val)))))
    # The program takes images in [0, 1], or feature vectors as they are.
    inputs = images if holds_features(run.splits) else images.float() / 255.0
    with torch.no_grad():
        expected = head.cpu()(backbone.forward_features(eval_transform(run.splits)(images)))
        if affine is not None:
            expected = (expected.double() * affine[0] + affine[1].clamp_min(ZERO_PRIOR_BIAS)).float()
        got = program_module(inputs)
    difference = float((got - expected).abs().max()) if len(images) else 0.0
    tolerance = 1e-4 * max(1.0, float(expected.abs().max()) if len(images) else 1.0)
    if difference > tolerance:
        raise ExportError(
            f"{run.run_dir}: the exported model's logits differ from the pipeline's by {difference:.3g} "
            f"(tolerance {tolerance:.3g}); this is a bug, please report it"
        )
    return difference


def _prior_adapter(run: LoadedRun, backbone: nn.Module, head: nn.Module) -> tuple[PriorAdapter | None, str]:
    """The classifier's prior adapter fitted on the validation split, from the logits the exported model itself
    computes (read straight from the split: an export writes nothing into the run and logs nothing), or None
    and why when no calibration can be fitted there (the export still succeeds; ``--prior`` then says why)."""
    val = run.splits.split("val")
    transform = eval_transform(run.splits)
    logits, labels = [], []
    with torch.no_grad():
        for start in range(0, len(val), ADAPTER_BATCH):
            images, y = val.__getitems__(list(range(start, min(start + ADAPTER_BATCH, len(val)))))
            logits.append(head(backbone.forward_features(transform(images))).float())
            labels.append(torch.as_tensor(y))
    if not logits:
        return None, "no prior adapter: the validation split is empty"
    try:
        return adapter_for(torch.cat(logits), torch.cat(labels), run.splits.train_counts, what="export"), ""
    except DataError as error:
        return None, f"no prior adapter: {error}"


def default_out(run_dir: str | Path, method: str) -> Path:
    """``RUN_DIR/export/<method>.pt2``."""
    return Path(run_dir) / "export" / f"{method}{SUFFIX}"


def _out_path(out: str | Path | None, run_dir: Path, method: str) -> Path:
    """The artifact's path: ``out`` (a plain name gets ``.pt2``), or :func:`default_out` when None.

    An existing directory (or a name ending in a separator) is refused as it was given: adding the suffix
    first turned ``--out DIR`` into ``DIR.pt2``, a file written beside the directory the user named.
    """
    if out is None:
        return default_out(run_dir, method)
    given = Path(out)
    if str(out).endswith(("/", os.sep)):
        raise OutputPathError(f"{out}: is a directory name; --out expects a file name (e.g. {given / method}{SUFFIX})")
    check_output_path(given, overwrite=True, what="--out")  # a directory or a run's own path, as given
    return given if given.suffix else given.with_suffix(SUFFIX)


def export_run(
    run_dir: str | Path | LoadedRun,
    method: str = "auto",
    out: str | Path | None = None,
    *,
    onnx: bool = False,
    overrides: Sequence[str] = (),
    overwrite: bool = False,
    prior: str | Path | None = None,
) -> ExportResult:
    """Export ``method``'s classifier of a run, folded onto its backbone, to ``out`` (and ``out.onnx``).

    ``out`` defaults to :func:`default_out`; a name without a suffix gets
    ``.pt2``. The run's data must be readable (``overrides`` such as
    ``data.root=DIR`` say where): it gives the normalisation, the class names
    and the validation images the export is checked on. ``run_dir`` may be a
    run already loaded by :func:`~longtail.pipeline.load_run` (``overrides``
    are then ignored), to export several methods without reading it again.
    ``out`` (and its ``.onnx``) may not be one of a run's own files, nor an existing file unless ``overwrite``
    (the default path included: an export is a finished result). The metadata records the run's provenance,
    and the classifier's prior adapter fitted on validation (``prior_adapter``: what ``predict --prior``
    uses). ``prior``: a prior file (:mod:`longtail.shift.prior_file`) folded into the exported bias after the
    calibration (:mod:`~longtail.export.deploy_prior`).

    Raises:
        ExportError: an unknown method, one the run has not fit, or the ONNX packages missing.
        OutputPathError: ``out`` is refused (see :func:`~longtail.runs.check_output_path`).
    """
    if method not in export_methods():
        raise ExportError(f"--method {method!r}: expected one of {', '.join(export_methods())}")
    where = run_dir.run_dir if isinstance(run_dir, LoadedRun) else require_run_dir(run_dir)
    path = _out_path(out, where, method)
    if path.suffix.lower() == ".onnx":
        raise ExportError(f"--out {path}: expected the .pt2 file's name; the ONNX file goes beside it (--onnx)")
    for target in [path, *([path.with_suffix(".onnx")] if onnx else [])]:
        check_output_path(target, overwrite=overwrite, what="--out")
    if onnx:
        require_onnx()  # before the work, not after
    inside = path.resolve().is_relative_to(where.resolve())  # writing into the run: nobody else may meanwhile
    with run_lock(where, "longtail export", exclusive=inside):
        run = run_dir if isinstance(run_dir, LoadedRun) else load_run(run_dir, overrides)
        return _export(run, method, path, onnx, prior)


def _export(run: LoadedRun, method: str, path: Path, onnx: bool, prior: str | Path | None = None) -> ExportResult:
    """:func:`export_run` of a loaded run, under its lock."""
    fitted = load_fitted(run)
    if method not in fitted:
        joint = " (or export stage 1's own classifier: --method joint)" if "joint" in fitted else ""
        raise ExportError(
            f"{run.run_dir}: no {method} classifier; run `longtail decouple {run.run_dir} --method {method}` "
            f"first{joint}"
        )
    # A classifier fit with its own backbone (fine-tuned cRT, BatchNorm in train mode) is exported with it.
    backbone = copy.deepcopy(fitted[method].backbone or run.model.backbone).cpu().eval()
    head = copy.deepcopy(fitted[method].head).cpu().eval()
    spec = input_spec(run.splits)
    classifier = _describe_classifier(run, method, fitted[method])
    if onnx and spec.get("kind") == "features":
        raise ExportError(f"{run.run_dir}: --onnx: a run on features exports its .pt2 only (no image input to name)")
    folded = fold_head(head)
    adapter, unavailable = _prior_adapter(run, backbone, head)
    prior_record: dict[str, Any] = {"kind": "none"}
    affine = None
    if prior is not None:
        if adapter is None:
            raise ExportError(f"--prior {prior}: {unavailable}")
        prior_record, affine = folded_prior(adapter, prior)
    if affine is not None:
        folded = with_prior(folded, *affine)
    if spec.get("kind") == "features":  # no backbone: the folded classifier on the feature vectors
        program = export_feature_program(folded, spec["features"])
    else:
        classifier_module = ExportedClassifier(backbone, folded, spec["mean"], spec["std"])
        program = export_program(classifier_module, spec["channels"], spec["height"], spec["width"])
    difference = _pipeline_check(run, backbone, head, program.module(), affine)
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "longtail_version": __version__,
        "torch_version": torch.__version__,
        "exported": method,
        "classifier": {**classifier, "folding": folded.describe()},
        "num_classes": run.splits.num_classes,
        "class_names": list(run.splits.class_names),
        "input": spec,
        "output": "logits (N, num_classes); softmax gives probabilities"
        + ("" if affine is None else ", calibrated and for the prior in 'prior'"),
        PRIOR_KEY: prior_record,
        ADAPTER_KEY: None if adapter is None else adapter.to_dict(bbse=False),
        **({UNAVAILABLE_KEY: unavailable} if adapter is None else {}),
        "dataset": run.splits.name,
        "run_dir": str(run.run_dir),
        "checkpoint_sha256": run.checkpoint_sha256,
        "provenance": run.provenance,
        "check": {"images": min(CHECK_IMAGES, len(run.splits.split("val"))), "max_abs_logit_difference": difference},
    }
    onnx_data = onnx_bytes(program, metadata) if onnx else None  # converted before anything is written
    save_artifact(path, program, metadata)
    onnx_path = write_onnx(onnx_data, path.with_suffix(".onnx")) if onnx_data is not None else None
    return ExportResult(path, onnx_path, metadata, None if onnx else _remove_replaced_onnx(path))


def _remove_replaced_onnx(path: Path) -> Path | None:
    """Remove ``path``'s ``.onnx`` sibling after ``path`` was replaced without ``--onnx``: it is the replaced
    model's and would be taken for the new one's. Returns it, or None where there was none (or it stays: a
    folder, a file that cannot be removed, which is then the caller's to say)."""
    onnx_path = path.with_suffix(".onnx")
    try:
        if not onnx_path.is_file():
            return None
        onnx_path.unlink()
    except OSError as error:
        raise ExportError(
            f"{path} written; {onnx_path}, the replaced model's ONNX file, could not be removed "
            f"({error.strerror or error.__class__.__name__}): remove it, or export again with --onnx"
        ) from None
    return onnx_path
