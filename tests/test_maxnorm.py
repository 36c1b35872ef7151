"""MaxNorm projection of classifier weight rows (engine.maxnorm)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from longtail.engine.maxnorm import MaxNorm, project_rows_, relative_radius


def test_inside_rows_untouched_outside_rows_projected_to_the_radius():
    weight = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0], [-6.0, 8.0], [1.2, 1.6]])  # norms 5, .5, 0, 10, 2
    original = weight.clone()
    assert project_rows_(weight, 2.0) is weight
    norms = weight.norm(dim=1)
    # Inside (or on) the ball: bit for bit the same.
    for row in (1, 2, 4):
        assert torch.equal(weight[row], original[row])
    # Outside: scaled back along the same direction onto the sphere.
    torch.testing.assert_close(norms[[0, 3]], torch.tensor([2.0, 2.0]), rtol=0, atol=1e-6)
    torch.testing.assert_close(weight[0], torch.tensor([1.2, 1.6]))
    torch.testing.assert_close(weight[3], torch.tensor([-1.2, 1.6]))


def test_radius_zero_or_less_is_off():
    weight = torch.randn(4, 3) * 10
    original = weight.clone()
    project_rows_(weight, 0.0)
    project_rows_(weight, -1.0)
    assert torch.equal(weight, original)


def test_projection_is_idempotent_and_needs_no_grad():
    weight = nn.Parameter(torch.randn(10, 6, generator=torch.Generator().manual_seed(0)) * 3)
    project_rows_(weight, 1.5)  # in place on a leaf that requires grad: allowed, no_grad inside
    once = weight.detach().clone()
    project_rows_(weight, 1.5)
    assert torch.equal(weight.detach(), once)
    assert weight.detach().norm(dim=1).max().item() <= 1.5 + 1e-6
    assert weight.grad is None and weight.requires_grad


def test_maxnorm_on_a_linear_head_leaves_the_bias_alone():
    torch.manual_seed(0)
    head = nn.Linear(8, 5)
    with torch.no_grad():
        head.weight.mul_(10)
        head.bias.fill_(100.0)
    MaxNorm(head, 1.0)()
    assert head.weight.norm(dim=1).max().item() <= 1.0 + 1e-6
    assert torch.equal(head.bias, torch.full((5,), 100.0))


def test_maxnorm_on_a_weight_tensor_and_refusals():
    weight = torch.ones(3, 4) * 2  # norms 4
    MaxNorm(weight, 1.0)()
    torch.testing.assert_close(weight.norm(dim=1), torch.ones(3))
    with pytest.raises(ValueError, match="bias is never projected"):
        MaxNorm(torch.ones(3), 1.0)
    with pytest.raises(ValueError, match="no weight"):
        MaxNorm(nn.ReLU(), 1.0)


def test_conv_shaped_rows_are_projected_as_a_whole():
    weight = torch.ones(2, 3, 2, 2)  # norm of each output's row: sqrt(12)
    project_rows_(weight, 1.0)
    torch.testing.assert_close(weight.flatten(1).norm(dim=1), torch.ones(2))


def test_relative_radius_as_in_the_reference():
    weight = torch.tensor([[1.0, 0.0], [0.0, 3.0], [0.0, 5.0]])  # norms 1, 3, 5
    assert relative_radius(weight, 0.1) == pytest.approx(1.0 + 0.1 * 4.0)
    assert relative_radius(weight, 0.0) == 1.0 and relative_radius(weight, 1.0) == 5.0
