"""MaxNorm on a classifier's weight rows by projected gradient descent (weight balancing, Alshammari et al., CVPR 2022).

After an optimiser step every class row ``w_j`` of the classifier's weight with
``||w_j|| > r`` is scaled back onto the sphere of radius ``r``; rows inside the
ball are left exactly as they are. This is the Euclidean projection onto the
set ``{W : ||w_j|| <= r for every j}``, so training with it is projected
gradient descent.

What the reference (``MaxNorm_via_PGD`` in ShadeAlsha/LTR-weight-balancing,
``utils/regularizers.py``) does, and how this differs:

- It loops over the classifier's weight *and* bias, but gives every 1-D
  parameter an infinite threshold, so the bias is never projected: only the
  weight rows are. Here too (:class:`MaxNorm` refuses a 1-D parameter).
- Its ``thresh`` is relative: the radius is ``min_j ||w_j|| + thresh * (max_j
  ||w_j|| - min_j ||w_j||)`` of the weight when the projection is set up (the
  stage-1 classifier; its demo uses ``thresh = 0.1``). :func:`relative_radius`
  gives that radius; :class:`MaxNorm` takes an absolute one.
- Its training loop (``utils/trainval.py``) projects once per *epoch*, after
  the epoch's last step, not after every step. :class:`MaxNorm` as
  ``after_step`` projects after every step (projected gradient descent proper);
  calling it from an end-of-epoch hook instead reproduces the reference.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def project_rows_(weight: torch.Tensor, radius: float) -> torch.Tensor:
    """Scale, in place, every row of ``weight`` whose L2 norm exceeds ``radius`` back to norm ``radius``.

    Args:
        weight: (C, d) (or (C, ...): a row is everything of one output) parameter or tensor.
        radius: the ball's radius; ``<= 0`` turns the projection off.

    Returns:
        ``weight`` itself. Rows with norm ``<= radius`` are untouched, bit for bit.
    """
    if radius <= 0:
        return weight
    if weight.dim() < 2:
        raise ValueError(f"expected a (C, d) weight, got shape {tuple(weight.shape)} (a bias is never projected)")
    # Norms in float64 so that a projected row lands on the radius up to the weight's own rounding.
    norms = weight.detach().flatten(1).double().norm(dim=1)  # (C,)
    outside = norms > radius
    scale = torch.where(outside, radius / norms.clamp_min(torch.finfo(torch.float64).tiny), 1.0)
    shape = (-1,) + (1,) * (weight.dim() - 1)
    rows = outside.view(shape).expand_as(weight)
    # torch.where, not a multiplication of every row: rows inside keep their exact values.
    projected = (weight.double() * scale.view(shape)).to(weight.dtype)
    weight.copy_(torch.where(rows, projected, weight))
    return weight


def relative_radius(weight: torch.Tensor, thresh: float) -> float:
    """The reference's radius from a relative threshold: ``min + thresh * (max - min)`` of the row norms.

    Args:
        weight: (C, d) classifier weight (the stage-1 one, before fine-tuning).
        thresh: in [0, 1]; 0 caps every row at the smallest norm, 1 at the largest.
    """
    norms = weight.detach().flatten(1).double().norm(dim=1)
    return float(norms.min() + thresh * (norms.max() - norms.min()))


class MaxNorm:
    """``MaxNorm(head_or_weight, radius)()`` projects the weight rows into the ball: an ``after_step`` callable.

    Args:
        target: a module with a ``weight`` of shape (C, d) (an ``nn.Linear`` head) or that
            weight itself. A bias is left alone (as in the reference).
        radius: the ball's radius; ``<= 0`` makes the call a no-op.
    """

    def __init__(self, target: nn.Module | torch.Tensor, radius: float) -> None:
        weight = target if isinstance(target, torch.Tensor) else getattr(target, "weight", None)
        if not isinstance(weight, torch.Tensor):
            raise ValueError(f"{type(target).__name__} has no weight tensor to project")
        if weight.dim() < 2:
            raise ValueError(f"expected a (C, d) weight, got shape {tuple(weight.shape)} (a bias is never projected)")
        self.weight = weight
        self.radius = float(radius)

    def __call__(self) -> None:
        """Project now (after an optimiser step)."""
        project_rows_(self.weight, self.radius)
