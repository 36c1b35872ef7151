"""Stage 1: joint training of backbone and linear classifier (the recipe; ``longtail train`` is
:mod:`longtail.pipeline.stage1`)."""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..config import Config
from ..data.dataset import DatasetSplits
from ..data.transforms import BatchTransform, eval_transform, train_transform
from ..errors import ConfigError, TrainingError
from ..evaluation.metrics import accuracy_summary
from ..losses import stage1_loss
from ..models.classifier import Classifier
from ..models.factory import create_model, joint_head_kind
from ..models.pretrained import configure_backbone
from ..samplers import EpochSampler, section_sampler
from . import distributed as dist
from .device import seed_everything
from .loops import make_loader, predict, train_one_epoch
from .maxnorm import MaxNorm
from .memory import resident_memory_mb
from .mixing import Mixer, create_mixer
from .optim import cosine_schedule, sgd
from .precision import check_precision, make_grad_scaler, resolve_precision
from .rng import restore_rng_state, rng_state

log = logging.getLogger(__name__)

# Called after every epoch on rank 0 with the epoch's metrics record and the training state (see
# :func:`train_joint`), for the caller to write metrics and a checkpoint.
EpochCallback = Callable[[dict[str, Any], dict[str, Any]], None]

# Added to the per-rank augmentation seed (seed + 1_000_003 * rank) to seed the mixer: its draws must not
# repeat the crop-and-flip generator's, and every rank mixes its own shard differently.
MIX_SEED_OFFSET = 7


def stage1_mixer(config: Config, rank: int = 0) -> Mixer | None:
    """Mixup / CutMix of ``train.mixup_alpha``, ``train.cutmix_alpha``, ``train.mix_prob`` for process ``rank``,
    or None when they never mix (the training loop then runs its plain path, bit for bit the unmixed one)."""
    cfg = config.train
    return create_mixer(
        mixup_alpha=cfg.mixup_alpha,
        cutmix_alpha=cfg.cutmix_alpha,
        mix_prob=cfg.mix_prob,
        seed=config.seed + 1_000_003 * rank + MIX_SEED_OFFSET,
    )


def stage1_maxnorm(config: Config, model: Classifier) -> MaxNorm | None:
    """The ``train.maxnorm`` projection of ``model``'s classifier rows (an ``after_step``), or None when 0.

    It acts on the plain model's head: under DDP every rank projects its own
    replica after the same averaged step, so the replicas stay identical.
    (``validate_config`` refuses a radius with the cosine classifier of
    ``ldam_drw``, whose logits do not depend on the row norms.)
    """
    radius = config.train.maxnorm
    return MaxNorm(model.head, radius) if radius > 0 else None


def check_train_setup(config: Config, device: torch.device, replicas: int) -> int:
    """Refuse ``train.*`` settings that cannot run on ``device`` with ``replicas`` processes.

    Returns:
        The images per step of each process (``train.batch_size`` is the global batch).
    """
    check_precision(config.train.precision, device)
    if config.train.sync_bn and device.type != "cuda":
        raise ConfigError(
            f"train.sync_bn=true: torch's SyncBatchNorm runs on CUDA only, this run is on {device.type}; "
            "set train.sync_bn=false"
        )
    return dist.per_rank_batch(config.train.batch_size, replicas)


def training_module(model: Classifier, config: Config, device: torch.device) -> nn.Module:
    """What the training loop calls: ``model`` wrapped in DDP under a process group, compiled with
    ``train.compile``. ``model`` itself keeps its plain parameter names, for checkpoints and evaluation.

    ``train.sync_bn`` converts the BatchNorm layers of ``model`` in place (before
    DDP, which must see the final modules); their state-dict keys are unchanged.
    """
    net: nn.Module = model
    if dist.world_size() > 1:
        if config.train.sync_bn:
            nn.SyncBatchNorm.convert_sync_batchnorm(model)  # the root is no BatchNorm: converted in place
        # Frozen parameters (model.trainable=last_stage) have requires_grad=False: DDP leaves them alone.
        net = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    if config.train.compile:
        net = torch.compile(net)  # DDP first, then compile: compiled graphs break at DDP's gradient buckets
    return net


