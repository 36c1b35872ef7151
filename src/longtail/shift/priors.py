"""Class priors and the Bayes adjustment of posteriors from one prior to another.

Under label shift the class-conditional densities ``p(x|y)`` stay fixed and
only the prior changes, so a posterior for the source prior ``π_s`` moves to a
target prior ``π_t`` by Bayes' rule (Saerens et al. 2002, eq. 2.4):

    p_t(y|x) = p_s(y|x) · w(y) / Σ_k p_s(k|x) · w(k),    w = π_t / π_s

In log space: ``log p_t = log p_s + log π_t - log π_s``, renormalised. A class
the target prior gives 0 gets probability 0 (log -inf); a class the source
prior gives 0 cannot be moved (its ratio is undefined) and is refused.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..data.dataset import chunk_rows
from ..errors import DataError

PriorLike = Sequence[float] | np.ndarray | torch.Tensor
# A prior's entries must sum to 1 within this (a prior read from a file is often rounded).
SUM_TOLERANCE = 1e-3


def as_prior(prior: PriorLike, num_classes: int, *, name: str = "prior", positive: bool = False) -> torch.Tensor:
    """A (C,) float64 probability vector from a sequence, array or tensor, renormalised to sum to exactly 1.

    Args:
        prior: (C,) non-negative values summing to 1 (within :data:`SUM_TOLERANCE`).
        num_classes: C.
        name: what the message of an error calls it (``target prior``, ``--prior FILE``).
        positive: refuse a zero entry (a source prior must be positive everywhere).

    Raises:
        DataError: a wrong length, a negative, NaN or infinite entry, a sum other than 1, or a 0 where
            ``positive``.
    """
    values = prior.detach().cpu() if isinstance(prior, torch.Tensor) else torch.as_tensor(np.asarray(prior))
    values = values.to(torch.float64).reshape(-1) if values.numel() else values.to(torch.float64)
    if values.ndim != 1 or len(values) != num_classes:
        raise DataError(f"{name}: expected {num_classes} class probabilities, got shape {tuple(values.shape)}")
    if not torch.isfinite(values).all() or (values < 0).any():
        raise DataError(f"{name}: expected finite probabilities >= 0")
    total = float(values.sum())
    if abs(total - 1.0) > SUM_TOLERANCE:
        raise DataError(f"{name}: the probabilities sum to {total:.6g}; expected 1")
    if positive and (values <= 0).any():
        missing = int(torch.nonzero(values <= 0)[0, 0])
        raise DataError(f"{name}: class {missing} has probability 0; expected every class > 0")
    return values / total


def uniform_prior(num_classes: int) -> torch.Tensor:
    """(C,) float64 ``1 / C``."""
    return torch.full((num_classes,), 1.0 / num_classes, dtype=torch.float64)


def class_shares(labels: torch.Tensor | np.ndarray | Sequence[int], num_classes: int) -> torch.Tensor:
    """(C,) float64 share of each class among (N,) labels: the prior a labelled split was drawn with."""
    labels_t = torch.as_tensor(np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels))
    labels_t = labels_t.long().reshape(-1)
    if not len(labels_t):
        raise DataError("labels: expected at least one label to measure class shares")
    if labels_t.min() < 0 or labels_t.max() >= num_classes:
        raise DataError(f"labels: expected class indices 0 to {num_classes - 1}")
    return torch.bincount(labels_t, minlength=num_classes).double() / len(labels_t)


def check_logits(logits: torch.Tensor, name: str = "logits", *, float64: bool = True) -> torch.Tensor:
    """(N, C) finite float scores as float64 (on the CPU), or a :class:`DataError` naming ``name``.

    ``float64=False`` keeps float32 and float64 tables as they are (no copy): for a whole validation table that
    is read in float64 row chunks (:func:`~.calibrate.row_chunks`), half the memory of a float64 copy."""
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[1] < 1:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise DataError(f"{name}: expected an (N, C) tensor of scores, got {shape}")
    to_float64 = float64 or logits.dtype not in (torch.float32, torch.float64)
    values = logits.detach().cpu().to(torch.float64 if to_float64 else logits.dtype)
    step = chunk_rows(values.shape[1])  # in row chunks: isfinite of a whole table makes table-sized temporaries
    if not all(bool(torch.isfinite(values[start : start + step]).all()) for start in range(0, len(values), step)):
        raise DataError(f"{name}: expected finite scores (found NaN or infinity)")
    return values


def log_normalise_(table: torch.Tensor) -> torch.Tensor:
    """Turn (N, C) float64 ``table`` into its log softmax in place, row chunk by row chunk, and return it
    (``logsumexp`` of a whole table makes two table-sized temporaries: 3.2 GB more at 24,426 x 8,142)."""
    step = chunk_rows(table.shape[1])
    for start in range(0, len(table), step):
        chunk = table[start : start + step]
        chunk.sub_(torch.logsumexp(chunk, dim=1, keepdim=True))
    return table


def log_softmax64(scores: torch.Tensor) -> torch.Tensor:
    """(N, C) float scores -> (N, C) float64 log softmax: one new table, normalised in place (no second copy)."""
    return log_normalise_(scores.to(torch.float64, copy=True))


def reweight(
    log_posteriors: torch.Tensor, source_prior: PriorLike, target_prior: PriorLike, *, in_place: bool = False
) -> torch.Tensor:
    """Move (N, C) log posteriors for ``source_prior`` to ``target_prior``: (N, C) normalised log posteriors.

    Args:
        log_posteriors: (N, C) ``log p_s(y|x)`` (or any logits: they are normalised after the shift).
        source_prior: (C,) the prior the posteriors are for, every entry > 0.
        target_prior: (C,) the prior to move to; a 0 entry removes the class (log probability -inf).
        in_place: overwrite a float64 ``log_posteriors`` (a caller's own table, not needed after): no new table.
    """
    scores = check_logits(log_posteriors, "log posteriors")
    num_classes = scores.shape[1]
    source = as_prior(source_prior, num_classes, name="source prior", positive=True)
    target = as_prior(target_prior, num_classes, name="target prior")
    shift = target.log() - source.log()
    own = in_place and scores.data_ptr() == log_posteriors.data_ptr()  # the caller's float64 table itself
    return log_normalise_(scores.add_(shift) if own else scores + shift)
