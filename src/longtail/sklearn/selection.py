"""Choosing among candidates on held-out samples: stratified folds, the scores, the choice.

Tails of a handful of samples are the rule here, so every rule below is made
for them:

- **folds** (:func:`stratified_folds`): each class's samples are dealt round
  the ``k`` folds, so a fold holds at most ``ceil(n_c / k)`` of a class and
  every class of two or more samples is held out in turn; a class's only
  sample is never held out (a training fold without the class could not
  predict it at all).
- **pooling**: each candidate's held-out scores of all folds are put
  together and scored once, so a tail class counts with all its samples,
  not one per fold.
- **the score** (:func:`calibrated_log_loss`): macro accuracy on a tail of 3
  samples moves in steps of 33 points per class, and the best of ~50
  candidates on it is mostly the luckiest. ``log_loss`` scores the
  class-balanced log-loss (each class weighs the same, as in macro
  accuracy) of the candidate's scores at the temperature that suits them
  best: a smooth, proper score, the same for scores of any scale (NCM's
  negative distances, τ-normalised logits) because the temperature is fit
  per candidate; the temperature changes no prediction. ``accuracy`` scores
  ``decouple.select`` (macro, all or few) of the pooled predictions.
- **the reference** (:func:`clearly_better`): with ``log_loss``, the
  candidate with the lowest loss wins only if it beats the *reference*
  (logit adjustment at τ = 1 on the first probe, Menon et al.'s
  Bayes-consistent choice for the balanced error) by more than
  ``REFERENCE_MARGIN`` standard errors of their paired per-sample losses;
  otherwise the reference does. Among some forty candidates scored on a
  few hundred held-out samples, the lowest loss is partly the luckiest;
  a default that must be beaten clearly is the usual remedy (the
  one-standard-error rule of cross-validation).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..evaluation.metrics import SUMMARY_KEYS, shot_groups

SELECTIONS = ("log_loss", "accuracy")
REFERENCE = ("logit_adjust", 1.0)  # method and τ of the reference candidate (on the first probe of the grid)
REFERENCE_MARGIN = 2.0  # standard errors by which the lowest log-loss must beat the reference's
MAX_LOG_TEMPERATURE = 12.0  # inverse temperatures searched in [0, e^12]


def stratified_folds(codes: np.ndarray, k: int, seed: int) -> np.ndarray:
    """(N,) fold (``0..k-1``) of each sample of ``codes`` (N,) class indices, or -1: never held out.

    Each class's samples, in a seeded order, are dealt round the folds, continuing where the previous class
    stopped (folds of even size); a class of one sample is never held out.
    """
    rng = np.random.default_rng(seed)
    fold = np.full(len(codes), -1, dtype=np.int64)
    dealt = 0
    for cls in np.unique(codes):
        members = rng.permutation(np.flatnonzero(codes == cls))
        if len(members) < 2:
            continue
        fold[members] = (dealt + np.arange(len(members))) % k
        dealt += len(members)
    return fold


def calibrated_log_loss(scores: Any, y: Any, iterations: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Class-balanced log-loss of ``softmax(beta * scores)`` at each candidate's best inverse temperature ``beta``.

    Args:
        scores: (K, N, C) held-out scores of K candidates (logits, or NCM's negative distances); an array or tensor.
        y: (N,) true classes.
        iterations: Newton steps at most (safeguarded by a bracket; a handful suffice).

    Returns:
        ``(loss (K,), beta (K,))`` float64 arrays: the mean over the classes present of their mean negative
        log-likelihood, and the ``beta >= 0`` reaching it (at most ``e^12``). ``beta = 0`` (loss ``log C``) means
        the scores rank the truth no better than chance. The loss is convex in ``beta``, its slope
        ``sum_i w_i (E_softmax[s_i] - s_i,y)`` and curvature ``sum_i w_i Var_softmax(s_i)`` are exact; each
        candidate stops iterating when its slope or bracket is resolved (NumPy: a few (K, N, C) passes).
    """
    # (K, C, N): the sums over classes then add whole rows of samples (C is often small; N is not).
    scores = np.ascontiguousarray(np.asarray(scores, dtype=np.float64).transpose(0, 2, 1))
    y = np.asarray(y, dtype=np.int64)
    counts = np.bincount(y, minlength=scores.shape[1]).astype(np.float64)
    weights = 1.0 / (counts[y] * int((counts > 0).sum()))  # (N,): each present class weighs the same
    truth = scores[:, y, np.arange(len(y))]  # (K, N)
    cap = float(np.exp(MAX_LOG_TEMPERATURE))

    def slope_curvature(beta: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = scores[rows]
        p = beta[:, None, None] * s
        p -= p.max(1, keepdims=True)
        np.exp(p, out=p)
        p /= p.sum(1, keepdims=True)
        p *= s
        mean = p.sum(1)  # E[s]
        p *= s
        variance = p.sum(1) - mean * mean  # E[s^2] - E[s]^2
        return (mean - truth[rows]) @ weights, np.clip(variance, 0, None) @ weights

    low, high = np.zeros(len(scores)), np.full(len(scores), cap)
    beta = np.ones(len(scores))
    active = np.arange(len(scores))
    for _ in range(iterations):
        if not len(active):
            break
        b, lo, hi = beta[active], low[active], high[active]
        slope, curvature = slope_curvature(b, active)
        lo = np.where(slope < 0, b, lo)
        hi = np.where(slope > 0, b, hi)
        # Scores of a large scale (unscaled features: NCM's distances at 1e24) have a curvature so small that the
        # step overflows: an infinite step is outside the bracket, so bisected, without NumPy's warning per fold.
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            newton = b - slope / np.maximum(curvature, 1e-300)
        # Outside the bracket (or no curvature): bisect, geometrically while the bracket is wide.
        floor = np.maximum(lo, 1e-12)
        fallback = np.where(hi > 4 * floor, np.sqrt(floor * hi), (lo + hi) / 2)
        inside = (newton > lo) & (newton < hi) & np.isfinite(newton)
        # Resolved: the loss is within 1e-12 of its minimum (Newton decrement), or the bracket is closed.
        done = (slope * slope <= 2e-12 * curvature) | (np.abs(slope) <= 1e-10) | (hi - lo <= 1e-9 * hi)
        beta[active] = np.where(done, b, np.where(inside, newton, fallback))
        low[active], high[active] = lo, hi
        active = active[~done]
    slope0, _ = slope_curvature(np.zeros(len(scores)), np.arange(len(scores)))
    beta = np.where(slope0 >= 0, 0.0, beta)  # uninformative scores: no temperature helps
    logits = beta[:, None, None] * scores
    top = logits.max(1)
    log_norm = np.log(np.exp(logits - top[:, None, :]).sum(1)) + top
    loss = (log_norm - beta[:, None] * truth) @ weights
    return loss, beta


def sample_log_losses(scores: Any, y: Any, beta: float) -> np.ndarray:
    """(N,) negative log-likelihood of each sample's class under ``softmax(beta * scores)``; scores (N, C)."""
    logits = beta * np.asarray(scores, dtype=np.float64)
    top = logits.max(1)
    y = np.asarray(y, dtype=np.int64)
    return np.log(np.exp(logits - top[:, None]).sum(1)) + top - logits[np.arange(len(y)), y]


def clearly_better(
    best: Any, reference: Any, y: Any, *, betas: tuple[float, float], margin: float = REFERENCE_MARGIN
) -> bool:
    """Whether the ``best`` scores' class-balanced log-loss is below the ``reference``'s by more than ``margin``
    standard errors of the paired difference.

    Args:
        best, reference: (N, C) held-out scores of the two candidates.
        y: (N,) true classes.
        betas: each candidate's inverse temperature (from :func:`calibrated_log_loss`).

    The difference of the two losses is ``sum_i w_i d_i`` over the per-sample differences ``d_i`` with the
    class-balanced weights ``w_i``; its standard error, the samples taken as independent, is
    ``sqrt(sum_i w_i^2 (d_i - mean)^2)``.
    """
    y = np.asarray(y, dtype=np.int64)
    counts = np.bincount(y)
    weights = 1.0 / (counts[y] * int((counts > 0).sum()))
    difference = sample_log_losses(reference, y, betas[1]) - sample_log_losses(best, y, betas[0])
    mean = float(weights @ difference)
    error = float(np.sqrt(np.sum(weights**2 * (difference - mean) ** 2)))
    return mean > margin * error


def accuracy_summaries(
    predictions: np.ndarray, y: np.ndarray, counts: list[int], *, many: int, few: int
) -> list[dict[str, float | None]]:
    """:func:`~longtail.evaluation.metrics.accuracy_summary` (less ``per_class``) of K candidates at once.

    Args:
        predictions: (K, N) predicted classes of K candidates.
        y: (N,) true classes.
        counts: (C,) training samples per class, which define the shot groups.

    Returns:
        Per candidate ``{"many", "medium", "few", "all", "macro"}`` in %: a group's accuracy is the mean of its
        classes' accuracies over the classes present in ``y``, None when it has none.
    """
    correct = (predictions == y[None, :]).astype(np.float64)  # (K, N)
    onehot = np.zeros((len(y), len(counts)))
    onehot[np.arange(len(y)), y] = 1.0
    totals = onehot.sum(0)
    present = np.flatnonzero(totals > 0)
    per_class = np.full((len(predictions), len(counts)), np.nan)
    per_class[:, present] = (correct @ onehot)[:, present] / totals[present]  # (K, C), NaN: class absent
    columns: dict[str, np.ndarray] = {}
    for name, members in shot_groups(counts, many, few).items():
        members = [m for m in members if totals[m] > 0]
        columns[name] = 100.0 * per_class[:, members].mean(1) if members else np.full(len(predictions), None)
    columns["all"] = 100.0 * correct.mean(1) if len(y) else np.full(len(predictions), None)
    columns["macro"] = 100.0 * per_class[:, present].mean(1) if len(present) else np.full(len(predictions), None)
    return [
        {key: None if values[k] is None else float(values[k]) for key, values in columns.items()}
        for k in range(len(predictions))
    ]


def score_candidates(
    scores: list[torch.Tensor], y: torch.Tensor, counts: list[int], *, selection: str, select: str, many: int, few: int
) -> list[dict[str, Any]]:
    """What each candidate's held-out ``scores`` (N, C) earn: accuracies (%) and, by ``selection``, the number to
    maximise (``score``: minus the calibrated log-loss, or the ``select`` accuracy; ``beta``: the inverse
    temperature of the log-loss)."""
    truth = y.numpy()
    predictions = torch.stack([candidate.argmax(1) for candidate in scores]).numpy()
    results = []
    for summary in accuracy_summaries(predictions, truth, counts, many=many, few=few):
        result: dict[str, Any] = {"val": {key: summary[key] for key in SUMMARY_KEYS}}
        value = summary[select]
        result["score"] = float("-inf") if value is None else round(float(value), 6)  # 82.99999 ties 83.0
        results.append(result)
    if selection == "log_loss":
        # Candidates in groups, so that a group's (K, N, C) scores stay within about 2^24 numbers.
        group = max(1, 2**24 // max(1, scores[0].numel()))
        for start in range(0, len(scores), group):
            losses, betas = calibrated_log_loss(torch.stack(scores[start : start + group]).numpy(), truth)
            for result, loss, beta in zip(results[start : start + group], losses.tolist(), betas.tolist(), strict=True):
                temperature = None if beta == 0 else round(1.0 / beta, 6)
                result.update(log_loss=round(loss, 6), temperature=temperature, score=-loss, beta=beta)
    return results


def best(scored: list[dict[str, Any]]) -> int:
    """Index of the highest ``score``; the first on ties (candidates are listed in table order, τ ascending)."""
    values = [entry["score"] for entry in scored]
    return values.index(max(values))
