"""The τ-norm sweep, fast: the predicted class at every τ from one matrix product, never holding (N, C) logits.

:mod:`~longtail.methods.tau_norm` keeps the formula (``w_j / ||w_j||^τ``,
:func:`~longtail.methods.tau_norm.tau_sweep`); this module scores all of
``decouple.tau`` on a split of any size with it (at ImageNet-LT's shape, 1,000
classes, the sweep is the cost of τ-norm: docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..engine.feature_rows import as_compute
from ..models.heads import weight_norms


def tau_sweep_predictions(
    features: torch.Tensor, weight: torch.Tensor, taus: Sequence[float], *, chunk_rows: int = 1024
) -> torch.Tensor:
    """Predicted class of the τ-normalised classifier for every τ and every row, from one matrix product.

    The predictions of ``logits.argmax(1)`` over :func:`~longtail.methods.tau_norm.tau_sweep`'s logits
    (``(x · w_j) * ||w_j||^-τ``, bias dropped), without ever holding (N, C)
    logits: rows go through in chunks of ``chunk_rows``; each (chunk, C) block
    of bias-free logits is computed once and every τ is scored on it.

    Scoring all τ costs much less than T arg-maxes over the block because, for
    τ >= 0, a class can only win if no class with a smaller or equal norm has a
    larger logit: ``||w_j||^-τ`` shrinks as the norm grows, so such a class
    beats it at every τ. With the classes sorted by norm once, the classes
    left are the running-maximum records of each row (one ``cummax``),
    typically about ten of 1,000 classes, and each τ is an arg-max over those. This
    holds where the row's best logit is positive; rows whose best logit is
    <= 0 (or NaN), and negative τ, are scored directly over all classes.

    Ties go to the smallest class index, as ``argmax`` does. A weight row of
    norm 0 gives a logit of exactly 0 at every τ (its norm is clamped as in
    :func:`weight_norms`, as the τ-normalised head does): it is predicted only
    for rows where every other class scores below 0 (or ties at 0 with a
    larger index). The results equal the arg-max of :func:`~longtail.methods.tau_norm.tau_sweep`'s
    logits computed from the same ``x @ W.T``, except where a beaten class's
    score rounds to the winner's; they differ from
    ``(x @ tau_normalize(W, τ).T).argmax(1)`` only where two scores are within
    rounding error of each other.

    Args:
        features: (N, d) features.
        weight: (C, d) classifier weight (moved to the features' device and dtype).
        taus: the T values of τ.
        chunk_rows: rows per block; 1,024 makes a (1024, 1000) float32 block
            (4 MB), big enough for an efficient matrix product, small enough
            for the passes over it to run from cache (timed against 256 to
            2,048 rows on a 2-core Xeon; 512 to 2,048 were within noise).

    Returns:
        (T, N) int64: row ``t`` holds the predicted class of every feature row at ``taus[t]``.
    """
    if features.dim() != 2 or weight.dim() != 2 or features.shape[1] != weight.shape[1]:
        raise ValueError(
            f"expected (N, d) features and a (C, d) weight, got {tuple(features.shape)} and {tuple(weight.shape)}"
        )
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows={chunk_rows!r}: expected an integer >= 1")
    taus = [float(tau) for tau in taus]
    n, num_classes = len(features), len(weight)
    device = features.device
    out = torch.empty(len(taus), n, dtype=torch.int64, device=device)
    if not taus or n == 0:
        return out
    dtype = as_compute(features[:0]).dtype  # float16 features: float32 arithmetic, one chunk cast at a time
    weight = weight.to(device=device, dtype=dtype)
    norms = weight_norms(weight)
    order = torch.argsort(norms, stable=True)  # ascending norm: the dominance order for τ >= 0
    unsort = torch.argsort(order)  # sorted column -> original class position
    sorted_weight_t = weight[order].T
    # Computed exactly as tau_sweep does, so that the scores are the same floats.
    scales = torch.stack([norms.pow(-tau) for tau in taus])  # (T, C), original class order
    positive = [t for t, tau in enumerate(taus) if tau >= 0]
    negative = [t for t, tau in enumerate(taus) if tau < 0]
    sorted_scales = scales[positive][:, order]
    # Buffers reused by every chunk: fresh multi-megabyte tensors would cost page faults each time.
    rows = min(chunk_rows, n)
    block_buffer = torch.empty(rows, num_classes, dtype=dtype, device=device)
    best_buffer = torch.empty_like(block_buffer)
    where_buffer = torch.empty(rows, num_classes, dtype=torch.int64, device=device)
    record_buffer = torch.empty(rows, num_classes, dtype=torch.bool, device=device)
    for start in range(0, n, chunk_rows):
        stop = min(start + chunk_rows, n)
        size = stop - start
        block = torch.mm(as_compute(features[start:stop]), sorted_weight_t, out=block_buffer[:size])  # (B, C), sorted
        best_so_far, _ = torch.cummax(block, 1, out=(best_buffer[:size], where_buffer[:size]))
        # A record equals the running maximum: a class tied with an earlier one stays in, as the two tie
        # at τ = 0, where the smaller class index must win.
        records = torch.eq(block, best_so_far, out=record_buffer[:size])
        if positive:
            out[positive, start:stop] = _record_argmax(block, records, sorted_scales, order)
        # NaN propagates through cummax, so rows holding NaN fail this test and are scored directly;
        # in the original class order, so that argmax breaks ties by class index.
        hard_rows = (~(best_so_far[:, -1] > 0)).nonzero().squeeze(1)
        if len(hard_rows) and positive:
            hard = block[hard_rows][:, unsort]
            for t in positive:
                out[t, start + hard_rows] = (hard * scales[t]).argmax(1)
        if negative:
            unsorted_block = block[:, unsort]
            for t in negative:
                out[t, start:stop] = (unsorted_block * scales[t]).argmax(1)
    return out


def _record_argmax(
    block: torch.Tensor, records: torch.Tensor, scales: torch.Tensor, order: torch.Tensor
) -> torch.Tensor:
    """Arg-max per row and τ over each row's candidates.

    Args:
        block: (B, C) bias-free logits, columns in ascending-norm order.
        records: (B, C) bool, the candidates (running-maximum records).
        scales: (T, C) ``||w_j||^-τ`` per τ (τ >= 0), columns in the same order.
        order: (C,) original class index of each column.

    Returns:
        (T, B) int64 original class indices. Valid for rows whose best logit is
        positive: candidates with a logit <= 0 then score below the best and
        never win, so they need no filtering. Other rows get garbage.
    """
    rows, cols = records.nonzero(as_tuple=True)  # P candidates
    scores = block[rows, cols] * scales[:, cols]  # (T, P)
    index = rows.expand(len(scales), -1)
    shape = (len(scales), len(block))
    best = torch.full(shape, -torch.inf, dtype=scores.dtype, device=block.device)
    best.scatter_reduce_(1, index, scores, "amax")
    classes = torch.where(scores == best.gather(1, index), order[cols], len(order))  # non-winners: C
    winner = torch.full(shape, len(order), dtype=torch.int64, device=block.device)
    return winner.scatter_reduce_(1, index, classes, "amin")
