"""Stage 1 with mixup / CutMix (``train.mixup_alpha``, ``train.cutmix_alpha``, ``train.mix_prob``) and MaxNorm
(``train.maxnorm``): the loss, reproducibility, exact resume, the projection, and off meaning the old training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from conftest import tiny_overrides
from longtail.cli import main
from longtail.config import load_config
from longtail.data.registry import create_dataset
from longtail.engine import stage1 as joint
from longtail.engine.mixing import mixed_loss
from longtail.errors import ConfigError

MIX = ["train.mixup_alpha=0.4", "train.cutmix_alpha=1.0", "train.mix_prob=0.8"]
RADIUS = 0.3  # below the row norms the tiny run reaches without it (about 0.6 to 1.7): the ball binds


def _tiny(root: Path, *extra: str) -> list[str]:
    return [*tiny_overrides(root), "train.epochs=3", *extra]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs"


def _train(root: Path, out: Path, *extra: str) -> Path:
    assert main(["train", *_tiny(root, *extra), "--out", str(out), "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def mixed_run(tiny_fmnist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted 3-epoch run with mixup, CutMix and MaxNorm on."""
    return _train(tiny_fmnist, tmp_path_factory.mktemp("mix") / "reference", *MIX, f"train.maxnorm={RADIUS}")


@pytest.mark.parametrize("loss", ["ce", "balanced_softmax"])
def test_mixup_loss_is_the_hand_formula_on_a_batch(loss: str, tiny_fmnist: Path):
    config = load_config(None, [*tiny_overrides(tiny_fmnist), "train.mixup_alpha=0.4", f"train.loss={loss}"])
    splits = create_dataset(config.data)
    images = torch.stack([splits.train[i][0] for i in range(8)]).float()
    labels = torch.stack([torch.as_tensor(splits.train[i][1]) for i in range(8)])
    mixer = joint.stage1_mixer(config)
    mixed, labels_a, labels_b, lam = mixer(images, labels)
    assert 0 < lam < 1 and torch.equal(labels_a, labels)
    # Each mixed image is lam * its own + (1 - lam) * one partner of the batch, whose label is labels_b's.
    for k in range(len(images)):
        partners = [j for j in range(len(images)) if torch.allclose(mixed[k], lam * images[k] + (1 - lam) * images[j])]
        assert len(partners) == 1 and labels_b[k] == labels[partners[0]]
    logits = torch.randn(len(labels), splits.num_classes, generator=torch.Generator().manual_seed(1))
    criterion = joint.stage1_loss(config, splits.train_counts)
    shifted = logits + (torch.tensor(splits.train_counts).float().log() if loss == "balanced_softmax" else 0)
    log_p = F.log_softmax(shifted, dim=1)
    rows = torch.arange(len(labels))
    hand = -(lam * log_p[rows, labels_a] + (1 - lam) * log_p[rows, labels_b]).mean()
    assert mixed_loss(criterion, logits, labels_a, labels_b, lam) == pytest.approx(float(hand), rel=1e-6)


def test_mixer_follows_the_keys_with_its_own_seed_per_rank():
    config = load_config(None, [*MIX, "seed=3"])
    mixer = joint.stage1_mixer(config, rank=1)
    assert (mixer.mixup_alpha, mixer.cutmix_alpha, mixer.mix_prob) == (0.4, 1.0, 0.8)
    expected = torch.Generator().manual_seed(3 + 1_000_003 + joint.MIX_SEED_OFFSET).get_state()
    assert torch.equal(mixer.get_state(), expected)
    # Distinct from rank 0's, and from the crop-and-flip generator of the same rank (seed + 1_000_003 * rank).
    assert not torch.equal(joint.stage1_mixer(config, rank=0).get_state(), mixer.get_state())
    assert not torch.equal(torch.Generator().manual_seed(3 + 1_000_003).get_state(), mixer.get_state())
    for off in (["train.mixup_alpha=0"], ["train.mixup_alpha=0.4", "train.mix_prob=0"]):
        assert joint.stage1_mixer(load_config(None, off)) is None  # the loop's plain path


@pytest.mark.slow  # seconds of subprocesses or training; `make test` runs it (the fast suite keeps under 3 minutes)
def test_same_seed_same_weights_with_mixing_on(mixed_run: Path, tiny_fmnist: Path, tmp_path: Path):
    again = _train(tiny_fmnist, tmp_path / "again", *MIX, f"train.maxnorm={RADIUS}")
    _assert_same_weights(_weights(again), _weights(mixed_run))
    other = _train(tiny_fmnist, tmp_path / "seed1", *MIX, f"train.maxnorm={RADIUS}", "seed=1")
    assert not torch.equal(_weights(other)["head.weight"], _weights(mixed_run)["head.weight"])


