"""Mixup / CutMix (engine.mixing) and their use in the training loop (engine.loops)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from longtail.engine.loops import make_loader, train_epochs, train_one_epoch
from longtail.engine.maxnorm import MaxNorm
from longtail.engine.mixing import Mixer, create_mixer, cutmix_box, mix_batch, mixed_correct, mixed_loss
from longtail.errors import ConfigError
from longtail.losses import LOSSES, create_loss

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def batch(n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 3, 6, 5) distinct random images and labels 0..n-1 (so labels_b reveals the permutation)."""
    images = torch.randn(n, 3, 6, 5, generator=torch.Generator().manual_seed(seed))
    return images, torch.arange(n)


def test_mixup_is_lam_x_plus_one_minus_lam_partner():
    images, labels = batch()
    for seed in range(20):
        mixed, a, b, lam = mix_batch(images, labels, mixup_alpha=0.4, generator=torch.Generator().manual_seed(seed))
        assert 0.0 <= lam <= 1.0
        assert torch.equal(a, labels) and sorted(b.tolist()) == labels.tolist()  # b is a permutation
        torch.testing.assert_close(mixed, lam * images + (1 - lam) * images[b], rtol=0, atol=1e-6)
    assert torch.equal(images, batch()[0])  # the input batch is not modified


def test_cutmix_pastes_one_box_and_lam_is_its_area():
    images, labels = batch(16)
    for seed in range(30):
        mixed, _, b, lam = mix_batch(
            images, labels, mixup_alpha=0.0, cutmix_alpha=1.0, generator=torch.Generator().manual_seed(seed)
        )
        from_partner = (mixed == images[b]).all(dim=(0, 1)) & ~(mixed == images).all(dim=(0, 1))  # (H, W)
        rows, cols = from_partner.any(dim=1).nonzero(), from_partner.any(dim=0).nonzero()
        if len(rows):  # a rectangle: every pixel between its extreme rows and columns is pasted
            assert from_partner[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()
        assert lam == pytest.approx(1.0 - from_partner.double().mean().item())
        untouched = ~from_partner
        assert torch.equal(mixed[..., untouched], images[..., untouched])


def test_cutmix_box_area_follows_lam_and_is_clipped():
    generator = torch.Generator().manual_seed(0)
    top, bottom, left, right = cutmix_box(0.75, 32, 32, generator)  # a 16 x 16 box around a random centre
    assert 0 <= top <= bottom <= 32 and 0 <= left <= right <= 32
    assert bottom - top <= 16 and right - left <= 16
    assert cutmix_box(1.0, 32, 32, generator)[:2] in {(t, t) for t in range(33)}  # lam 1: empty box


def test_both_alphas_switch_between_mixup_and_cutmix_half_the_time():
    images, labels = batch()
    mixer = Mixer(mixup_alpha=1.0, cutmix_alpha=1.0, seed=0)
    cutmix = 0
    for _ in range(400):
        mixed, _, b, lam = mixer(images, labels)
        # CutMix copies every pixel from one of the two images; mixup blends them.
        cutmix += bool(((mixed == images) | (mixed == images[b])).all())
    assert 160 <= cutmix <= 240


def test_mix_prob_is_the_share_of_mixed_batches():
    images, labels = batch()
    never = Mixer(mixup_alpha=1.0, mix_prob=0.0)
    assert all(never(images, labels)[3] == 1.0 for _ in range(20))
    mixed_images, a, b, lam = Mixer(mixup_alpha=0.0)(images, labels)
    assert mixed_images is images and a is b and lam == 1.0
    half = Mixer(mixup_alpha=1.0, mix_prob=0.5, seed=1)
    mixed = sum(half(images, labels)[3] != 1.0 for _ in range(400))
    assert 160 <= mixed <= 240
    assert create_mixer(mixup_alpha=0.0, cutmix_alpha=0.0) is None
    assert create_mixer(mixup_alpha=0.2, mix_prob=0.0) is None
    assert isinstance(create_mixer(mixup_alpha=0.2), Mixer)


def test_beta_draws_have_the_beta_mean_and_spread():
    images, labels = batch(2)
    mixer = Mixer(mixup_alpha=0.2, seed=3)
    lams = torch.tensor([mixer(images, labels)[3] for _ in range(2000)], dtype=torch.float64)
    # Beta(0.2, 0.2): mean 1/2, variance 1 / (4 (2α + 1)) = 0.1786, mass near 0 and 1.
    assert lams.mean().item() == pytest.approx(0.5, abs=0.03)
    assert lams.var().item() == pytest.approx(1 / (4 * 1.4), abs=0.02)
    assert ((lams >= 0) & (lams <= 1)).all()


def test_same_state_same_draws_and_set_state_resumes_exactly():
    images, labels = batch()
    first, second = Mixer(mixup_alpha=0.4, cutmix_alpha=1.0, seed=7), Mixer(mixup_alpha=0.4, cutmix_alpha=1.0, seed=7)
    for _ in range(5):
        x1, a1, b1, l1 = first(images, labels)
        x2, a2, b2, l2 = second(images, labels)
        assert torch.equal(x1, x2) and torch.equal(b1, b2) and l1 == l2
    state = first.get_state()
    expected = [first(images, labels) for _ in range(5)]
    resumed = Mixer(mixup_alpha=0.4, cutmix_alpha=1.0, seed=123)
    resumed.set_state(state)
    for (x1, _, b1, l1), (x2, _, b2, l2) in zip(expected, [resumed(images, labels) for _ in range(5)], strict=True):
        assert torch.equal(x1, x2) and torch.equal(b1, b2) and l1 == l2
    other = Mixer(mixup_alpha=0.4, cutmix_alpha=1.0, seed=8)
    assert any(other(images, labels)[3] != first(images, labels)[3] for _ in range(3))


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="mixup_alpha"):
        Mixer(mixup_alpha=-1.0)
    with pytest.raises(ConfigError, match="mix_prob"):
        Mixer(mixup_alpha=1.0, mix_prob=1.5)


