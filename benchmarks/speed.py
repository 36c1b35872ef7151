"""Speed of the project's hot paths, each measured side by side with a plain reference in one run.

Sections (``--only`` picks some), each written into its own section of
docs/performance.md (other sections are kept):

- ``stage1``: images/s of the real stage-1 step path (``train_one_epoch`` over
  ``make_loader`` with the instance sampler, the stage-1 batch transform, SGD
  and the cosine schedule, the default backbone) against a bare PyTorch loop
  over the same tensors with the same model, augmentation and optimiser;
  fp32, and bf16 autocast when ``train_one_epoch`` takes a ``precision``.
- ``sampler``: one epoch of the ``class_aware`` and ``class`` samplers at
  iNaturalist 2018 scale against the per-sample Python round-robin of the
  official code (from benchmarks/sampler_speed.py).
- ``tau``: the τ sweep at ImageNet-LT test scale (50,000 x 2,048 features,
  1,000 classes, 21 τ): one evaluation, the one-product sweep
  (:func:`longtail.methods.norm_sweep.tau_sweep_predictions`) and 21 separate
  evaluations.
- ``stage2``: stage 2 on cached features against the official online way, as
  whole ``longtail`` processes on the demo and a 6,000-image profile (time and
  accuracy; benchmarks/stage2_cache.py, which also runs alone).

The runs of a section alternate (A B A B ...) so that a change of load hits
every side alike; tables give the min and the median over ``--repeats``.

Run it on an idle machine. When other processes hold the cores, torch's
threads wait for each other at every parallel operation and multi-threaded
timings collapse: while this script was written, on a 2-core machine at load
2, stage 1 ran at 46 images/s with 2 threads against 959 with ``--threads 1``.

    .venv/bin/python benchmarks/speed.py [--repeats 5] [--only stage1,stage2,sampler,tau] [--threads N] [--doc PATH]
    .venv/bin/python benchmarks/speed.py --quick --doc /tmp/performance.md   # smoke run, small sizes
    # on a GPU: ResNet-50 at 224 px, bf16 rows included (+ --compile)
    .venv/bin/python benchmarks/speed.py --only stage1 --device cuda --stage1-model resnet50:224:2048 --compile
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from _doc import machine_line, write_section
from sampler_speed import inaturalist_like_labels, python_round_robin_epoch
from stage2_cache import SECTION as STAGE2
from stage2_cache import section as stage2_cache_section
from torch.nn import functional as F
from torch.utils.data import DataLoader

from longtail.config import Config
from longtail.data import DatasetSplits, TensorImageDataset, channel_stats, train_batch_transform
from longtail.engine.loops import make_loader, train_one_epoch
from longtail.engine.optim import cosine_schedule, sgd
from longtail.engine.stage1 import stage1_loss
from longtail.methods.norm_sweep import tau_sweep_predictions
from longtail.methods.tau_norm import tau_normalize
from longtail.models import create_model as build_model
from longtail.samplers import EpochSampler, make_sampler

STAGE1 = "## Stage-1 throughput"
SAMPLER = "## Sampler epoch at iNaturalist scale"
TAU = "## τ sweep"


@dataclass(frozen=True)
class Sizes:
    """What each section runs on; ``--quick`` shrinks it for a smoke run."""

    stage1_images: int = 6000
    stage1_batch: int = 128
    # Stage-1 network and images: the demo's by default; e.g. resnet50 at 224 px, 3 channels on a GPU.
    stage1_backbone: str = Config().model.backbone
    stage1_image_size: int = 28
    stage1_channels: int = 1
    device: str = "cpu"
    compile: bool = False
    tau_rows: int = 50_000
    tau_dim: int = 2048
    tau_classes: int = 1000
    taus: int = 21


# The sampler section runs at full scale even then: an epoch of each side takes well under a second.
QUICK = Sizes(stage1_images=128, stage1_batch=64, tau_rows=5000)


def interleaved(runs: dict[str, Callable[[], object]], repeats: int, *, warmup: bool = True) -> dict[str, list[float]]:
    """Seconds of each run, ``repeats`` times, in turn (A B A B ...); one untimed warm-up round first."""
    if warmup:
        for run in runs.values():
            run()
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            if torch.cuda.is_available():
                torch.cuda.synchronize()  # queued GPU work belongs to the run that queued it
            seconds[name].append(time.perf_counter() - start)
    return seconds


def best_and_median(values: list[float]) -> tuple[float, float]:
    return min(values), statistics.median(values)


def ratio_cells(numerator: list[float], denominator: list[float], fmt: str = "{:.2f}") -> str:
    """``min / min`` and ``median / median`` of two lists of seconds, as two table cells."""
    best = min(numerator) / min(denominator)
    median = statistics.median(numerator) / statistics.median(denominator)
    return f"{fmt.format(best)} | {fmt.format(median)}"


def header(title: str, text: str, load: float) -> list[str]:
    return [title, "", text, "", f"Written by `benchmarks/speed.py`. {machine_line(load)}", ""]


# --- stage 1 ---------------------------------------------------------------------------------------------------


def synthetic_images(images: int, channels: int = 1, size: int = 28, seed: int = 0) -> TensorImageDataset:
    """(images, channels, size, size) uint8 and 10 balanced classes; by default Fashion-MNIST's layout (content
    does not matter here)."""
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (images, channels, size, size), dtype=torch.uint8, generator=generator)
    return TensorImageDataset(pixels, torch.arange(images) % 10)


@dataclass
class LongtailEpoch:
    """One call: one epoch of the project's stage-1 step path, as ``train_joint`` runs it."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loader: DataLoader
    sampler: EpochSampler
    transform: torch.nn.Module
    criterion: torch.nn.Module
    options: dict[str, str]  # the precision, when train_one_epoch takes one
    device: torch.device
    epoch: int = 0

    def __call__(self) -> None:
        self.sampler.set_epoch(self.epoch)
        self.epoch += 1
        train_one_epoch(
            self.model,
            self.loader,
            self.optimizer,
            device=self.device,
            scheduler=self.scheduler,
            transform=self.transform,
            criterion=self.criterion,
            **self.options,
        )