def test_resume_with_mixing_on_is_bitwise_equal(
    mixed_run: Path, tiny_fmnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Killed (in process) during epoch 2, after epoch 1's checkpoint; ``--resume`` must repeat the mixing draws."""
    run = tmp_path / "run"
    real_epoch = joint.train_one_epoch
    calls = {"n": 0}

    def crash_in_epoch_two(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(joint, "train_one_epoch", crash_in_epoch_two)
    argv = ["train", *_tiny(tiny_fmnist, *MIX, f"train.maxnorm={RADIUS}"), "--out", str(run), "--no-progress"]
    assert main(argv) == 130
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
    assert checkpoint["epoch"] == 1 and checkpoint["generators"][0]["mix"] is not None
    monkeypatch.undo()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    _assert_same_weights(_weights(run), _weights(mixed_run))
    results, expected = (json.loads((r / "results.json").read_text()) for r in (run, mixed_run))
    assert results["methods"] == expected["methods"]


def test_maxnorm_keeps_every_joint_row_in_the_ball(mixed_run: Path, tiny_run: Path):
    norms = _weights(mixed_run)["head.weight"].norm(dim=1)
    assert (norms <= RADIUS * (1 + 1e-6)).all()
    assert (norms > RADIUS * 0.999).any()  # the constraint was active: some rows sit on the sphere
    assert (_weights(tiny_run)["head.weight"].norm(dim=1) > RADIUS).all()  # without it they grow beyond


def test_keys_off_train_exactly_as_without_them(tiny_run: Path, tiny_fmnist: Path, tmp_path: Path):
    """Alphas 0, or a mix_prob of 0, and radius 0 build neither mixer nor projection: the old training."""
    off = ["train.mixup_alpha=0.4", "train.cutmix_alpha=0", "train.mix_prob=0", "train.maxnorm=0"]
    run = tmp_path / "off"
    assert main(["train", *tiny_overrides(tiny_fmnist), *off, "--out", str(run), "--no-progress"]) == 0
    _assert_same_weights(_weights(run), _weights(tiny_run))
    assert torch.load(run / "checkpoint.pt", weights_only=True)["generators"][0]["mix"] is None


@pytest.mark.parametrize(
    "extra",
    [
        ["train.loss=class_balanced", "train.sampler=class_aware"],
        ["train.loss=ldam_drw", "train.ldam_drw.drw_epoch=1", "train.sampler=progressive"],
    ],
)
def test_mixing_trains_with_other_losses_and_samplers(extra: list[str], tiny_fmnist: Path, tmp_path: Path):
    argv = ["train", *tiny_overrides(tiny_fmnist), "train.epochs=2", *MIX, *extra, "--out", str(tmp_path / "r")]
    assert main([*argv, "--no-progress"]) == 0
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert results["methods"]["joint"]["all"] > 10.0  # better than chance (10 classes)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("train.mixup_alpha", "-0.1", "expected a number >= 0"),
        ("train.cutmix_alpha", "-1", "expected a number >= 0"),
        ("train.mix_prob", "1.5", "expected a number in [0, 1]"),
        ("train.maxnorm", "-1", "expected a number >= 0"),
    ],
)
def test_out_of_range_values_are_refused(key: str, value: str, message: str):
    with pytest.raises(ConfigError, match=rf"{key}=.*{message}".replace("[", r"\[").replace("]", r"\]")):
        load_config(None, [f"{key}={value}"])


def test_maxnorm_with_the_cosine_classifier_is_refused():
    with pytest.raises(ConfigError, match="train.maxnorm=0.5: expected 0 with train.loss=ldam_drw"):
        load_config(None, ["train.loss=ldam_drw", "train.maxnorm=0.5"])


@pytest.mark.slow
def test_mixing_and_maxnorm_under_ddp(tiny_fmnist: Path, tmp_path: Path):
    """Two CPU processes (torchrun, gloo): each rank mixes its shard with its own generator; rows stay in the ball."""
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.is_file():
        pytest.skip(f"{torchrun} not found (torch installs it beside python)")
    run = tmp_path / "ddp"
    args = ["train", *_tiny(tiny_fmnist, *MIX, f"train.maxnorm={RADIUS}"), "device=cpu", "--out", str(run)]
    command = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "longtail", *args, "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
    first, second = (states["mix"] for states in checkpoint["generators"])
    assert not torch.equal(first, second)
    assert (checkpoint["model"]["head.weight"].norm(dim=1) <= RADIUS * (1 + 1e-6)).all()
