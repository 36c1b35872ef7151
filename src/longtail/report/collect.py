"""Everything the report needs from a run directory, gathered once into plain arrays and dicts.

Every classifier of the run (the joint one and each ``classifiers/<method>.pt``)
is scored afresh on the test features, so the figures and the table of the
report agree with each other and with the classifier files, whatever
``results.json`` says.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.stats import class_size_stats
from ..data.transforms import holds_features
from ..engine.feature_rows import as_compute, chunk_rows, float_chunks
from ..errors import RunDirError, shown
from ..evaluation.calibration import softmax_confidence
from ..evaluation.metrics import accuracy_summary
from ..methods import METHODS, Fitted, display_order, method_names
from ..pipeline import load_fitted, load_run, run_features
from ..pipeline.provenance import KEY as PROVENANCE_KEY
from ..pipeline.run_state import split_features
from ..pipeline.shift_scores import SHIFT_KEY, is_current
from ..runs import CONFIG_FILE, read_metrics, read_results


def norm_methods() -> list[str]:
    """The classifiers whose weight norms the report draws (the paper's Figure 4, left): joint and those
    registered with ``show_norms``."""
    return ["joint", *(name for name in method_names() if METHODS[name].show_norms)]


@dataclass
class MethodOutputs:
    """One classifier on the test split.

    Attributes:
        predictions: (N,) int64 predicted classes.
        confidence: (N,) float32 largest softmax probability of the logits.
        summary: accuracy in percent as :func:`~longtail.evaluation.metrics.accuracy_summary`
            returns it (``per_class`` included), plus ``tau`` / ``chosen`` where they apply.
    """

    predictions: np.ndarray
    confidence: np.ndarray
    summary: dict[str, Any]


@dataclass
class ReportData:
    """A run, read for the report.

    ``outputs`` holds the test outputs of every classifier in the paper's
    method order; ``labels`` (N,) are the test labels they are scored
    against; ``weight_norms`` (C,) per method of :func:`norm_methods` present;
    ``curves`` the τ sweeps of results.json by method (``tau_norm``,
    ``logit_adjust``); ``history`` the stage-1 epoch records; ``val_scores``
    the validation summaries of results.json by method; ``shift`` results.json's
    ``"shift"`` entry (``eval.shift``) when it was computed from the classifiers
    scored there, else None.
    """

    run_dir: Path
    fingerprint: str  # the run's (longtail.pipeline.provenance), short form
    dataset: str
    class_names: list[str]
    train_counts: np.ndarray
    many: int
    few: int
    seed: int
    bootstrap_resamples: int
    select: str
    labels: np.ndarray
    outputs: dict[str, MethodOutputs]
    weight_norms: dict[str, np.ndarray]
    curves: dict[str, dict[str, Any]]
    history: list[dict[str, Any]]
    stats: dict[str, Any]
    config_text: str
    overrides: list[str] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, Any] = field(default_factory=dict)
    stage2: dict[str, Any] = field(default_factory=dict)
    val_scores: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    holds_features: bool = False  # data.name=features: the samples are feature vectors, not images
    shift: dict[str, Any] | None = None

    @property
    def unit(self) -> str:
        """What the samples are, for captions and tables: "images", or "vectors" for a features file."""
        return "vectors" if self.holds_features else "images"


def classifier_weight_norms(head: nn.Module) -> np.ndarray:
    """(C,) effective weight norm of each class of a head: the row norms of its linear form.

    Linear (joint, cRT): ``||w_j||``; τ-norm: ``||w_j|| / ||w_j||^τ``; LWS:
    ``|s_j| ||w_j||`` (its logits are ``s_j (w_j x + b_j)``).
    """
    with torch.no_grad():
        return head.as_linear().row_norms().detach().cpu().double().numpy()


def _how(fit: Fitted) -> str:
    """How a classifier with its own backbone was fit, in words: ``trainable=all`` or ``bn=train``."""
    trainable = fit.info.get("trainable", "classifier")
    return f"trainable={trainable}" if trainable != "classifier" else "bn=train"


@torch.no_grad()
def _test_outputs(head: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(N,) predictions and (N,) confidences of ``head`` on (N, d) features, on the CPU in row chunks."""
    head = copy.deepcopy(head).cpu().eval()
    predictions = np.zeros(len(x), dtype=np.int64)
    confidence = np.zeros(len(x), dtype=np.float32)
    if not len(x):
        return predictions, confidence
    rows = chunk_rows(max(head(as_compute(x[:1])).shape[1], x.shape[1]))  # (rows, C) logits of 2^20 values at most
    # Into buffers allocated before the loop, as predicted_classes does: nothing made in a chunk outlives it.
    for start, chunk in float_chunks(x, rows):
        logits = head(chunk)
        conf, _ = softmax_confidence(logits, y[start : start + rows])
        predictions[start : start + len(logits)] = logits.argmax(dim=1).numpy()
        confidence[start : start + len(logits)] = conf.numpy()
        del logits, conf
    return predictions, confidence


def collect(run_dir: str | Path, overrides: Sequence[str] = ()) -> ReportData:
    """Read run directory ``run_dir`` and score its classifiers on test.

    ``overrides`` are the run-time keys other run commands accept (``data.root=``
    for a moved dataset, ``device=``, ``eval.*``).

    Raises:
        RunDirError: when ``run_dir`` is not a finished stage-1 run, or a
            classifier file does not belong to it.
    """
    run = load_run(run_dir, overrides)
    results = read_results(run.run_dir)
    recorded = (results.get(PROVENANCE_KEY) or {}).get("fingerprint")
    if recorded is not None and recorded != run.provenance["fingerprint"]:  # numbers of other data: not combined
        raise RunDirError(
            f"{run.run_dir}: results.json records fingerprint {shown(recorded, 20, quote=False)}, the run is "
            f"{run.provenance['fingerprint']}; "
            f"run `longtail eval {run.run_dir}` to score it again"
        )
    config = run.config
    counts = list(run.splits.train_counts)
    fitted = load_fitted(run)
    test = run_features(run, "test")
    notes: list[str] = []
    outputs: dict[str, MethodOutputs] = {}
    for method in display_order(fitted):
        fit, x = fitted[method], test.x
        if fit.backbone is not None:  # fit with a backbone of its own: scored on features of that backbone
            x = split_features(fit.backbone, run.splits, "test", config=config, device=run.device).x
            notes.append(f"{method} was fit with a backbone of its own ({_how(fit)}): scored on its features")
        predictions, confidence = _test_outputs(fit.head, x, test.y)
        summary = accuracy_summary(
            torch.from_numpy(predictions), test.y, counts, many=config.eval.many, few=config.eval.few
        )
        summary.update(fit.info)
        outputs[method] = MethodOutputs(predictions, confidence, summary)
    norms = {method: classifier_weight_norms(fitted[method].head) for method in norm_methods() if method in fitted}
    if run.model.head.kind != "linear":  # a cosine classifier's rows all have norm 1: nothing to compare
        norms.pop("joint", None)
        notes.append(f"the joint classifier is not linear (train.loss={config.train.loss}): no weight norms")
    curves = {}
    for method in fitted:
        key = METHODS[method].sweep[0] if method in METHODS and METHODS[method].sweep else None
        if key and isinstance(results.get(key), dict) and results[key].get("val"):
            curves[method] = results[key]
    return ReportData(
        run_dir=run.run_dir,
        fingerprint=run.provenance["fingerprint"],
        dataset=run.splits.name,
        class_names=[str(name) for name in run.splits.class_names],
        train_counts=np.asarray(counts, dtype=np.int64),
        many=config.eval.many,
        few=config.eval.few,
        seed=config.seed,
        bootstrap_resamples=config.eval.bootstrap_resamples,
        select=config.decouple.select,
        labels=test.y.numpy().astype(np.int64),
        outputs=outputs,
        weight_norms=norms,
        curves=curves,
        history=read_metrics(run.run_dir),
        stats=class_size_stats(counts, many=config.eval.many, few=config.eval.few),
        config_text=(run.run_dir / CONFIG_FILE).read_text(),
        overrides=list(overrides),
        environment=dict(results.get("environment", {})),
        timing=dict(results.get("timing", {})),
        stage2=dict(results.get("stage2", {})),
        val_scores=dict(results.get("val_methods", {})),
        notes=notes,
        holds_features=holds_features(run.splits),
        shift=_current_shift(results),
    )


def _current_shift(results: dict[str, Any]) -> dict[str, Any] | None:
    """results.json's ``"shift"`` entry if it belongs to the classifiers scored on test there (never a stale one)."""
    shift = results.get(SHIFT_KEY)
    records = (results.get("scored") or {}).get("test") or {}
    return shift if records and is_current(shift, records) else None
