"""Training and inference loops as plain functions over DataLoaders."""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from ..data.dataset import TensorPairDataset, keep_batch
from ..errors import TrainingError
from .distributed import all_reduce_sum
from .mixing import MixResult, mixed_correct, mixed_loss
from .partial import PartialTraining
from .precision import autocast

# Called after each training epoch as (epoch, {"loss", "acc", "lr"}), epoch 1-based: how stage 2 reports progress.
EpochStatsCallback = Callable[[int, dict[str, float]], None]
# How often (steps) training reads its NaN / infinity flag: reading a device value waits for the device.
NONFINITE_CHECK_STEPS = 50

Transform = Callable[[torch.Tensor], torch.Tensor]
# Mixup / CutMix of a prepared batch: (images, labels) -> (images, labels_a, labels_b, lam); see engine.mixing.
Mixer = Callable[[torch.Tensor, torch.Tensor], MixResult]


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    sampler: Sampler[int] | None = None,
    drop_last: bool = False,
    num_workers: int | None = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader in dataset order, or in ``sampler``'s order.

    ``drop_last`` is ignored when the epoch is shorter than one batch, so that a
    tiny dataset still trains. Datasets with ``__getitems__`` are fetched a
    whole batch at a time. ``num_workers=None`` picks a count (:func:`auto_workers`);
    ``pin_memory`` (for a CUDA consumer) makes host-to-device copies asynchronous.
    Workers persist across epochs (datasets that augment per item keep their
    epoch in shared memory, so a long-lived worker sees :meth:`set_epoch`).
    """
    epoch_length = len(sampler) if sampler is not None else len(dataset)
    if num_workers is None:
        num_workers = auto_workers(dataset)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        drop_last=drop_last and epoch_length >= batch_size,
        num_workers=num_workers,
        collate_fn=keep_batch if hasattr(dataset, "__getitems__") else None,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        # Its own generator for the worker seeds: drawing them from the global one would make the global
        # stream depend on when workers start (once with persistent workers, again after a resume).
        generator=torch.Generator().manual_seed(0),
    )


def auto_workers(dataset: Dataset) -> int:
    """Worker processes worth starting for ``dataset``: none for in-memory tensors (indexing is
    cheaper than inter-process transfer), else ``min(8, CPUs - 1)`` to decode images in parallel."""
    if isinstance(dataset, TensorPairDataset):
        return 0
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def _prepare(inputs: torch.Tensor, device: torch.device, transform: Transform | None) -> torch.Tensor:
    """Move a batch to ``device`` and transform it; image batches (N, C, H, W) come out channels-last,
    the layout of the networks' parameters (a contiguous batch would be converted inside every conv)."""
    inputs = inputs.to(device, non_blocking=True)
    inputs = transform(inputs) if transform is not None else inputs
    if inputs.dim() == 4:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    return inputs


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    *,
    device: torch.device,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    transform: Transform | None = None,
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
    on_step: Callable[[], None] | None = None,
    precision: str = "fp32",
    grad_scaler: torch.amp.GradScaler | None = None,
    mixer: Mixer | None = None,
    after_step: Callable[[], None] | None = None,
) -> dict[str, float]:
    """One pass over ``loader`` minimising ``criterion(logits, labels)`` (cross-entropy by default).

    The scheduler is stepped after every step. ``precision`` (``fp32``, ``bf16``,
    ``fp16``) runs the forward pass under autocast; the loss is always computed
    on float32 logits. ``grad_scaler`` (from
    :func:`~longtail.engine.precision.make_grad_scaler`, created once per
    training since its scale adapts over steps) scales the fp16 loss.

    ``mixer`` (e.g. a :class:`~longtail.engine.mixing.Mixer`) mixes each batch
    after ``transform``; the loss is then ``lam * criterion(logits, a) + (1 - lam)
    * criterion(logits, b)`` and a training hit counts ``lam`` for label ``a`` and
    ``1 - lam`` for ``b``. ``after_step()`` runs after every optimiser step, before
    the scheduler's (e.g. :class:`~longtail.engine.maxnorm.MaxNorm`).

    Under a running process group (torchrun) every rank must call this together:
    the loss and accuracy returned are over the examples of all ranks.

    Raises:
        TrainingError: a loss was NaN or infinite (noticed within
            :data:`NONFINITE_CHECK_STEPS` steps; ``.step`` names the first one).

    Returns:
        ``{"loss": mean loss, "acc": top-1 % on the (augmented) batches, "steps": n}``
        (``steps`` of this process).
    """
    model.train()
    # Sums kept on the device, so that a step does not wait for the device to report them.
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    # Mixed batches count fractional hits; without a mixer the count stays an exact integer, as ever.
    correct = torch.zeros((), dtype=torch.int64 if mixer is None else torch.float64, device=device)
    first_bad_step = torch.zeros((), dtype=torch.int64, device=device)  # 1-based; 0: every loss finite so far
    seen = 0
    steps = 0
    for inputs, labels in loader:
        inputs = _prepare(inputs, device, transform)
        labels = labels.to(device, non_blocking=True)
        labels_b, lam = labels, 1.0
        if mixer is not None:
            inputs, labels, labels_b, lam = mixer(inputs, labels)
            if inputs.dim() == 4:  # indexing by the permutation may have given a contiguous batch
                inputs = inputs.contiguous(memory_format=torch.channels_last)
        with autocast(precision, device):
            logits = model(inputs)
        logits = logits.float()
        loss = criterion(logits, labels) if mixer is None else mixed_loss(criterion, logits, labels, labels_b, lam)
        optimizer.zero_grad(set_to_none=True)
        if grad_scaler is not None:
            grad_scaler.scale(loss).backward()
            grad_scaler.step(optimizer)  # skipped when the scaled gradients overflowed
            grad_scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if after_step is not None:
            after_step()
        if scheduler is not None:
            scheduler.step()
        batch_loss = loss.detach()
        total_loss += batch_loss.double() * len(labels)
        if mixer is None:
            correct += (logits.detach().argmax(1) == labels).sum()
        else:
            correct += mixed_correct(logits.detach().argmax(1), labels, labels_b, lam)
        seen += len(labels)
        steps += 1
        unseen_bad = (first_bad_step == 0) & ~torch.isfinite(batch_loss)
        first_bad_step = torch.where(unseen_bad, steps, first_bad_step)
        if steps % NONFINITE_CHECK_STEPS == 0:
            _stop_if_nonfinite(first_bad_step)
        if on_step is not None:  # (no loss value passed: reading it would wait for the device every step)
            on_step()
    _stop_if_nonfinite(first_bad_step)
    totals = all_reduce_sum(
        torch.stack([total_loss.cpu(), correct.cpu().double(), torch.tensor(float(seen), dtype=torch.float64)])
    )
    total, right, count = totals.tolist()
    if count == 0:
        return {"loss": float("nan"), "acc": float("nan"), "steps": steps}
    return {"loss": total / count, "acc": 100.0 * right / count, "steps": steps}