class FirstSteps:
    """The first ``steps`` batches of ``loader`` on each pass.

    Under DDP each rank's share of an epoch is padded up to a multiple of the
    number of ranks, which can make one more per-rank batch than the
    single-process epoch of ``len(train) // batch_size`` steps; this keeps the
    epoch (and the schedule) at the single-process length.
    """

    def __init__(self, loader: DataLoader, steps: int) -> None:
        self.loader = loader
        self.steps = min(steps, len(loader))

    def __iter__(self) -> Iterator[Any]:
        return itertools.islice(self.loader, self.steps)

    def __len__(self) -> int:
        return self.steps


def validation_predictions(
    model: Classifier, loader: DataLoader, transform: BatchTransform, *, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,) predicted and (N,) true labels of ``model`` in eval mode over the validation ``loader``.

    Under DDP, ``loader`` covers this rank's contiguous shard of the split and
    the shards are gathered in rank order. Ranks first take rank 0's BatchNorm
    statistics, so every shard is scored by the very model rank 0 checkpoints;
    eval-mode outputs are per image, so the numbers are those of one process
    scoring the whole split, at 1/world_size of the time.
    """
    dist.broadcast_buffers(model)
    model.eval()
    if len(loader) > 0:
        mine = predict(model, loader, device=device, transform=transform, argmax=True)  # no (N, C) logits
    else:  # more ranks than validation images: this shard is empty
        mine = (torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    shards = dist.all_gather_objects(mine)
    return torch.cat([p for p, _ in shards]), torch.cat([y for _, y in shards])


@contextlib.contextmanager
def _naming_the_epoch(epoch: int, steps: int) -> Iterator[None]:
    """A :class:`TrainingError` of epoch ``epoch`` (0-based) gets the epoch, global step and checkpoint in its line."""
    try:
        yield
    except TrainingError as error:
        kept = f"checkpoint.pt keeps epoch {epoch}" if epoch > 0 else "no checkpoint was written"
        raise TrainingError(
            f"stage 1, epoch {epoch + 1}: {error} (global step {epoch * steps + error.step}); stopped, {kept}. "
            "Lower train.lr, or check the data and train.loss",
            step=error.step,
        ) from None


def _training_state(
    model: Classifier,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    grad_scaler: torch.amp.GradScaler | None,
    generators: list[dict[str, Any]],
    history: list[dict[str, Any]],
) -> dict[str, Any]:
    """What the epoch after ``history[-1]`` depends on, on the CPU (see :func:`train_joint`).

    ``generators`` holds every rank's :func:`_generator_states`, in rank order (one entry without DDP).
    """
    epoch = history[-1]["epoch"]
    return {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},  # the plain module's keys
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "grad_scaler": None if grad_scaler is None else grad_scaler.state_dict(),
        "generators": generators,
        "sampler": {"epoch": epoch, "position": 0},
        "epoch": epoch,
        "metrics": list(history),
    }


def _generator_states(augment: BatchTransform, mixer: Mixer | None) -> dict[str, Any]:
    """This process's random state: its augmentation and mixing generators (each rank has its own) and the
    global ones. ``"mix"`` is None without mixing."""
    return {
        "augment": None if augment.generator is None else augment.generator.get_state(),
        "mix": None if mixer is None else mixer.get_state(),
        "global": rng_state(),
    }


def _restore(
    state: dict[str, Any],
    model: Classifier,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    grad_scaler: torch.amp.GradScaler | None,
    augment: BatchTransform,
    mixer: Mixer | None,
) -> tuple[int, list[dict[str, Any]]]:
    """Load a :func:`_training_state` into the freshly built objects; returns (epochs done, metrics so far)."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if grad_scaler is not None and state.get("grad_scaler") is not None:
        grad_scaler.load_state_dict(state["grad_scaler"])
    generators = state["generators"]
    if len(generators) != dist.world_size():
        raise ConfigError(
            f"the checkpoint was written by {len(generators)} process(es); resume it with as many "
            f"(torchrun --nproc_per_node), not {dist.world_size()}"
        )
    mine = generators[dist.rank()]
    if augment.generator is not None and mine["augment"] is not None:
        augment.generator.set_state(mine["augment"])
    if mixer is not None and mine.get("mix") is not None:  # (checkpoints of older versions have no "mix")
        mixer.set_state(mine["mix"])
    # Last: building the model and loaders above drew from the global generators.
    restore_rng_state(mine["global"])
    return int(state["sampler"]["epoch"]), list(state["metrics"])