def bare_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int,
    padding: int,
    mean: torch.Tensor,
    std: torch.Tensor,
    generator: torch.Generator,
    dtype: torch.dtype | None,
    device: torch.device,
) -> int:
    """One epoch of the training loop one writes by hand: shuffled slices, inline augmentation, SGD step.

    The augmentation is the stage-1 one: zero-pad by ``padding``, crop back at a
    random offset per image, flip half the images, normalise. ``dtype``: autocast
    dtype of the forward pass, None for float32. Images stay on the host and each
    batch is moved to ``device``, as the project's loader does. Returns the images seen.
    """
    model.train()
    n, channels, height, width = images.shape
    order = torch.randperm(n, generator=generator)
    steps = n // batch_size
    rows = torch.arange(height, device=device).view(1, 1, height, 1)
    cols = torch.arange(width, device=device).view(1, 1, 1, width)
    channel = torch.arange(channels, device=device).view(1, -1, 1, 1)
    batch_rows = torch.arange(batch_size, device=device).view(-1, 1, 1, 1)
    for step in range(steps):
        index = order[step * batch_size : (step + 1) * batch_size]
        x = images[index].to(device).float().div_(255.0)
        y = labels[index].to(device)
        padded = F.pad(x, (padding,) * 4)
        top, left = torch.randint(0, 2 * padding + 1, (2, batch_size, 1, 1, 1), generator=generator).to(device)
        x = padded[batch_rows, channel, top + rows, left + cols]
        flip = (torch.rand(batch_size, generator=generator) < 0.5).to(device)
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
        x = ((x - mean) / std).contiguous(memory_format=torch.channels_last)  # the model's layout
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    return steps * batch_size


