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
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..evaluation.metrics import SUMMARY_KEYS, accuracy_summary

SELECTIONS = ("log_loss", "accuracy")
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


def calibrated_log_loss(
    scores: torch.Tensor, y: torch.Tensor, iterations: int = 60
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-balanced log-loss of ``softmax(beta * scores)`` at each candidate's best inverse temperature ``beta``.

    Args:
        scores: (K, N, C) held-out scores of K candidates (logits, or NCM's negative distances).
        y: (N,) true classes.
        iterations: Newton steps at most (safeguarded by a bracket; a handful suffice).

    Returns:
        ``(loss (K,), beta (K,))``: the mean over the classes present of their mean negative log-likelihood,
        and the ``beta >= 0`` reaching it (at most ``e^12``). ``beta = 0`` (loss ``log C``) means the scores
        rank the truth no better than chance. The loss is convex in ``beta``, its slope
        ``sum_i w_i (E_softmax[s_i] - s_i,y)`` and curvature ``sum_i w_i Var_softmax(s_i)`` are exact.
    """
    scores = scores.double()
    counts = torch.bincount(y, minlength=scores.shape[2]).double()
    weights = 1.0 / (counts[y] * int((counts > 0).sum()))  # (N,): each present class weighs the same
    truth = scores.gather(2, y.view(1, -1, 1).expand(len(scores), -1, 1)).squeeze(2)  # (K, N)
    cap = float(np.exp(MAX_LOG_TEMPERATURE))
    squares = scores.square()

    def slope_curvature(beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = torch.softmax(beta.view(-1, 1, 1) * scores, dim=2)
        mean = (p * scores).sum(2)
        variance = (p * squares).sum(2) - mean.square()
        return ((mean - truth) * weights).sum(1), (variance.clamp_min(0) * weights).sum(1)

    low = torch.zeros(len(scores), dtype=torch.float64)
    high = torch.full_like(low, cap)
    beta = torch.ones_like(low)
    for _ in range(iterations):
        slope, curvature = slope_curvature(beta)
        low = torch.where(slope < 0, beta, low)
        high = torch.where(slope > 0, beta, high)
        newton = beta - slope / curvature.clamp_min(1e-300)
        # Outside the bracket (or no curvature): bisect, geometrically while the bracket is wide.
        fallback = torch.where(
            high > 4 * low.clamp_min(1e-12), torch.sqrt(low.clamp_min(1e-12) * high), (low + high) / 2
        )
        inside = (newton > low) & (newton < high) & torch.isfinite(newton)
        step = torch.where(inside, newton, fallback)
        done = (slope.abs() <= 1e-10) | (high - low <= 1e-9 * high)
        beta = torch.where(done, beta, step)
        if bool(done.all()):
            break
    slope0, _ = slope_curvature(torch.zeros_like(beta))
    beta = torch.where(slope0 >= 0, torch.zeros_like(beta), beta)  # uninformative scores: no temperature helps
    logits = beta.view(-1, 1, 1) * scores
    loss = ((torch.logsumexp(logits, dim=2) - beta.view(-1, 1) * truth) * weights).sum(1)
    return loss, beta


def score_candidates(
    scores: list[torch.Tensor], y: torch.Tensor, counts: list[int], *, selection: str, select: str, many: int, few: int
) -> list[dict[str, Any]]:
    """What each candidate's held-out ``scores`` (N, C) earn: accuracies (%) and, by ``selection``, the number to
    maximise (``score``: minus the calibrated log-loss, or the ``select`` accuracy)."""
    results = []
    for candidate in scores:
        summary = accuracy_summary(candidate.argmax(1), y, counts, many=many, few=few)
        result: dict[str, Any] = {"val": {key: summary[key] for key in SUMMARY_KEYS}}
        value = summary[select]
        result["score"] = float("-inf") if value is None else round(float(value), 6)  # 82.99999 ties 83.0
        results.append(result)
    if selection == "log_loss":
        # Candidates in groups, so that a group's (K, N, C) scores stay within about 2^24 numbers.
        group = max(1, 2**24 // max(1, scores[0].numel()))
        for start in range(0, len(scores), group):
            losses, betas = calibrated_log_loss(torch.stack(scores[start : start + group]), y)
            for result, loss, beta in zip(results[start : start + group], losses.tolist(), betas.tolist(), strict=True):
                temperature = None if beta == 0 else round(1.0 / beta, 6)
                result.update(log_loss=round(loss, 6), temperature=temperature, score=-loss)
    return results


def best(scored: list[dict[str, Any]]) -> int:
    """Index of the highest ``score``; the first on ties (candidates are listed in table order, τ ascending)."""
    values = [entry["score"] for entry in scored]
    return values.index(max(values))