def _initial_model(config: Config, splits: DatasetSplits, device: torch.device) -> Classifier:
    """The stage-1 network before training, seeded: ``model.*`` backbone (pretrained, frozen parts) and head."""
    seed_everything(config.seed)
    in_channels, head = splits.train.image_shape[0], joint_head_kind(config.train.loss)
    model = create_model(config.model.backbone, in_channels, splits.num_classes, head)
    m = config.model
    configure_backbone(model, backbone=m.backbone, pretrained=m.pretrained, trainable=m.trainable)
    return model.to(device)


def _loaders(
    config: Config, splits: DatasetSplits, batch_size: int, device: torch.device
) -> tuple[EpochSampler, FirstSteps, DataLoader]:
    """The ``train.sampler``, this process's training loader (``batch_size`` images per step, the epoch cut to
    one process's length) and its shard of the validation split."""
    cfg, replicas, rank = config.train, dist.world_size(), dist.rank()
    sampler = section_sampler(
        splits.train.labels,
        cfg,
        epochs=cfg.epochs,
        seed=config.seed,
        num_replicas=replicas,
        rank=rank,
        num_classes=splits.num_classes,
    )
    on_cuda = device.type == "cuda"
    workers = config.data.num_workers
    loader = make_loader(
        splits.train, batch_size, sampler=sampler, drop_last=True, num_workers=workers, pin_memory=on_cuda
    )
    val_loader = make_loader(
        splits.val,
        config.eval.batch_size,
        sampler=dist.shard(len(splits.val), replicas, rank),
        num_workers=workers,
        pin_memory=on_cuda,
    )
    # One process's epoch: len(train) // batch_size steps (one when the data is smaller than a batch).
    return sampler, FirstSteps(loader, max(1, sampler.num_samples // cfg.batch_size)), val_loader


def _epoch_record(
    epoch: int, stats: dict[str, float], lr: float, val: dict[str, Any], seconds: float
) -> dict[str, Any]:
    """One line of metrics.jsonl: the 1-based epoch, training loss and accuracy, lr, validation groups, time."""
    return {
        "epoch": epoch + 1,
        "train_loss": stats["loss"],
        "train_acc": stats["acc"],
        "lr": lr,
        "val_all": val["all"],
        "val_macro": val["macro"],
        "val_many": val["many"],
        "val_medium": val["medium"],
        "val_few": val["few"],
        "seconds": seconds,
        "rss_mb": resident_memory_mb(),
    }


def train_joint(
    config: Config,
    splits: DatasetSplits,
    *,
    device: torch.device,
    on_epoch_end: EpochCallback | None = None,
    progress: bool = True,
    grad_scaler: torch.amp.GradScaler | None = None,
    resume: dict[str, Any] | None = None,
) -> tuple[Classifier, list[dict[str, Any]]]:
    """Train backbone and classifier together with ``config.train``'s sampler, SGD and cosine schedule.

    After each epoch the model is scored on the validation split and
    ``on_epoch_end(record, state)`` is called (to write metrics and a
    checkpoint). ``state`` is everything the next epoch depends on: ``model``,
    ``optimizer``, ``scheduler`` and ``grad_scaler`` state dicts (plain
    module keys), ``generators`` (per rank: the augmentation generator, the
    mixing one (``"mix"``, None without mixing) and the global ones),
    ``sampler`` ``{"epoch", "position"}`` (the next epoch to draw, from its
    start: samplers and per-image augmentation are functions of (seed, epoch)),
    ``epoch`` (completed) and ``metrics`` (the records so far).
    Passing such a dict back as ``resume`` continues after its epoch, and the
    result is bitwise the one of an uninterrupted run on CPU.

    Under torchrun (a running process group) every rank calls this: each trains
    on its share of every global batch of ``train.batch_size`` (DDP averages
    the gradients), the records hold the statistics of all ranks, and
    ``on_epoch_end`` and the progress display run on rank 0 only.

    ``train.mixup_alpha`` / ``train.cutmix_alpha`` mix every batch (with
    probability ``train.mix_prob``) on the device after the augmentation, each
    rank its own shard with its own generator, and mix the loss likewise;
    ``train.maxnorm`` projects the classifier's rows into that ball after every
    optimiser step. Both are off by default, leaving the training bit for bit as
    without them.

    ``train.precision=fp16`` scales the loss with ``grad_scaler`` (made here
    when not given; pass one to checkpoint its state).

    Returns:
        The trained model (on ``device``, plain: no DDP or compile wrapper) and one record per epoch:
        ``{"epoch", "train_loss", "train_acc", "lr", "val_all", "val_macro", "val_many", "val_medium",
        "val_few", "seconds", "rss_mb"}`` (a group without validation images has None; ``rss_mb``: this
        process's resident memory, None where unknown).
    """
    cfg = config.train
    replicas, rank = dist.world_size(), dist.rank()
    batch_size = check_train_setup(config, device, replicas)
    progress = progress and rank == 0
    train_counts = splits.train_counts
    model = _initial_model(config, splits, device)
    net = training_module(model, config, device)
    criterion = stage1_loss(config, train_counts).to(device)
    sampler, loader, val_loader = _loaders(config, splits, batch_size, device)
    augment = train_transform(splits, config.data, seed=config.seed, rank=rank).to(device)
    evaluate = eval_transform(splits).to(device)
    mixer, maxnorm = stage1_mixer(config, rank), stage1_maxnorm(config, model)
    optimizer = sgd(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    steps = len(loader)
    scheduler = cosine_schedule(optimizer, cfg.epochs * steps, cfg.warmup_epochs * steps)
    if grad_scaler is None:
        grad_scaler = make_grad_scaler(cfg.precision, device)
    history: list[dict[str, Any]] = []
    first_epoch = 0
    if resume is not None:
        first_epoch, history = _restore(resume, model, optimizer, scheduler, grad_scaler, augment, mixer)
    bar = tqdm(
        total=cfg.epochs * steps,
        initial=first_epoch * steps,
        desc="stage 1: joint",
        unit="step",
        disable=not progress,
        dynamic_ncols=True,
    )
    for epoch in range(first_epoch, cfg.epochs):
        start = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        sampler.set_epoch(epoch)
        splits.train.set_epoch(epoch, config.seed)  # per-item augmentation of image files: (seeds, epoch)
        criterion.set_epoch(epoch)
        with _naming_the_epoch(epoch, steps):
            stats = train_one_epoch(
                net,
                loader,  # type: ignore[arg-type]  (a DataLoader cut to the epoch length)
                optimizer,
                device=device,
                scheduler=scheduler,
                transform=augment,
                criterion=criterion,
                on_step=bar.update,
                precision=resolve_precision(cfg.precision, device, backbone=config.model.backbone),
                grad_scaler=grad_scaler,
                mixer=mixer,
                after_step=maxnorm,
            )
        predictions, labels = validation_predictions(model, val_loader, evaluate, device=device)
        val = accuracy_summary(predictions, labels, train_counts, many=config.eval.many, few=config.eval.few)
        record = _epoch_record(epoch, stats, lr, val, time.perf_counter() - start)
        history.append(record)
        bar.set_postfix(epoch=epoch + 1, loss=f"{stats['loss']:.3f}", val_macro=f"{val['macro'] or 0:.1f}")
        if rank == 0 and not progress:
            log.info(
                "epoch %d/%d  loss %.4f  train acc %.1f  val macro %.1f  (%.1fs)",
                epoch + 1,
                cfg.epochs,
                stats["loss"],
                stats["acc"],
                val["macro"] or 0.0,
                record["seconds"],
            )
        generators = dist.all_gather_objects(_generator_states(augment, mixer))  # every rank's, for an exact resume
        if on_epoch_end is not None and rank == 0:
            on_epoch_end(record, _training_state(model, optimizer, scheduler, grad_scaler, generators, history))
    bar.close()
    return model, history
