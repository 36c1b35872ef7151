"""Fold every stage-2 classifier into one linear layer on (possibly pre-processed) features.

An exported model has no post-processing step: τ, the LWS scales, the logit
adjustment or the NCM centroids live in the weights of a plain ``nn.Linear``.

========================  =====================  ==========================================
head                      features               linear layer
========================  =====================  ==========================================
``nn.Linear`` (joint,     as they are            as it is
cRT)
τ-norm                    as they are            ``W / ||W||^τ`` per row, no bias
LWS                       as they are            ``W * s``, ``b * s`` (the bias is scaled too)
logit adjustment          as they are            ``W``, ``b - τ log π``
cosine (LDAM joint)       L2-normalised          rows of ``W`` L2-normalised, no bias
NCM cosine                centred, L2-norm.      centroids L2-normalised, no bias
NCM cl2n / l2             centred, L2-norm. /    ``2c`` and ``-||c||²``, then the distance map
                          as they are
========================  =====================  ==========================================

NCM's negative Euclidean distance ``-||z - c||`` is not linear in the features
``z``, but ``-||z - c||² = -||z||² + (2c·z - ||c||²)`` is a linear layer plus a
per-row term: the folded head computes ``L = 2c·z - ||c||²`` with the linear
layer, then the fixed elementwise map ``-sqrt(max(||z||² - L, 0))``, which gives
back ``-||z - c||`` exactly (up to float rounding, the way ``torch.cdist``
computes it for batches). ``||z||²`` is computed from ``z`` (it is 1 for cl2n
features, except for a feature equal to the mean).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..models.heads import CosineHead, LogitAdjustedHead, LWSHead, TauNormHead, tau_normalize
from ..models.ncm import NCMHead
from .errors import ExportError


class FoldedHead(nn.Module):
    """(N, d) features -> (N, C) logits: optional centring and L2 normalisation, one linear layer, optional distance.

    Args:
        linear: the (C, d) linear layer holding the whole classifier.
        center: (d,) subtracted from the features first, or None.
        l2_normalize: L2-normalise the (centred) features before the linear layer.
        distance: the linear layer gives ``2c·z - ||c||²`` and the output is
            ``-||z - c||`` (NCM's negative Euclidean distance; see the module docstring).
    """

    def __init__(
        self,
        linear: nn.Linear,
        *,
        center: torch.Tensor | None = None,
        l2_normalize: bool = False,
        distance: bool = False,
    ) -> None:
        super().__init__()
        self.linear = linear
        self.register_buffer("center", None if center is None else center.detach().clone().float())
        self.l2_normalize = l2_normalize
        self.distance = distance

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(N, d) -> (N, C)."""
        z = features
        if self.center is not None:
            z = z - self.center
        if self.l2_normalize:
            z = F.normalize(z, dim=1)
        logits = self.linear(z)
        if self.distance:
            squared = z.pow(2).sum(dim=1, keepdim=True) - logits  # ||z||² - 2c·z + ||c||² = ||z - c||²
            logits = -squared.clamp_min(0.0).sqrt()
        return logits

    def describe(self) -> dict[str, object]:
        """What the head does to the features, for the artifact's metadata."""
        steps = (["subtract the training-feature mean"] if self.center is not None else []) + (
            ["L2-normalise"] if self.l2_normalize else []
        )
        return {
            "features": ", then ".join(steps) or "as they are",
            "output": "negative Euclidean distance to each centroid" if self.distance else "linear logits",
        }


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """An ``nn.Linear`` holding copies of (C, d) ``weight`` and (C,) ``bias`` (float32, frozen)."""
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight.detach().float())
        if bias is not None:
            layer.bias.copy_(bias.detach().float())
    return layer.requires_grad_(False)


def _fold_ncm(head: NCMHead) -> FoldedHead:
    centroids = head.centroids.detach().float()
    center = None if head.metric == "l2" else head.mean  # the l2 metric compares raw features
    l2_normalize = head.metric != "l2"
    if head.metric == "cosine":
        return FoldedHead(_linear(F.normalize(centroids, dim=1), None), center=center, l2_normalize=True)
    squared_norms = centroids.pow(2).sum(dim=1)
    return FoldedHead(_linear(2.0 * centroids, -squared_norms), center=center, l2_normalize=l2_normalize, distance=True)


def fold_head(head: nn.Module) -> FoldedHead:
    """The classifier ``head`` as a :class:`FoldedHead` giving the same (N, C) logits on (N, d) features.

    Raises:
        ExportError: for a head type that has no folding.
    """
    head = head.cpu()
    if isinstance(head, nn.Linear):
        return FoldedHead(_linear(head.weight, head.bias))
    if isinstance(head, TauNormHead):
        return FoldedHead(_linear(tau_normalize(head.weight, float(head.tau)), None))
    if isinstance(head, LWSHead):
        scales = head.scales.detach()
        bias = None if head.bias is None else head.bias * scales
        return FoldedHead(_linear(head.weight * scales.unsqueeze(1), bias))
    if isinstance(head, LogitAdjustedHead):
        return FoldedHead(_linear(head.weight, head.bias - head.tau * head.log_prior))
    if isinstance(head, CosineHead):
        return FoldedHead(_linear(F.normalize(head.weight.detach(), dim=1), None), l2_normalize=True)
    if isinstance(head, NCMHead):
        return _fold_ncm(head)
    raise ExportError(f"cannot export a classifier of type {type(head).__name__}: no folding into a linear layer")