def stage1_section(sizes: Sizes, repeats: int) -> str:
    load = os.getloadavg()[0]
    config = Config()
    device = torch.device(sizes.device)
    dataset = synthetic_images(sizes.stage1_images, sizes.stage1_channels, sizes.stage1_image_size)
    mean, std = channel_stats(dataset.images)
    splits = DatasetSplits("synthetic", dataset, dataset, dataset, 10, [str(c) for c in range(10)], mean, std)
    batch = sizes.stage1_batch
    epoch_steps = sizes.stage1_images // batch
    total_steps = (repeats + 1) * epoch_steps  # warm-up epoch included: the schedule never runs out
    train = config.train
    has_precision = "precision" in inspect.signature(train_one_epoch).parameters
    precisions = ["fp32", "bf16"] if has_precision else ["fp32"]

    def fresh_model() -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
        torch.manual_seed(0)  # both sides start from the same weights
        model = build_model(sizes.stage1_backbone, sizes.stage1_channels, 10).to(device)
        if sizes.compile:
            model = torch.compile(model)
        optimizer = sgd(model.parameters(), lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay)
        return model, optimizer, cosine_schedule(optimizer, total_steps)

    runs: dict[str, Callable[[], object]] = {}
    for precision in precisions:
        sampler = make_sampler(dataset.labels, "instance", seed=0)
        runs[f"ours {precision}"] = LongtailEpoch(
            *fresh_model(),
            loader=make_loader(dataset, batch, sampler=sampler, drop_last=True, num_workers=0),
            sampler=sampler,
            transform=train_batch_transform(
                splits, crop_padding=config.data.crop_padding, hflip=config.data.hflip, seed=0
            ).to(device),
            criterion=stage1_loss(config, splits.train_counts).to(device),
            options={"precision": precision} if has_precision else {},
            device=device,
        )
        runs[f"bare {precision}"] = functools.partial(
            bare_epoch,
            *fresh_model(),
            dataset.images,
            dataset.labels,
            batch_size=batch,
            padding=config.data.crop_padding,
            mean=torch.tensor(mean, device=device).view(1, -1, 1, 1),
            std=torch.tensor(std, device=device).view(1, -1, 1, 1),
            generator=torch.Generator().manual_seed(0),
            dtype=None if precision == "fp32" else torch.bfloat16,
            device=device,
        )
    seconds = interleaved(runs, repeats)
    images = epoch_steps * batch
    lines = header(
        STAGE1,
        f"Training images/s of the stage-1 step path on {device.type} on {sizes.stage1_images:,} synthetic uint8 "
        f"{sizes.stage1_channels} x {sizes.stage1_image_size} x {sizes.stage1_image_size} images, batch {batch}, "
        f"`{sizes.stage1_backbone}` (channels-last{', torch.compile' if sizes.compile else ''}), SGD with the cosine "
        f"schedule, random crop (padding {config.data.crop_padding}) + flip + normalisation; one epoch "
        f"({epoch_steps} steps) per run, runs alternating, best and median of {repeats} after one warm-up epoch "
        "each. *longtail*: `train_one_epoch` over `make_loader` (instance sampler), the "
        "`train_batch_transform` module and the stage-1 loss, with its per-step bookkeeping (loss and accuracy "
        "sums). *bare*: a hand-written loop over `randperm` slices of the same tensors, the same augmentation "
        "inline, the same model and optimiser.",
        load,
    )
    lines += ["| training loop | precision | images/s (best) | images/s (median) |", "|---|---|---:|---:|"]
    for name, values in seconds.items():
        side, precision = name.split()
        best, median = best_and_median(values)
        label = "longtail `train_one_epoch`" if side == "ours" else "bare PyTorch loop"
        lines.append(f"| {label} | {precision} | {images / best:,.0f} | {images / median:,.0f} |")
    lines += [
        "",
        "| ratio longtail / bare (target >= 0.95) | precision | from best | from median |",
        "|---|---|---:|---:|",
    ]
    for precision in precisions:
        lines.append(
            f"| images/s | {precision} | {ratio_cells(seconds[f'bare {precision}'], seconds[f'ours {precision}'])} |"
        )
    if not has_precision:
        lines += ["", "`train_one_epoch` has no `precision` argument in this version: no bf16 rows."]
    return "\n".join(lines) + "\n"


# --- sampler -----------------------------------------------------------------------------------------------------


