import numpy as np
import pytest
import torch
from torch import nn

from longtail.config import CRTConfig, LWSConfig
from longtail.losses import log_prior
from longtail.stages import Features, choose_tau, fit_crt, fit_lws, fit_ncm
from longtail.stages.decouple import choose_logit_adjustment

CPU = torch.device("cpu")


def blobs(counts, seed=0, spread=0.6) -> Features:
    """Gaussian blobs, one per class, ``counts[c]`` points each: (N, 8) features."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(len(counts), 8) * 3
    x = torch.cat([centres[c] + spread * torch.randn(n, 8, generator=g) for c, n in enumerate(counts)])
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    return Features(x, y)


def biased_joint_head(num_classes=4) -> nn.Linear:
    """A linear classifier whose head class has the largest weight norm, as joint training leaves it."""
    head = nn.Linear(8, num_classes)
    with torch.no_grad():
        head.weight.copy_(torch.eye(num_classes, 8) * torch.tensor([4.0, 1.0, 0.5, 0.3]).view(-1, 1)[:num_classes])
        head.bias.copy_(torch.tensor([1.0, 0.0, -0.5, -1.0])[:num_classes])
    return head


def accuracy(head, data: Features) -> float:
    with torch.no_grad():
        return float((head(data.x).argmax(1) == data.y).float().mean())


def test_crt_learns_a_fresh_classifier():
    train, test = blobs([200, 50, 10, 4]), blobs([50] * 4, seed=1)
    head = fit_crt(train, 4, CRTConfig(epochs=20, batch_size=64, lr=0.2), seed=0, device=CPU)
    assert isinstance(head, nn.Linear) and accuracy(head, test) > 0.95


def test_crt_is_seeded():
    train = blobs([100, 20, 5, 3])
    cfg = CRTConfig(epochs=2, batch_size=32)
    a = fit_crt(train, 4, cfg, seed=7, device=CPU)
    b = fit_crt(train, 4, cfg, seed=7, device=CPU)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


def test_lws_only_moves_scales_and_helps_rare_classes():
    train, test = blobs([200, 50, 10, 4]), blobs([50] * 4, seed=1)
    joint = biased_joint_head()
    lws = fit_lws(train, joint, LWSConfig(epochs=30, batch_size=64, lr=0.2), seed=0, device=CPU)
    assert torch.equal(lws.weight, joint.weight) and torch.equal(lws.bias, joint.bias)
    assert not torch.allclose(lws.scales, torch.ones(4))
    assert accuracy(lws, test) > accuracy(joint, test)


def test_tau_is_chosen_on_validation():
    val = blobs([30] * 4, seed=2)
    joint = biased_joint_head()
    joint.bias.data.zero_()
    head, curve = choose_tau(joint, val, np.linspace(0, 2, 21), train_counts=[200, 50, 10, 4], many=100, few=20)
    assert [p["tau"] for p in curve] == pytest.approx(np.linspace(0, 2, 21).tolist())
    best = max(p["macro"] for p in curve)
    first_best = next(p["tau"] for p in curve if p["macro"] == best)
    assert float(head.tau) == pytest.approx(first_best)  # ties go to the smallest τ
    assert curve[0]["macro"] < best  # τ = 0 is the biased joint classifier


def test_tau_select_metric():
    val = blobs([30] * 4, seed=2)
    joint = biased_joint_head()
    head, curve = choose_tau(joint, val, [0.0, 1.0, 2.0], train_counts=[200, 50, 10, 4], select="few", many=100, few=20)
    assert float(head.tau) == max(curve, key=lambda p: (p["few"], -p["tau"]))["tau"]


def test_ncm_head_on_blobs():
    train, test = blobs([200, 50, 10, 4]), blobs([50] * 4, seed=1)
    assert accuracy(fit_ncm(train, 4), test) > 0.95


def test_logit_adjustment_is_chosen_on_validation_and_helps_rare_classes():
    counts = [200, 50, 10, 4]
    val = blobs([30] * 4, seed=2)
    joint = biased_joint_head()
    head, curve = choose_logit_adjustment(joint, val, np.linspace(0, 2, 11), train_counts=counts, many=100, few=20)
    assert len(curve) == 11 and curve[0]["tau"] == 0.0
    with torch.no_grad():
        expected = joint(val.x) - float(head.tau) * log_prior(counts)
        assert torch.allclose(head(val.x), expected, atol=1e-5)
    best = max(p["macro"] for p in curve)
    assert float(head.tau) == pytest.approx(next(p["tau"] for p in curve if p["macro"] == best))
    assert best > curve[0]["macro"]  # τ = 0 is the biased joint classifier


@pytest.mark.parametrize("sampler", ["class_aware", "progressive", "power"])
def test_crt_accepts_every_sampler(sampler: str):
    train, test = blobs([200, 50, 10, 4]), blobs([50] * 4, seed=1)
    head = fit_crt(train, 4, CRTConfig(epochs=10, batch_size=64, lr=0.2), sampler=sampler, seed=0, device=CPU)
    assert accuracy(head, test) > 0.9