def test_mixed_cross_entropy_is_the_soft_target_cross_entropy():
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a, b, lam = torch.tensor([0, 1, 2, 3, 0, 1]), torch.tensor([3, 3, 0, 1, 2, 1]), 0.3
    soft = lam * F.one_hot(a, 4) + (1 - lam) * F.one_hot(b, 4)
    expected = -(soft * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    torch.testing.assert_close(mixed_loss(F.cross_entropy, logits, a, b, lam), expected)
    assert torch.equal(mixed_loss(F.cross_entropy, logits, a, b, 1.0), F.cross_entropy(logits, a))


@pytest.mark.parametrize("name", sorted(LOSSES.names()))
def test_mixed_loss_works_for_every_stage1_loss(name: str):
    criterion = create_loss(name, [50, 10, 3, 1], drw_epoch=0)
    logits = torch.rand(5, 4, generator=torch.Generator().manual_seed(1)).mul(2).sub(1).requires_grad_()  # [-1, 1]
    a, b, lam = torch.tensor([0, 1, 2, 3, 0]), torch.tensor([1, 0, 3, 2, 2]), 0.6
    loss = mixed_loss(criterion, logits, a, b, lam)
    by_hand = lam * criterion(logits, a) + (1 - lam) * criterion(logits, b)
    assert loss.shape == () and math.isfinite(loss.item())
    torch.testing.assert_close(loss, by_hand)
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_mixed_correct_weighs_hits_by_lam():
    predictions = torch.tensor([0, 1, 2, 3])
    a, b = torch.tensor([0, 1, 0, 0]), torch.tensor([2, 2, 2, 3])
    assert mixed_correct(predictions, a, b, 0.25).item() == pytest.approx(0.25 * 2 + 0.75 * 2)
    assert mixed_correct(predictions, a, b, 1.0).item() == 2.0


# --------------------------------------------------------------------------- in the training loop


def toy_problem(seed: int = 0) -> tuple[nn.Module, torch.utils.data.DataLoader]:
    """A linear classifier over 3-channel 4x4 images, and a loader of 64 of them (4 batches of 16)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(64, 3, 4, 4, generator=generator)
    labels = torch.randint(0, 5, (64,), generator=generator)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 5))
    return model, make_loader(TensorDataset(images, labels), 16)


def trained(mixer=None, after_step=None, lr: float = 0.1) -> tuple[dict, list[torch.Tensor]]:
    model, loader = toy_problem()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    stats = train_one_epoch(model, loader, optimizer, device=CPU, mixer=mixer, after_step=after_step)
    return stats, [p.detach().clone() for p in model.parameters()]


def test_a_mixer_that_never_mixes_trains_exactly_like_none():
    stats_plain, params_plain = trained()
    stats_off, params_off = trained(mixer=Mixer(mixup_alpha=1.0, mix_prob=0.0))
    assert stats_plain == stats_off
    assert all(torch.equal(p, q) for p, q in zip(params_plain, params_off, strict=True))


def test_mixing_in_the_loop_is_reproducible_and_changes_training():
    stats_a, params_a = trained(mixer=Mixer(mixup_alpha=1.0, cutmix_alpha=1.0, seed=0))
    stats_b, params_b = trained(mixer=Mixer(mixup_alpha=1.0, cutmix_alpha=1.0, seed=0))
    assert stats_a == stats_b and all(torch.equal(p, q) for p, q in zip(params_a, params_b, strict=True))
    _, params_plain = trained()
    assert not all(torch.equal(p, q) for p, q in zip(params_a, params_plain, strict=True))


def test_loop_loss_and_accuracy_with_a_fixed_mix():
    """lr 0 keeps the model fixed: the epoch's loss and accuracy are the mixed ones, computed by hand."""
    lam = 0.25

    def shift_labels(images: torch.Tensor, labels: torch.Tensor):
        return images, labels, (labels + 1) % 5, lam

    stats, _ = trained(mixer=shift_labels, lr=0.0)
    model, loader = toy_problem()
    with torch.no_grad():
        images, labels = loader.dataset.tensors
        logits = model(images)
    other = (labels + 1) % 5
    loss = lam * F.cross_entropy(logits, labels) + (1 - lam) * F.cross_entropy(logits, other)
    hits = lam * (logits.argmax(1) == labels).sum() + (1 - lam) * (logits.argmax(1) == other).sum()
    assert stats["loss"] == pytest.approx(loss.item(), rel=1e-6)
    assert stats["acc"] == pytest.approx(100.0 * hits.item() / 64)


def test_mixed_batches_reach_the_model_channels_last():
    model, loader = toy_problem()
    layouts = []
    model.register_forward_pre_hook(
        lambda _m, inputs: layouts.append(inputs[0].is_contiguous(memory_format=torch.channels_last))
    )
    mixer = Mixer(mixup_alpha=1.0, cutmix_alpha=1.0)
    train_one_epoch(model, loader, torch.optim.SGD(model.parameters(), lr=0.1), device=CPU, mixer=mixer)
    assert layouts == [True] * 4


def test_after_step_runs_after_every_step_and_maxnorm_keeps_rows_in_the_ball():
    calls = []
    stats, _ = trained(after_step=lambda: calls.append(1))
    assert len(calls) == stats["steps"] == 4
    model, loader = toy_problem()
    head = model[1]
    optimizer = torch.optim.SGD(model.parameters(), lr=5.0)  # large steps push the rows out
    norms_seen = []

    def project_and_record() -> None:
        MaxNorm(head, 0.2)()
        norms_seen.append(head.weight.detach().norm(dim=1).max().item())

    train_one_epoch(model, loader, optimizer, device=CPU, after_step=project_and_record)
    assert len(norms_seen) == 4 and max(norms_seen) <= 0.2 + 1e-6


def test_train_epochs_passes_criterion_and_after_step():
    model, loader = toy_problem()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    losses_seen, steps = [], []

    def criterion(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        losses_seen.append(1)
        return F.cross_entropy(logits, labels)

    train_epochs(
        model,
        loader,
        optimizer,
        scheduler,
        2,
        device=CPU,
        start_epoch=lambda epoch: None,
        criterion=criterion,
        after_step=lambda: steps.append(1),
    )
    assert len(losses_seen) == len(steps) == 8