def sampler_section(sizes: Sizes, repeats: int) -> str:
    load = os.getloadavg()[0]
    labels = inaturalist_like_labels()
    classes = int(labels.max()) + 1
    # Group indices by class with one sort (a scan per class would take seconds at 8,142 classes).
    order = np.argsort(labels, kind="stable")
    by_class = [part.tolist() for part in np.split(order, np.cumsum(np.bincount(labels, minlength=classes))[:-1])]
    runs: dict[str, Callable[[], object]] = {
        "reference": lambda: python_round_robin_epoch(by_class, len(labels), 4, 0),
    }
    for strategy in ("class_aware", "class"):
        sampler = make_sampler(labels, strategy, seed=0)

        def epoch(sampler=sampler) -> None:
            sampler.set_epoch(1)
            for _ in sampler:
                pass

        runs[strategy] = epoch
    seconds = interleaved(runs, repeats, warmup=False)
    lines = header(
        SAMPLER,
        f"One epoch (`set_epoch`, then iterating all {len(labels):,} indices) over {classes:,} classes with "
        "iNaturalist 2018's long tail, best and median of "
        f"{repeats}, runs alternating. Reference: the official `ClassAwareSampler`'s per-sample Python "
        "round-robin (blocks of 4 images per class visit), from `benchmarks/sampler_speed.py`.",
        load,
    )
    lines += [
        "| sampler | seconds (best) | seconds (median) | images/s (best) | speed-up (best) | speed-up (median) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    names = {"reference": "per-sample Python round-robin (official structure)"}
    for name, values in seconds.items():
        best, median = best_and_median(values)
        speedup = ratio_cells(seconds["reference"], values, "{:.1f}×")
        label = names.get(name, f"longtail `{name}`")
        lines.append(f"| {label} | {best:.3f} | {median:.3f} | {len(labels) / best:,.0f} | {speedup} |")
    return "\n".join(lines) + "\n"


# --- τ sweep -----------------------------------------------------------------------------------------------------


def imagenet_lt_like_test(rows: int, dim: int, classes: int, seed: int = 0):
    """Seeded stand-ins for ImageNet-LT test features and a joint classifier trained on the long tail.

    Features are non-negative (post-ReLU, as pooled ResNet features) and lean
    toward their class's direction; the classifier's row norms fall from the
    head to the tail classes, as joint training leaves them (the reason
    τ-normalisation exists).

    Returns:
        features (rows, dim) float32, labels (rows,) int64 (balanced, as the test
        set), weight (classes, dim), bias (classes,).
    """
    generator = torch.Generator().manual_seed(seed)
    directions = F.normalize(torch.randn(classes, dim, generator=generator), dim=1)
    labels = torch.arange(rows) % classes
    features = torch.randn(rows, dim, generator=generator).add_(4.0 * directions[labels]).relu_()
    norms = torch.linspace(1.0, 0.4, classes).unsqueeze(1)  # class 0 is the largest
    weight = directions * norms
    bias = 0.01 * torch.randn(classes, generator=generator)
    return features, labels, weight, bias


def tau_section(sizes: Sizes, repeats: int) -> str:
    load = os.getloadavg()[0]
    features, labels, weight, bias = imagenet_lt_like_test(sizes.tau_rows, sizes.tau_dim, sizes.tau_classes)
    taus = torch.linspace(0, 2, sizes.taus).tolist()
    results: dict[str, torch.Tensor] = {}

    def evaluation() -> None:
        logits = F.linear(features, weight, bias)
        results["accuracy"] = (logits.argmax(1) == labels).float().mean()

    def sweep() -> None:
        predictions = tau_sweep_predictions(features, weight, taus)
        results["sweep"] = predictions
        results["sweep accuracy"] = (predictions == labels).float().mean(1)

    def separate() -> None:
        predictions = []
        for tau in taus:
            prediction = (features @ tau_normalize(weight, tau).T).argmax(1)
            results[f"accuracy {tau}"] = (prediction == labels).float().mean()
            predictions.append(prediction)
        results["separate"] = torch.stack(predictions)

    seconds = interleaved({"a": evaluation, "b": sweep, "c": separate}, repeats)
    agree = (results["sweep"] == results["separate"]).double().mean().item()
    shape = f"{sizes.tau_rows:,} x {sizes.tau_dim:,} float32 features, {sizes.tau_classes:,} classes"
    lines = header(
        TAU,
        f"Scoring τ-normalisation on ImageNet-LT's test scale ({shape}; generated, seeded), "
        f"{len(taus)} τ in linspace(0, 2), runs alternating, best and median of {repeats} after one warm-up "
        "round. (a) one evaluation: `x @ W.T + b`, argmax, top-1 accuracy. (b) the sweep: "
        "`tau_sweep_predictions` (one matrix product, in row chunks) and the accuracy of every τ. "
        "(c) the sweep as separate evaluations: per τ build `W / ||W||^τ`, `x @ W̃.T`, argmax, accuracy.",
        load,
    )
    lines += ["| step | seconds (best) | seconds (median) |", "|---|---:|---:|"]
    names = {
        "a": "(a) one evaluation",
        "b": f"(b) sweep over {len(taus)} τ, one product",
        "c": f"(c) {len(taus)} separate evaluations",
    }
    for key, values in seconds.items():
        best, median = best_and_median(values)
        lines.append(f"| {names[key]} | {best:.3f} | {median:.3f} |")
    lines += [
        "",
        "| ratio | from best | from median |",
        "|---|---:|---:|",
        f"| b / a (target <= 2) | {ratio_cells(seconds['b'], seconds['a'])} |",
        f"| c / b | {ratio_cells(seconds['c'], seconds['b'])} |",
        "",
        f"(b) and (c) predict the same class for {100 * agree:.3f}% of the (τ, image) pairs; they differ only "
        "where two classes' scores are within float32 rounding of each other, since (b) scales `x · w_j` by "
        "`||w_j||^-τ` and (c) multiplies `x` by the scaled weights.",
    ]
    if not math.isclose(agree, 1.0, abs_tol=1e-3):
        raise AssertionError(f"the sweep and the separate evaluations disagree on {100 * (1 - agree):.2f}% of pairs")
    return "\n".join(lines) + "\n"


def stage2_section(sizes: Sizes, repeats: int) -> str:
    """Stage 2 cached against online, whole processes (see benchmarks/stage2_cache.py); the demo only with --quick."""
    return stage2_cache_section(["demo"] if sizes.stage1_images == QUICK.stage1_images else ["demo", "6000"], repeats)


SECTIONS: dict[str, tuple[str, Callable[[Sizes, int], str]]] = {
    "stage1": (STAGE1, stage1_section),
    "stage2": (STAGE2, stage2_section),
    "sampler": (SAMPLER, sampler_section),
    "tau": (TAU, tau_section),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=None, help="timed runs of each side (default: 5, --quick: 2)")
    parser.add_argument("--quick", action="store_true", help="small sizes and 2 repeats: a smoke run")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections: {', '.join(SECTIONS)}")
    parser.add_argument("--doc", type=Path, default=Path("docs/performance.md"), help="where to write the tables")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, one per core)")
    parser.add_argument("--device", default="cpu", help="stage1: cpu or cuda (default: cpu)")
    parser.add_argument(
        "--stage1-model",
        default=None,
        metavar="BACKBONE:SIZE:IMAGES",
        help="stage1: backbone, image side and image count, e.g. resnet50:224:2048 (default: the demo's, 28 px)",
    )
    parser.add_argument("--compile", action="store_true", help="stage1: torch.compile both networks")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        parser.error(f"--only: unknown section(s) {', '.join(unknown)}; expected {', '.join(SECTIONS)}")
    sizes = QUICK if args.quick else Sizes()
    sizes = dataclasses.replace(sizes, device=args.device, compile=args.compile)
    if args.stage1_model:
        backbone, size, images = args.stage1_model.split(":")
        sizes = dataclasses.replace(
            sizes, stage1_backbone=backbone, stage1_image_size=int(size), stage1_images=int(images), stage1_channels=3
        )
    repeats = args.repeats if args.repeats is not None else (2 if args.quick else 5)
    for name in chosen:
        heading, measure = SECTIONS[name]
        start = time.perf_counter()
        section = measure(sizes, repeats)
        print(section, flush=True)
        print(f"({name}: {time.perf_counter() - start:.1f} s)\n", flush=True)
        write_section(args.doc, heading, section)
    print(f"written to {args.doc}")


if __name__ == "__main__":
    main()
