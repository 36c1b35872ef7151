"""Label-aware smoothing of MiSLAS (losses.label_aware_epsilons, losses.LabelAwareSmoothingLoss)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from longtail.errors import ConfigError
from longtail.losses import LabelAwareSmoothingLoss, label_aware_epsilons


def test_epsilons_by_hand_counts_100_10_1():
    # t = (n - 1) / 99 = [1, 1/11, 0]
    eps = label_aware_epsilons([100, 10, 1], 0.4, 0.1)
    expected = [0.4, 0.1 + 0.3 * math.sin(math.pi / 22), 0.1]  # 0.1 + 0.3 * 0.14231 = 0.14269
    torch.testing.assert_close(eps, torch.tensor(expected))
    assert eps[1].item() == pytest.approx(0.142695, abs=1e-6)
    assert eps.dtype == torch.float32


@pytest.mark.parametrize(
    ("shape", "middle"),
    [
        ("concave", 0.1 + 0.3 * math.sqrt(0.5)),  # 0.31213: above the line
        ("linear", 0.25),
        ("convex", 0.1 + 0.3 * (1 - math.sqrt(0.5))),  # 0.18787: below the line
    ],
)
def test_shapes_at_the_midpoint(shape: str, middle: float):
    eps = label_aware_epsilons([101, 51, 1], 0.4, 0.1, shape)  # t = [1, 1/2, 0]
    torch.testing.assert_close(eps, torch.tensor([0.4, middle, 0.1]))


def test_convex_is_mislas_formula():
    counts = [500, 120, 40, 7]
    t = [(n - 7) / (500 - 7) for n in counts]
    mislas = [0.3 + (0.3 - 0.0) * math.sin(1.5 * math.pi + x * math.pi / 2) for x in t]
    torch.testing.assert_close(label_aware_epsilons(counts, 0.3, 0.0, "convex"), torch.tensor(mislas))


def test_exp_shape_and_order_of_classes_does_not_matter():
    eps = label_aware_epsilons([1, 101, 51], 0.4, 0.0, "exp", power=2.0)
    torch.testing.assert_close(eps, torch.tensor([0.0, 0.4, 0.1]))
    with pytest.raises(ConfigError, match="power"):
        label_aware_epsilons([1, 2], 0.4, 0.0, "exp")


def test_equal_counts_give_eps_head_without_dividing_by_zero():
    eps = label_aware_epsilons([50, 50, 50], 0.3, 0.0)
    torch.testing.assert_close(eps, torch.full((3,), 0.3))


def test_bad_arguments():
    with pytest.raises(ConfigError, match="eps_head"):
        label_aware_epsilons([10, 1], 1.5, 0.0)
    with pytest.raises(ConfigError, match="shape"):
        label_aware_epsilons([10, 1], 0.4, 0.0, "cubic")


def test_loss_by_hand():
    counts = [100, 10, 1]
    loss_fn = LabelAwareSmoothingLoss(counts, 0.4, 0.1)
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.3, -1.0, 2.0], [-0.5, 0.2, 0.1]], dtype=torch.float64)
    targets = torch.tensor([0, 2, 1])
    eps = label_aware_epsilons(counts, 0.4, 0.1).double()[targets]
    log_p = F.log_softmax(logits, dim=1)
    per_sample = [(1 - eps[i]) * -log_p[i, targets[i]] + eps[i] * -log_p[i].mean() for i in range(3)]
    torch.testing.assert_close(loss_fn(logits, targets), torch.stack(per_sample).mean())


def test_zero_smoothing_is_cross_entropy_and_uniform_equals_plain_label_smoothing():
    logits = torch.randn(7, 4, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([0, 1, 2, 3, 0, 1, 2])
    unsmoothed = LabelAwareSmoothingLoss([9, 5, 3, 1], 0.0, 0.0)
    torch.testing.assert_close(unsmoothed(logits, targets), F.cross_entropy(logits, targets))
    # Equal ε for all classes is torch's label smoothing (mass ε spread over all classes).
    torch.testing.assert_close(
        LabelAwareSmoothingLoss([9, 9, 9, 9], 0.2, 0.0)(logits, targets),
        F.cross_entropy(logits, targets, label_smoothing=0.2),
    )


def test_loss_moves_with_the_module_and_upcasts_half_precision():
    loss_fn = LabelAwareSmoothingLoss([100, 10, 1], 0.4, 0.1)
    assert "epsilons" in dict(loss_fn.named_buffers())
    logits = torch.randn(4, 3).to(torch.bfloat16).requires_grad_()
    loss = loss_fn(logits, torch.tensor([0, 1, 2, 0]))
    assert loss.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(logits.grad.float()).all()
    with pytest.raises(ValueError, match="classes"):
        loss_fn(torch.randn(2, 4), torch.tensor([0, 1]))
