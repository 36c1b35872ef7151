"""``train.precision`` (bf16 / fp16 autocast, the fp16 gradient scaler), ``train.compile`` and the loop's inputs."""

from __future__ import annotations

import contextlib
import math
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from conftest import tiny_overrides
from longtail.config import load_config
from longtail.data.registry import create_dataset
from longtail.engine.loops import make_loader, train_one_epoch
from longtail.engine.precision import autocast, make_grad_scaler
from longtail.engine.stage1 import train_joint
from longtail.errors import ConfigError
from longtail.pipeline import stage1, train
from longtail.runs import read_metrics

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One thread: two on a shared 2-core machine can make these trainings many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def short_config(root: Path, *extra: str):
    return load_config(None, [*tiny_overrides(root), "train.epochs=2", "device=cpu", *extra])


def toy_problem(seed: int = 0) -> tuple[nn.Module, torch.utils.data.DataLoader]:
    """A linear classifier over 3-channel 4x4 images, and a loader of 64 of them."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(64, 3, 4, 4, generator=generator)
    labels = torch.randint(0, 5, (64,), generator=generator)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 5))
    return model, make_loader(TensorDataset(images, labels), 16)


def test_bf16_trains_on_cpu_with_finite_losses(tiny_fmnist: Path, tmp_path: Path):
    train(short_config(tiny_fmnist, "train.precision=bf16"), tmp_path / "run", progress=False)
    losses = [r["train_loss"] for r in read_metrics(tmp_path / "run")]
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["grad_scaler"] is None


def test_auto_is_bf16_only_where_native_and_the_run_records_what_it_became(
    tiny_fmnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from longtail.engine import precision
    from longtail.runs import read_results

    assert load_config(None).train.precision == "auto"  # the default (the demo's)
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    assert precision.resolve_precision("auto", CPU) == "fp32"
    assert isinstance(autocast("auto", CPU), contextlib.nullcontext)
    train(short_config(tiny_fmnist, "train.epochs=1"), tmp_path / "run", progress=False)
    environment = read_results(tmp_path / "run")["environment"]
    assert (environment["precision"], environment["device"]) == ("fp32", "cpu")
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    assert precision.resolve_precision("auto", CPU) == "bf16"
    assert precision.resolve_precision("auto", CPU, backbone="identity") == "fp32"  # a probe on feature files
    with autocast("auto", CPU):
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
    assert precision.resolve_precision("fp32", CPU) == "fp32"  # only auto is resolved


def test_fp16_on_cpu_is_refused_before_anything_is_written(tiny_fmnist: Path, tmp_path: Path):
    with pytest.raises(ConfigError, match=r"train.precision=fp16: needs CUDA.*use train.precision=bf16"):
        train(short_config(tiny_fmnist, "train.precision=fp16"), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_grad_scaler_state_goes_into_the_checkpoint(tiny_fmnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # fp16 itself needs CUDA (test_fp16_on_cuda); a CPU scaler over fp32 steps exercises the same path.
    made = []

    def cpu_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
        made.append(torch.amp.GradScaler("cpu"))
        return made[-1]

    monkeypatch.setattr(stage1, "make_grad_scaler", cpu_scaler)
    train(short_config(tiny_fmnist), tmp_path / "run", progress=False)
    assert len(made) == 1  # one scaler for the whole training
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["grad_scaler"]
    assert saved == made[0].state_dict() and saved["_growth_tracker"] > 0


def test_one_grad_scaler_serves_the_whole_training(tiny_fmnist: Path):
    config = short_config(tiny_fmnist)
    scaler = torch.amp.GradScaler("cpu")
    train_joint(config, create_dataset(config.data), device=CPU, progress=False, grad_scaler=scaler)
    steps = 2 * (sum(create_dataset(config.data).train_counts) // config.train.batch_size)
    # No fp32 step overflows at the initial scale, so the tracker counts the steps of both epochs.
    assert scaler.state_dict()["_growth_tracker"] == steps


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 training needs CUDA")
def test_fp16_on_cuda(tiny_fmnist: Path, tmp_path: Path):
    train(short_config(tiny_fmnist, "train.precision=fp16", "device=cuda"), tmp_path / "run", progress=False)
    assert all(math.isfinite(r["train_loss"]) for r in read_metrics(tmp_path / "run"))
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["grad_scaler"]["scale"] > 0


def test_fp32_is_the_unchanged_default():
    assert make_grad_scaler("fp32", CPU) is None and make_grad_scaler("bf16", CPU) is None
    assert isinstance(autocast("fp32", CPU), contextlib.nullcontext)
    results = []
    for extra in ({}, {"precision": "fp32", "grad_scaler": None}):
        model, loader = toy_problem()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        stats = train_one_epoch(model, loader, optimizer, device=CPU, **extra)
        results.append((stats, [p.detach().clone() for p in model.parameters()]))
    (stats_a, params_a), (stats_b, params_b) = results
    assert stats_a == stats_b and all(torch.equal(a, b) for a, b in zip(params_a, params_b, strict=True))


def test_bf16_forward_with_a_float32_loss():
    model, loader = toy_problem()
    forward_dtypes, loss_dtypes = [], []
    model.register_forward_hook(lambda _m, _i, output: forward_dtypes.append(output.dtype))

    def criterion(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        loss_dtypes.append(logits.dtype)
        return F.cross_entropy(logits, labels)

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    stats = train_one_epoch(model, loader, optimizer, device=CPU, criterion=criterion, precision="bf16")
    assert set(forward_dtypes) == {torch.bfloat16} and set(loss_dtypes) == {torch.float32}
    assert math.isfinite(stats["loss"]) and stats["steps"] == 4


def test_training_batches_reach_the_model_channels_last():
    model, loader = toy_problem()
    layouts = []
    model.register_forward_pre_hook(
        lambda _m, inputs: layouts.append(inputs[0].is_contiguous(memory_format=torch.channels_last))
    )
    train_one_epoch(model, loader, torch.optim.SGD(model.parameters(), lr=0.1), device=CPU)
    assert layouts == [True] * 4


def test_loader_defaults():
    data = TensorDataset(torch.zeros(8, 1), torch.zeros(8, dtype=torch.long))
    assert not make_loader(data, 4).persistent_workers
    loader = make_loader(data, 4, num_workers=1, pin_memory=True)
    assert loader.persistent_workers and loader.pin_memory


@pytest.mark.slow
def test_compile_trains_and_checkpoints_plain_keys(tiny_fmnist: Path, tmp_path: Path):
    """torch.compile on the CPU needs a C++ compiler and takes about a minute to compile the tiny network."""
    config = load_config(None, [*tiny_overrides(tiny_fmnist), "train.epochs=1", "device=cpu", "train.compile=true"])
    if not any(shutil.which(name) for name in ("c++", "g++", "clang++")):
        pytest.skip("torch.compile on the CPU needs a C++ compiler (inductor builds its kernels); none found")
    train(config, tmp_path / "run", progress=False)
    checkpoint = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert not any(k.startswith(("_orig_mod.", "module.")) for k in checkpoint["model"])
    assert math.isfinite(read_metrics(tmp_path / "run")[0]["train_loss"])
