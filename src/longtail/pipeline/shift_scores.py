"""``eval.shift``: every classifier of a run on SADE's shifted test sets, with prior adaptation, into results.json.

A long-tailed benchmark's test set is balanced; a deployed model meets other
priors. With ``eval.shift = [F, ...]`` each classifier is also scored on the
forward-F and backward-F subsets of test (:mod:`longtail.shift.subsets`: class
sizes following the training profile or its reverse, drawn with the run's seed,
the largest class keeping all its images), forward-largest first, then the
balanced set, then backward: the x-axis of the report's accuracy-vs-shift figure.

Per classifier, :func:`~longtail.shift.fit_prior_adapter` is fitted on the
validation split alone (its calibration chosen by 5-fold NLL, and the check
that prior adaptation helps on simulated shifts of validation). Each
distribution is then scored three ways: ``none`` (the classifier's argmax, as
the results table), ``em`` (the prior estimated by EM from the unlabeled subset
being scored, started from the calibration's source prior) and ``known`` (the
subset's true class shares: the ceiling of ``em``, not a deployable method).
Each cell is micro top-1 accuracy with its 95 % stratified bootstrap interval
over the subset's images (:func:`~longtail.evaluation.bootstrap.bootstrap_ci_from_predictions`).

results.json ``"shift"``::

    {"imbalances": [2, 5, ...], "distributions": ["forward-50", ..., "uniform", ..., "backward-50"],
     "sizes": {distribution: images}, "seed": 0, "priors": ["none", "em", "known"], "val_data": fingerprint,
     "reliability_edges": [0, 0.1, ..., 1] (log-spaced from 1/C beyond 100 classes),
     "scored": {method: the test record of that classifier (see longtail.pipeline.scores)},
     "methods": {method: {"adapter": {calibration, enabled, cv_nll, shift_gain},
                          "none" | "em" | "known": {distribution: {"accuracy": %, "ci": [low, high]}},
                          "em_prior_error": {distribution: total-variation distance to the true prior, points},
                          "reliability": {"edges": [0, 0.1, ..., 1],
                                          "before" | "after": {"count": [...], "confidence": [...],
                                                               "accuracy": [...], "ece": fraction}}}}}

A later ``decouple`` or ``eval`` with the same ``eval.shift`` keeps the row of every classifier whose test
record, shifted sets and validation data are unchanged (:func:`kept_row`), as the results table keeps its rows:
at iNaturalist's size each classifier's row costs minutes.

``reliability`` is on the VALIDATION split only (the report's calibration-before-after figure): ``before`` the
classifier's own softmax, ``after`` its chosen calibration, each image's from the fit on the other folds (the
folds of the choice), so the diagram does not grade the calibration on the images it was fitted on. Per
confidence bin (equal-width; log-spaced from 1/C beyond 100 classes, as figure 7): images, mean confidence and accuracy
(null where empty); the ECE over equal-width bins either way.
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..engine.device import one_thread
from ..errors import ConfigError, DataError
from ..evaluation.bootstrap import bootstrap_ci_from_predictions
from ..evaluation.calibration import drawn_edges, reliability
from ..evaluation.table import render_table, with_interval
from ..methods import Fitted, display_order, label_of
from ..runs import read_results
from ..shift import (
    PriorAdapter,
    ShiftedSubset,
    check_adapter_size,
    fit_prior_adapter,
    out_of_fold_top1,
    shifted_subset,
    standard_shifts,
)
from .run_state import LoadedRun, split_features

SHIFT_KEY = "shift"
PRIORS = ("none", "em", "known")
RELIABILITY_BINS = 10  # the demo's validation split has 200 images: ~20 a bin where the confidences spread


@torch.no_grad()
def method_logits(run: LoadedRun, features: Any, fit: Fitted, split: str) -> torch.Tensor:
    """(N, C) float32 logits of one classifier on ``split`` (its own backbone's features where it has one), as
    the head computes them; the shift package reads them in float64 row chunks (no float64 copy of the table)."""
    x = features(split).x
    if fit.backbone is not None:
        x = split_features(fit.backbone, run.splits, split, config=run.config, device=run.device).x
    return copy.deepcopy(fit.head).cpu().eval()(x.float()).float()


def check_shift_size(run: LoadedRun) -> None:
    """With ``eval.shift`` on, refuse validation logits no prior adapter is fitted on, before anything is fit
    (:func:`~longtail.shift.check_adapter_size`)."""
    if run.config.eval.shift:
        try:
            check_adapter_size(len(run.splits.val.labels), run.splits.num_classes)
        except DataError as error:
            raise ConfigError(f"eval.shift: {error}; set eval.shift=[] for this data") from None


def adapter_record(adapter: PriorAdapter) -> dict[str, Any]:
    """What results.json keeps of a fitted adapter: the calibration, the validation check, its NLLs and gains
    (not BBSE's C x C confusion matrix, which ``eval.shift`` does not use)."""
    data = adapter.to_dict()
    return {key: data[key] for key in ("calibration", "enabled", "cv_nll", "shift_gain")}


def shift_scores(
    run: LoadedRun, features: Any, fitted: Mapping[str, Fitted], records: Mapping[str, Any]
) -> dict[str, Any]:
    """The ``"shift"`` entry of results.json (see the module docstring) for ``fitted``'s classifiers.

    ``features`` is the run's split -> features (val and test are read); ``records`` the test records of the
    classifiers scored (what the table was computed from, so a later stale table is recognised).
    """
    check_shift_size(run)
    config = run.config
    counts = list(run.splits.train_counts)
    factors = sorted({float(f) for f in config.eval.shift})
    shifts = standard_shifts(factors)
    val_y, test_y = features("val").y, features("test").y
    subsets = [shifted_subset(test_y, counts, shift, seed=config.seed) for shift in shifts]
    settings = {
        "imbalances": factors,
        "distributions": [s.name for s in shifts],
        "sizes": {s.shift.name: int(s.counts.sum()) for s in subsets},
        "seed": config.seed,
        "priors": list(PRIORS),
        "val_data": run.provenance["data"]["val"],
        "reliability_edges": reliability_edges(len(counts)),
    }
    previous = read_results(run.run_dir).get(SHIFT_KEY)
    bootstrap = {
        "many": config.eval.many,
        "few": config.eval.few,
        "num_resamples": config.eval.bootstrap_resamples,
        "seed": config.seed,
    }
    options = {"train_counts": counts, "bootstrap": bootstrap}
    methods: dict[str, Any] = {}
    for method in display_order(fitted):
        kept = kept_row(previous, method, records.get(method), settings)
        if kept is not None:  # the same classifier, data and shifted sets: an adapter fit and 11 x 3 scorings saved
            methods[method] = kept
            continue
        fit = fitted[method]
        val_logits = method_logits(run, features, fit, "val")
        with one_thread():  # small optimisations: a thread pool on busy cores made this 25x slower (measured)
            adapter = adapter_for(val_logits, val_y, counts)
            reliability = validation_reliability(adapter, val_logits, val_y, counts)
            del val_logits  # one (N, C) table at a time: 0.8 GB each at iNaturalist's size
            methods[method] = _method_row(adapter, method_logits(run, features, fit, "test"), test_y, subsets, options)
            methods[method]["reliability"] = reliability
    return {**settings, "scored": {m: records[m] for m in methods if m in records}, "methods": methods}


def kept_row(previous: Any, method: str, record: Any, settings: Mapping[str, Any]) -> dict[str, Any] | None:
    """``method``'s row of the previous results.json ``"shift"`` entry where it was computed from the same
    classifier file, test data and evaluation keys (its test ``record``) and the same shifted sets and validation
    data (``settings``), and every cell is a percentage with its interval; None otherwise (it is computed again).
    At iNaturalist's size a classifier's row costs minutes (its adapter's cross-validated fits, EM on 11 sets)."""
    if not isinstance(previous, Mapping) or any(previous.get(key) != value for key, value in settings.items()):
        return None
    scored, rows = previous.get("scored"), previous.get("methods")
    if record is None or not isinstance(scored, Mapping) or not isinstance(rows, Mapping):
        return None
    row = rows.get(method)
    if scored.get(method) != record or not isinstance(row, Mapping) or not isinstance(row.get("adapter"), Mapping):
        return None
    for prior in PRIORS:
        cells = row.get(prior)
        if not isinstance(cells, Mapping) or set(cells) != set(settings["distributions"]):
            return None
        if not all(_is_cell(cell) for cell in cells.values()):
            return None
    return dict(row)


def _is_cell(cell: Any) -> bool:
    """Whether a results.json cell is ``{"accuracy": %, "ci": [low, high]}`` of finite percentages."""
    if not isinstance(cell, Mapping) or not isinstance(cell.get("ci"), list) or len(cell["ci"]) != 2:
        return False
    values = [cell.get("accuracy"), *cell["ci"]]
    return all(isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 100 for v in values)


def adapter_for(
    val_logits: torch.Tensor, val_labels: torch.Tensor, counts: list[int], what: str = "eval.shift"
) -> PriorAdapter:
    """:func:`~longtail.shift.fit_prior_adapter` on validation (on one thread), its one-line error naming
    ``what``."""
    try:
        with one_thread():
            return fit_prior_adapter(val_logits, val_labels, counts)
    except DataError as error:
        raise DataError(f"{what}: the calibration on validation cannot be fitted ({error})") from None


def _bins(top1: tuple[torch.Tensor, torch.Tensor], labels: torch.Tensor, edges: np.ndarray | None) -> dict[str, Any]:
    """Reliability bins (``edges``, or None: equal-width) of (N,) top-1 confidences and (N,) predicted classes
    against (N,) labels, as JSON (null for an empty bin's means); the ECE over equal-width bins either way, so that
    it compares across class counts."""
    confidence, predicted = top1
    confidence, right = confidence.clamp(0.0, 1.0), predicted == labels
    bins = reliability(confidence, right, RELIABILITY_BINS, edges=edges)
    ece = bins.ece if edges is None else reliability(confidence, right, RELIABILITY_BINS).ece

    def listed(values: Any) -> list[float | None]:
        return [None if value != value else float(value) for value in values]  # NaN (empty bin) -> null

    return {
        "count": [int(n) for n in bins.counts],
        "confidence": listed(bins.confidence),
        "accuracy": listed(bins.accuracy),
        "ece": float(ece),
    }


def validation_reliability(
    adapter: PriorAdapter, val_logits: torch.Tensor, val_labels: torch.Tensor, counts: list[int]
) -> dict[str, Any]:
    """The ``reliability`` record (module docstring) of one classifier: its (N_val, C) raw ``val_logits``
    before (calibration ``none``: its own softmax) and after ``adapter``'s calibration (out of fold), on
    validation only."""
    labels = torch.as_tensor(val_labels).long()
    before = out_of_fold_top1(val_logits, labels, counts, "none")
    after = out_of_fold_top1(  # the cross-validation's own fits: no fold fitted twice
        val_logits, labels, counts, adapter.calibration.kind, fold_calibrations=adapter.fold_calibrations
    )
    drawn = drawn_edges(len(counts), RELIABILITY_BINS)  # log-spaced from 1/C at many classes, as figure 7; else None
    edges = reliability_edges(len(counts))
    return {"edges": edges, "before": _bins(before, labels, drawn), "after": _bins(after, labels, drawn)}


def reliability_edges(num_classes: int) -> list[float]:
    """The (11,) confidence bin edges of the ``reliability`` records: equal-width, or log-spaced from 1/C beyond
    :data:`~longtail.evaluation.calibration.LOG_CONFIDENCE_FROM` classes (where the top softmax probability of most
    predictions lies in the first equal-width bin)."""
    drawn = drawn_edges(num_classes, RELIABILITY_BINS)
    return [k / RELIABILITY_BINS for k in range(RELIABILITY_BINS + 1)] if drawn is None else drawn.tolist()


def _method_row(
    adapter: PriorAdapter,
    test_logits: torch.Tensor,
    test_y: torch.Tensor,
    subsets: list[ShiftedSubset],
    options: dict[str, Any],
) -> dict[str, Any]:
    """One classifier's cells: per prior, per distribution, accuracy and interval; EM's prior error."""
    row: dict[str, Any] = {"adapter": adapter_record(adapter), **{p: {} for p in PRIORS}, "em_prior_error": {}}
    for subset in subsets:
        index = torch.from_numpy(subset.indices)
        whole = len(index) == len(test_y) and bool((index == torch.arange(len(test_y))).all())
        logits, labels = (test_logits, test_y) if whole else (test_logits[index], test_y[index])  # no copy of all
        name = subset.shift.name
        for prior in PRIORS:
            adapted = adapter.adapt(logits, prior, target_prior=subset.prior)  # type: ignore[arg-type]
            predicted, estimate = adapted.predictions(), adapted.prior
            del adapted  # its (N, C) float64 posteriors, before the next prior's are made (1.6 GB at iNaturalist's)
            accuracy = 100.0 * float((predicted == labels).double().mean())
            ci = bootstrap_ci_from_predictions(predicted, labels, options["train_counts"], **options["bootstrap"])
            row[prior][name] = {"accuracy": accuracy, "ci": ci["all"]}
            if prior == "em":
                truth = torch.as_tensor(subset.prior, dtype=torch.float64)
                row["em_prior_error"][name] = 50.0 * float((estimate - truth).abs().sum())
    return row


def is_current(shift: Any, records: Mapping[str, Any]) -> bool:
    """Whether a results.json ``"shift"`` entry was computed from the classifiers whose test records are
    ``records`` (the same classifier files, data and evaluation keys)."""
    return (
        isinstance(shift, Mapping)
        and isinstance(shift.get("scored"), Mapping)
        and set(shift["scored"]) == set(records)
        and all(shift["scored"][m] == records[m] for m in records)
    )


# --------------------------------------------------------------------------- the table


def _header(name: str) -> str:
    """``forward-50`` -> ``F50``, ``backward-2`` -> ``B2``, ``uniform`` -> ``uniform``: 11 columns fit a terminal."""
    direction, _, factor = name.partition("-")
    return {"forward": "F", "backward": "B"}.get(direction, direction) + factor


def shift_rows(shift: Mapping[str, Any], *, intervals: bool = True) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the methods x distributions table: per method its ``none`` row, then ``+ em`` and
    ``+ known``; a cell is accuracy (%) ``±`` the half-width of its 95 % interval; the last column the mean
    over the shifted distributions (uniform left out)."""
    names = list(shift["distributions"])
    header = ["Method", "Prior", *(_header(n) for n in names), "shifted mean"]
    rows = []
    for method in display_order(shift["methods"]):
        row = shift["methods"][method]
        for prior in shift.get("priors", PRIORS):
            cells = row[prior]
            shown = [with_interval(f"{cells[n]['accuracy']:.1f}", cells[n]["ci"] if intervals else None) for n in names]
            shifted = [cells[n]["accuracy"] for n in names if n != "uniform"]
            mean = f"{statistics.fmean(shifted):.1f}" if shifted else "–"
            rows.append([label_of(method) if prior == "none" else "", prior, *shown, mean])
    return header, rows


def em_summary(shift: Mapping[str, Any]) -> str:
    """One line: em − none, its worst cell over methods and distributions, and the best method either way."""
    worst: tuple[float, str, str] | None = None
    best: dict[str, tuple[float, str]] = {}
    for method, row in shift["methods"].items():
        for name in shift["distributions"]:
            gain = row["em"][name]["accuracy"] - row["none"][name]["accuracy"]
            if worst is None or gain < worst[0]:
                worst = (gain, method, name)
        for prior in ("none", "em"):
            shifted = [row[prior][n]["accuracy"] for n in shift["distributions"] if n != "uniform"]
            if shifted and (prior not in best or statistics.fmean(shifted) > best[prior][0]):
                best[prior] = (statistics.fmean(shifted), method)
    if worst is None or "none" not in best:
        return ""
    return (
        f"em − none: worst cell {worst[0]:+.1f} points ({label_of(worst[1])}, {worst[2]}); best shifted mean "
        f"with none {best['none'][0]:.1f} ({label_of(best['none'][1])}), with em {best['em'][0]:.1f} "
        f"({label_of(best['em'][1])})"
    )


SHIFT_NOTE = (
    "F<k> / B<k>: forward / backward test sets of imbalance k drawn from test (training order / reversed); "
    "none: the method's argmax; em: prior estimated by EM on the unlabeled set (calibration fitted on val); "
    "known: the true prior (a ceiling). ± is half the 95% bootstrap interval."
)


def format_shift_table(shift: Mapping[str, Any], *, markdown: bool = False) -> str:
    """The methods x distributions table of a results.json ``"shift"`` entry, as plain text or Markdown."""
    header, rows = shift_rows(shift)
    return render_table(header, rows, markdown=markdown, left={0, 1})