def train_epochs(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    epochs: int,
    *,
    device: torch.device,
    start_epoch: Callable[[int], None],
    transform: Transform | None = None,
    on_epoch: EpochStatsCallback | None = None,
    partial: PartialTraining | None = None,
    name: str = "stage 2",
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    after_step: Callable[[], None] | None = None,
) -> None:
    """``epochs`` of :func:`train_one_epoch` (a stage-2 training), resumable through ``partial``.

    ``start_epoch(epoch)`` (0-based) sets the sampler and data epoch first;
    ``on_epoch(epoch, {"loss", "acc", "lr"})`` (1-based) follows each epoch.
    With ``partial``, the state after every epoch is saved there, and a state
    left by a killed run of the same training is continued from.
    ``criterion`` (cross-entropy when None; a module is moved to ``device``) and ``after_step`` go to
    :func:`train_one_epoch` (e.g. a
    label-aware smoothing loss, a MaxNorm projection); both must be stateless
    across epochs for the resume to be exact (a loss with a schedule gets its
    epoch from ``start_epoch``).

    Raises:
        TrainingError: a NaN or infinite loss, named with ``name`` and the epoch.
    """
    loss = F.cross_entropy if criterion is None else criterion
    if isinstance(loss, nn.Module):  # a loss with buffers (class weights, ε per class) computes on the device
        loss = loss.to(device)
    first = 0
    saved = partial.load() if partial is not None else None
    if saved is not None:
        model.load_state_dict(saved["modules"]["model"])
        optimizer.load_state_dict(saved["modules"]["optimizer"])
        scheduler.load_state_dict(saved["modules"]["scheduler"])
        first = saved["epoch"]
    for epoch in range(first, epochs):
        start_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        try:
            stats = train_one_epoch(
                model,
                loader,
                optimizer,
                device=device,
                scheduler=scheduler,
                transform=transform,
                criterion=loss,
                after_step=after_step,
            )
        except TrainingError as error:
            raise TrainingError(f"{name}, epoch {epoch + 1}: {error}; stopped", step=error.step) from None
        if partial is not None:
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
            }
            partial.save(epoch + 1, state)
        if on_epoch is not None:
            on_epoch(epoch + 1, {"loss": stats["loss"], "acc": stats["acc"], "lr": lr})
    if partial is not None:
        partial.discard()


def _stop_if_nonfinite(first_bad_step: torch.Tensor) -> None:
    """Raise :class:`TrainingError` if a step's loss was NaN or infinite, on every rank alike.

    Read only every :data:`NONFINITE_CHECK_STEPS` steps and at the end of the
    epoch: reading a device value waits for the device. Under DDP the ranks add
    their flags, so that all stop together (a rank stopping alone would leave
    the others waiting).
    """
    flags = all_reduce_sum(torch.stack([(first_bad_step > 0).double().cpu(), first_bad_step.double().cpu()]))
    if flags[0] > 0:
        step = int(first_bad_step) or int(flags[1])  # this rank's step, else one of another rank's
        raise TrainingError(f"the loss became NaN or infinite at step {step} of the epoch", step=step)


@torch.no_grad()
def predict(
    model: Callable[[torch.Tensor], torch.Tensor],
    loader: DataLoader,
    *,
    device: torch.device,
    transform: Transform | None = None,
    argmax: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs of ``model`` over ``loader``, in order, on the CPU.

    ``model`` may be a module or any callable (e.g. ``backbone.forward_features``);
    put modules in eval mode first. ``argmax=True`` keeps each batch's (B,) int64
    arg-max instead of its (B, C) outputs: no (N, C) logit matrix is held (at 10,000
    classes, 20,000 validation images would take 0.8 GB, twice while concatenated).

    Returns:
        ``(outputs (N, ...), labels (N,))``; with ``argmax``, ``(predicted classes (N,), labels (N,))``.
    """
    outputs, targets = [], []
    for inputs, labels in loader:
        output = model(_prepare(inputs, device, transform))
        outputs.append(output.argmax(1).cpu() if argmax else output.float().cpu())
        del output
        targets.append(labels.cpu())
    return torch.cat(outputs), torch.cat(targets)
