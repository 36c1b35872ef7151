"""Feature matrices held in float16 (or float32), used in float32: the cast happens per batch or per row chunk.

A features file or cache may hold float16 (half the memory: iNaturalist 2018's
437,513 x 2,048 features are 3.6 GB in float32). The arithmetic stays float32:
training batches are cast as they are drawn
(:class:`~longtail.data.dataset.TensorPairDataset`), and whole-split passes
(scores, NCM's means) go through row chunks, so no float32 copy of the matrix
and no (N, C) logit matrix is ever held.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from ..data.dataset import CHUNK_VALUES, as_compute, chunk_rows

__all__ = ["CHUNK_VALUES", "as_compute", "chunk_rows", "float_chunks", "predicted_classes"]


def float_chunks(x: torch.Tensor, rows: int | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """``(start, x[start:start + rows])`` of (N, d) ``x``, each chunk in float32 when ``x`` is float16;
    ``rows`` defaults to :func:`chunk_rows` of d."""
    rows = rows or chunk_rows(x.shape[1] if x.dim() > 1 else 1)
    for start in range(0, len(x), rows):
        yield start, as_compute(x[start : start + rows])


@torch.no_grad()
def predicted_classes(
    head: nn.Module, x: torch.Tensor, *, device: torch.device | None = None, rows: int | None = None
) -> torch.Tensor:
    """(N,) int64 arg-max of ``head`` over (N, d) features, on the CPU, computed ``rows`` at a time.

    ``head`` is used as it is (put it in eval mode and on ``device`` first);
    chunks go to ``device`` (default: where ``x`` is). ``rows`` defaults to
    :func:`chunk_rows` of the larger of d and the head's C outputs: no (N, C)
    logit matrix is held.
    """
    predictions = torch.zeros(len(x), dtype=torch.int64)
    if not len(x):
        return predictions
    if rows is None:
        probe = head(as_compute(x[:1]).to(device) if device is not None else as_compute(x[:1]))
        rows = chunk_rows(max(probe.shape[-1], x.shape[1]))
    # Written into one buffer allocated before the loop: with a small result kept per chunk, the heap grew with
    # the chunks in some runs (0.7 GB more peak at iNaturalist's 8,142 classes; docs/results/scale.md), the
    # survivors pinning the freed (rows, C) logit blocks between them. Nothing made in a chunk outlives it.
    for start, chunk in float_chunks(x, rows):
        logits = head(chunk.to(device) if device is not None else chunk)
        predictions[start : start + len(chunk)] = logits.argmax(1).cpu()
        del logits
    return predictions
