"""Fold every classifier into one linear layer on (possibly pre-processed) features.

An exported model has no post-processing step: τ, the LWS scales, the logit
adjustment or the NCM centroids live in the weights of a plain ``nn.Linear``.
Each head says how, with ``as_linear()`` (a :class:`~longtail.models.heads.LinearForm`):

========================  =====================  ==========================================
head                      features               linear layer
========================  =====================  ==========================================
linear (joint, cRT)       as they are            as it is
τ-norm                    as they are            ``W / ||W||^τ`` per row, no bias
LWS                       as they are            ``W * s``, ``b * s`` (the bias is scaled too)
logit adjustment          as they are            ``W``, ``b - τ log π``
cosine (LDAM joint)       L2-normalised          rows of ``W`` L2-normalised, no bias
NCM cosine                centred, L2-norm.      centroids L2-normalised, no bias
NCM cl2n / l2             centred, L2-norm. /    ``2c`` and ``-||c||²``, then ``- ||z||²``
                          as they are
========================  =====================  ==========================================

NCM's negative squared Euclidean distance ``-||z - c||²`` is
``(2c·z - ||c||²) - ||z||²``: a linear layer, then one number per row
subtracted, so the exported logits are NCM's scores, not just its arg-max.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .errors import ExportError


class FoldedHead(nn.Module):
    """(N, d) features -> (N, C) logits: optional centring and L2 normalisation, one linear layer, optional distance.

    Args:
        linear: the (C, d) linear layer holding the whole classifier.
        center: (d,) subtracted from the features first, or None.
        l2_normalize: L2-normalise the (centred) features before the linear layer.
        squared_distance: subtract ``||z||²`` from the linear layer's output (NCM's ``-||z - c||²``;
            see the module docstring).
    """

    def __init__(
        self,
        linear: nn.Linear,
        *,
        center: torch.Tensor | None = None,
        l2_normalize: bool = False,
        squared_distance: bool = False,
    ) -> None:
        super().__init__()
        self.linear = linear
        self.register_buffer("center", None if center is None else center.detach().clone().float())
        self.l2_normalize = l2_normalize
        self.squared_distance = squared_distance
        self.output_scale = 1.0  # with output_offset, (C,) or None: applied last (see with_prior)
        self.register_buffer("output_offset", None)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(N, d) -> (N, C)."""
        z = features
        if self.center is not None:
            z = z - self.center
        if self.l2_normalize:
            z = F.normalize(z, dim=1)
        logits = self.linear(z)
        if self.squared_distance:  # 2c·z - ||c||² - ||z||² = -||z - c||², never above 0
            logits = (logits - z.pow(2).sum(dim=1, keepdim=True)).clamp_max(0.0)
        if self.output_offset is not None:
            logits = logits * self.output_scale + self.output_offset
        return logits

    def describe(self) -> dict[str, object]:
        """What the head does to the features, for the artifact's metadata."""
        steps = (["subtract the training-feature mean"] if self.center is not None else []) + (
            ["L2-normalise"] if self.l2_normalize else []
        )
        return {
            "features": ", then ".join(steps) or "as they are",
            "output": "negative squared Euclidean distance to each centroid"
            if self.squared_distance
            else "linear logits",
        }


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """An ``nn.Linear`` holding copies of (C, d) ``weight`` and (C,) ``bias`` (float32, frozen)."""
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight.detach().float())
        if bias is not None:
            layer.bias.copy_(bias.detach().float())
    return layer.requires_grad_(False)


def fold_head(head: nn.Module) -> FoldedHead:
    """The classifier ``head`` as a :class:`FoldedHead` giving the same (N, C) logits on (N, d) features.

    Raises:
        ExportError: for a head that cannot say how it is linear (no ``as_linear``).
    """
    if not hasattr(head, "as_linear"):
        raise ExportError(f"cannot export a classifier of type {type(head).__name__}: no folding into a linear layer")
    form = head.cpu().as_linear()
    return FoldedHead(
        _linear(form.weight, form.bias),
        center=form.center,
        l2_normalize=form.l2_normalize,
        squared_distance=form.squared_distance,
    )


# A class of prior 0 gets this bias, not -inf: never predicted, and the exported logits stay finite.
ZERO_PRIOR_BIAS = -1000.0


def with_prior(head: FoldedHead, scale: float, offset: torch.Tensor) -> FoldedHead:
    """``head``'s logits times ``scale`` plus the (C,) ``offset``: a calibration temperature and a known prior
    (:func:`longtail.shift.fold_known_prior`) folded in. A linear output takes them into its weight and bias
    (``(scale W) z + (scale b + offset)``); NCM's distances get them as a last step (the ``||z||²`` term is
    not in the linear layer). Entries of ``offset`` below :data:`ZERO_PRIOR_BIAS` are raised to it."""
    offset = offset.double().clamp_min(ZERO_PRIOR_BIAS)
    linear = head.linear
    if head.squared_distance:
        folded = FoldedHead(
            _linear(linear.weight, linear.bias),
            center=head.center,
            l2_normalize=head.l2_normalize,
            squared_distance=True,
        )
        folded.output_scale = float(scale)
        folded.output_offset = offset.float()
        return folded
    bias = linear.bias.double() if linear.bias is not None else torch.zeros(linear.out_features, dtype=torch.float64)
    return FoldedHead(
        _linear(linear.weight.double() * scale, bias * scale + offset),
        center=head.center,
        l2_normalize=head.l2_normalize,
    )
