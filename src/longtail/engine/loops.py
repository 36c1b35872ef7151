"""Training and inference loops as plain functions over DataLoaders."""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from ..data.dataset import TensorPairDataset, keep_batch

Transform = Callable[[torch.Tensor], torch.Tensor]


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    sampler: Sampler[int] | None = None,
    drop_last: bool = False,
    num_workers: int | None = 0,
) -> DataLoader:
    """A DataLoader in dataset order, or in ``sampler``'s order.

    ``drop_last`` is ignored when the epoch is shorter than one batch, so that a
    tiny dataset still trains. Datasets with ``__getitems__`` are fetched a
    whole batch at a time.
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
    )


def auto_workers(dataset: Dataset) -> int:
    """Worker processes worth starting for ``dataset``: none for in-memory tensors (indexing is
    cheaper than inter-process transfer), else ``min(8, CPUs - 1)`` to decode images in parallel."""
    if isinstance(dataset, TensorPairDataset):
        return 0
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def _prepare(inputs: torch.Tensor, device: torch.device, transform: Transform | None) -> torch.Tensor:
    inputs = inputs.to(device, non_blocking=True)
    return transform(inputs) if transform is not None else inputs


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    *,
    device: torch.device,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    transform: Transform | None = None,
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
    on_step: Callable[[float], None] | None = None,
) -> dict[str, float]:
    """One pass over ``loader`` minimising ``criterion(logits, labels)`` (cross-entropy by default).

    The scheduler is stepped after every step.

    Returns:
        ``{"loss": mean loss, "acc": top-1 % on the (augmented) batches, "steps": n}``.
    """
    model.train()
    total_loss = torch.zeros((), dtype=torch.float64)
    correct = 0
    seen = 0
    steps = 0
    for inputs, labels in loader:
        inputs = _prepare(inputs, device, transform)
        labels = labels.to(device, non_blocking=True)
        logits = model(inputs)
        loss = criterion(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        batch_loss = loss.detach()
        total_loss += batch_loss.double().cpu() * len(labels)
        correct += int((logits.detach().argmax(1) == labels).sum())
        seen += len(labels)
        steps += 1
        if on_step is not None:
            on_step(float(batch_loss))
    if seen == 0:
        return {"loss": float("nan"), "acc": float("nan"), "steps": 0}
    return {"loss": float(total_loss) / seen, "acc": 100.0 * correct / seen, "steps": steps}


@torch.no_grad()
def predict(
    model: Callable[[torch.Tensor], torch.Tensor],
    loader: DataLoader,
    *,
    device: torch.device,
    transform: Transform | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs of ``model`` over ``loader``, in order, on the CPU.

    ``model`` may be a module or any callable (e.g. ``backbone.forward_features``);
    put modules in eval mode first.

    Returns:
        ``(outputs (N, ...), labels (N,))``.
    """
    outputs, targets = [], []
    for inputs, labels in loader:
        outputs.append(model(_prepare(inputs, device, transform)).float().cpu())
        targets.append(labels.cpu())
    return torch.cat(outputs), torch.cat(targets)
