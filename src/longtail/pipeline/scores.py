"""A run's classifiers scored on val and test, merged into results.json, and kept while nothing they depend on moved.

results.json records what each method's numbers were computed from
(``"scored"``, by split and method: the classifier file's SHA-256, or the
checkpoint's for Joint; the split's data fingerprint; the evaluation keys and
seed). A later
``decouple`` or ``eval`` keeps a row whose record still holds, with the
method's per-image predictions, instead of scoring it again: at iNaturalist's
shape each classifier scored again cost about 12 s of every later ``decouple``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..config import Config
from ..errors import RunDirError
from ..evaluation.metrics import summary_agrees
from ..evaluation.per_class import write_per_class_csv
from ..evaluation.predictions import read_predictions, write_predictions
from ..methods import Fitted, method_names, spec_of
from ..runs import classifier_path, file_sha256, read_results, update_results
from .run_state import SPLITS, LoadedRun, score_fitted, split_features
from .shift_scores import SHIFT_KEY, is_current, shift_scores

SCORED_KEY = "scored"


def sweep_keys() -> list[str]:
    """The results.json keys of every registered method's τ curve (``MethodSpec.sweep``): ``tau_curve``, ..."""
    return [spec_of(name).sweep[0] for name in method_names() if spec_of(name).sweep]


def scored_record(config: Config, *, classifier_sha256: str, data: str) -> dict[str, str]:
    """What scores are computed from: the classifier (its file's SHA-256; the checkpoint's for Joint), the split's
    data fingerprint, and the evaluation keys and seed (see the module docstring)."""
    e = config.eval
    settings = {"many": e.many, "few": e.few, "bootstrap_resamples": e.bootstrap_resamples, "seed": config.seed}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    return {"classifier": classifier_sha256, "data": data, "eval": digest}


def _scored_record(run: LoadedRun, method: str, split: str) -> dict[str, str]:
    sha256 = run.checkpoint_sha256 if method == "joint" else file_sha256(classifier_path(run.run_dir, method))
    return scored_record(run.config, classifier_sha256=sha256, data=run.provenance["data"][split])


@dataclass
class SplitScores:
    """A split's scores: results rows by method, (N,) predictions by method, and what each row is computed from."""

    rows: dict[str, Any]
    predictions: dict[str, Any]
    records: dict[str, dict[str, str]]


def _kept(run: LoadedRun, methods: Sequence[str], split: str) -> SplitScores:
    """The rows of results.json for ``split``, and their predictions, whose record still holds."""
    results = read_results(run.run_dir)
    rows = results.get("methods" if split == "test" else "val_methods")
    records = (results.get(SCORED_KEY) or {}).get(split)
    kept = SplitScores({}, {}, {})
    if not isinstance(rows, dict) or not isinstance(records, dict):
        return kept
    try:
        labels, predictions, fingerprint = read_predictions(run.run_dir, split)
    except RunDirError:
        return kept  # absent or damaged: everything is scored again and the file rewritten
    if fingerprint != run.provenance["data"][split]:
        return kept
    for method in methods:
        if (
            method in rows
            and method in predictions
            and records.get(method) == _scored_record(run, method, split)
            and _row_agrees(run, rows[method], predictions[method], labels)
        ):
            kept.rows[method], kept.predictions[method] = rows[method], predictions[method]
            kept.records[method] = records[method]
    return kept


def _row_agrees(run: LoadedRun, row: Any, predicted: Any, labels: Any) -> bool:
    """Whether a results row's accuracies are those of its per-image predictions: a results.json edited by hand
    kept its numbers through `eval`, which printed them as scores (its record still held)."""
    e = run.config.eval
    return isinstance(row, dict) and summary_agrees(
        row, predicted, labels, run.splits.train_counts, many=e.many, few=e.few
    )


def score_run(
    run: LoadedRun, features: Any, fitted: dict[str, Fitted], split: str, *, fresh: Sequence[str] = ()
) -> SplitScores:
    """Every classifier of ``fitted`` scored on ``split`` (on the run's backbone's features, or on its own
    backbone's), with its (N,) predictions; rows whose record holds are kept, except the ``fresh`` ones.

    ``features`` is the run's split -> :class:`~longtail.engine.head_training.Features`, read only if a
    classifier has to be scored.
    """
    scores = _kept(run, [m for m in fitted if m not in fresh], split)
    todo = {m: f for m, f in fitted.items() if m not in scores.rows}
    counts = run.splits.train_counts
    shared = {m: f for m, f in todo.items() if f.backbone is None}
    if shared:
        scores.rows.update(score_fitted(shared, features(split), run.config, counts, scores.predictions))
    for method, fit in todo.items():
        if fit.backbone is not None:
            own = split_features(fit.backbone, run.splits, split, config=run.config, device=run.device)
            scores.rows.update(score_fitted({method: fit}, own, run.config, counts, scores.predictions))
    for method in todo:
        scores.records[method] = _scored_record(run, method, split)
    return SplitScores(*({m: part[m] for m in fitted} for part in (scores.rows, scores.predictions, scores.records)))


def _merge(into: dict[str, Any], update: dict[str, Any]) -> None:
    """Recursive dict update: nested dicts are merged key by key, anything else replaced."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def refresh_scores(
    run: LoadedRun,
    features: Any,
    fitted: dict[str, Fitted],
    splits: Sequence[str] = SPLITS,
    extras: dict[str, Any] | None = None,
    *,
    fresh: Sequence[str] = (),
    header: dict[str, Any],
) -> dict[str, Any]:
    """Score ``fitted`` on ``splits`` (:func:`score_run`) and merge the scores, ``header`` and ``extras`` into
    results.json; each split's per-image predictions replace ``predictions/<split>.npz`` (what ``compare
    --paired`` reads), with the split's data fingerprint. With ``eval.shift`` and test among ``splits``, the
    methods x shifted-test-sets table goes in too (:mod:`longtail.pipeline.shift_scores`); without it, a table
    of other classifiers is removed."""
    scores = {}
    for split in splits:
        scores[split] = score_run(run, features, fitted, split, fresh=fresh)
        labels, fingerprint = run.splits.split(split).labels, run.provenance["data"][split]
        write_predictions(run.run_dir, split, labels, scores[split].predictions, fingerprint=fingerprint)
    extras = extras or {}
    shift = None
    if "test" in scores and run.config.eval.shift:  # eval.shift: the methods on shifted test sets too
        shift = shift_scores(run, features, fitted, scores["test"].records)

    def update(results: dict[str, Any]) -> None:
        results.update(header)
        for split, split_scores in scores.items():
            results["methods" if split == "test" else "val_methods"] = split_scores.rows
            results.setdefault(SCORED_KEY, {})[split] = split_scores.records
        if shift is not None:
            results[SHIFT_KEY] = shift
        elif "test" in scores and not is_current(results.get(SHIFT_KEY), scores["test"].records):
            results.pop(SHIFT_KEY, None)  # computed from other classifiers (or none): never shown stale
        results["split"] = "test"
        for method in extras.get("stage2", {}):  # how a method was fit is replaced, not merged
            results.get("stage2", {}).pop(method, None)
        _merge(results, extras)

    results = update_results(run.run_dir, update)
    write_per_class_csv(run.run_dir, results)  # per_class.csv: every class's numbers, beside results.json
    return results
