"""Classifier heads: modules mapping (N, d) features to (N, C) logits.

Stage 2 swaps these on a frozen backbone: a fresh ``nn.Linear`` for cRT,
:class:`TauNormHead` for τ-normalisation, :class:`LWSHead` for learnable
weight scaling, :class:`LogitAdjustedHead` for post-hoc logit adjustment.
:class:`CosineHead` is the stage-1 classifier that LDAM expects.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn
from torch.nn import functional as F

_NORM_EPS = 1e-12  # keeps an all-zero weight row from dividing by zero


def linear_head(num_features: int, num_classes: int) -> nn.Linear:
    """The joint / cRT classifier: ``W x + b`` with PyTorch's default initialisation."""
    return nn.Linear(num_features, num_classes)


def weight_norms(weight: torch.Tensor) -> torch.Tensor:
    """(C, d) weight -> (C,) L2 norm of each class's row."""
    return weight.norm(dim=1).clamp_min(_NORM_EPS)


def tau_normalize(weight: torch.Tensor, tau: float) -> torch.Tensor:
    """``w_j / ||w_j||**tau`` for each row ``w_j`` of a (C, d) weight; τ = 0 leaves it unchanged."""
    return weight / weight_norms(weight).pow(tau).unsqueeze(1)


def tau_sweep(
    raw_logits: torch.Tensor, norms: torch.Tensor, taus: Sequence[float]
) -> Iterator[tuple[float, torch.Tensor]]:
    """Logits of the τ-normalised classifier for every τ from one matrix product.

    Since ``x · (w_j / ||w_j||^τ) = (x · w_j) * ||w_j||^-τ``, the logits for any τ
    are the bias-free logits rescaled per class.

    Args:
        raw_logits: (N, C) ``x @ W.T``, without bias.
        norms: (C,) ``||w_j||``.
        taus: the τ values.

    Yields:
        ``(tau, logits (N, C))`` per τ.
    """
    for tau in taus:
        yield float(tau), raw_logits * norms.pow(-float(tau))


def tau_sweep_predictions(
    features: torch.Tensor, weight: torch.Tensor, taus: Sequence[float], *, chunk_rows: int = 1024
) -> torch.Tensor:
    """Predicted class of the τ-normalised classifier for every τ and every row, from one matrix product.

    The predictions of ``logits.argmax(1)`` over :func:`tau_sweep`'s logits
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
    larger index). The results equal the arg-max of :func:`tau_sweep`'s
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
    weight = weight.to(device=device, dtype=features.dtype)
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
    block_buffer = torch.empty(rows, num_classes, dtype=features.dtype, device=device)
    best_buffer = torch.empty_like(block_buffer)
    where_buffer = torch.empty(rows, num_classes, dtype=torch.int64, device=device)
    record_buffer = torch.empty(rows, num_classes, dtype=torch.bool, device=device)
    for start in range(0, n, chunk_rows):
        stop = min(start + chunk_rows, n)
        size = stop - start
        block = torch.mm(features[start:stop], sorted_weight_t, out=block_buffer[:size])  # (B, C), sorted
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


class TauNormHead(nn.Module):
    """τ-normalised classifier: ``x @ (W / ||W||^τ).T``, bias dropped as in the official code.

    Args:
        weight: (C, d) weight of the trained joint classifier (copied, frozen).
        tau: the exponent, in [0, 2] in the paper.
    """

    def __init__(self, weight: torch.Tensor, tau: float) -> None:
        super().__init__()
        self.register_buffer("weight", weight.detach().clone())
        self.register_buffer("tau", torch.tensor(float(tau)))

    @classmethod
    def from_linear(cls, linear: nn.Linear, tau: float) -> TauNormHead:
        """Build from a trained linear classifier."""
        return cls(linear.weight, tau)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(N, d) -> (N, C)."""
        return F.linear(features, tau_normalize(self.weight, float(self.tau)))


class LWSHead(nn.Module):
    """Learnable weight scaling: ``(W x + b) * s`` with W, b frozen and one scale ``s_j`` per class.

    As in the official code the bias is scaled too. ``scales`` (C,) start at 1
    and are the only parameter.

    Args:
        weight: (C, d) weight of the trained joint classifier (copied, frozen).
        bias: (C,) its bias, or None.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("weight", weight.detach().clone())
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.scales = nn.Parameter(torch.ones(weight.shape[0], dtype=weight.dtype, device=weight.device))

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> LWSHead:
        """Build from a trained linear classifier."""
        return cls(linear.weight, linear.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(N, d) -> (N, C)."""
        return F.linear(features, self.weight, self.bias) * self.scales


class CosineHead(nn.Module):
    """Cosine classifier: ``cos(x, w_j)`` per class, features and weights L2-normalised, no bias.

    Logits lie in [-1, 1]; losses that expect them (LDAM, Cao et al. 2019)
    apply their own scale. Initialised like the ``NormedLinear`` of LDAM-DRW
    (uniform rows renormalised).

    Args:
        num_features: d.
        num_classes: C.
    """

    def __init__(self, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, num_features).uniform_(-1, 1).renorm_(2, 0, 1e-5).mul_(1e5))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(N, d) -> (N, C) cosine similarities."""
        return F.linear(F.normalize(features, dim=1), F.normalize(self.weight, dim=1))


class LogitAdjustedHead(nn.Module):
    """Post-hoc logit adjustment (Menon et al. 2021): ``W x + b - τ log π`` on the frozen joint classifier.

    The same as a linear layer whose bias is ``b - τ log π``, which is how it
    can be folded for export.

    Args:
        weight: (C, d) weight of the trained joint classifier (copied, frozen).
        bias: (C,) its bias, or None.
        log_prior: (C,) ``log π_j`` of the training classes.
        tau: the strength τ (0: the joint classifier).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, log_prior: torch.Tensor, tau: float) -> None:
        super().__init__()
        self.register_buffer("weight", weight.detach().clone())
        self.register_buffer("bias", torch.zeros(weight.shape[0]) if bias is None else bias.detach().clone())
        self.register_buffer("log_prior", log_prior.detach().clone().to(weight.dtype))
        self.register_buffer("tau", torch.tensor(float(tau)))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(N, d) -> (N, C)."""
        return F.linear(features, self.weight, self.bias - self.tau * self.log_prior)
