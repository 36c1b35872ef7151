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

from ..data.dataset import as_compute

__all__ = ["CHUNK_ROWS", "as_compute", "float_chunks", "predicted_classes"]

CHUNK_ROWS = 8192  # rows per chunk: (8192, 8142) float32 logits are 267 MB at iNaturalist's class count


def float_chunks(x: torch.Tensor, rows: int = CHUNK_ROWS) -> Iterator[tuple[int, torch.Tensor]]:
    """``(start, x[start:start + rows])`` of (N, d) ``x``, each chunk in float32 when ``x`` is float16."""
    for start in range(0, len(x), rows):
        yield start, as_compute(x[start : start + rows])


@torch.no_grad()
def predicted_classes(
    head: nn.Module, x: torch.Tensor, *, device: torch.device | None = None, rows: int = CHUNK_ROWS
) -> torch.Tensor:
    """(N,) int64 arg-max of ``head`` over (N, d) features, on the CPU, computed ``rows`` at a time.

    ``head`` is used as it is (put it in eval mode and on ``device`` first);
    chunks go to ``device`` (default: where ``x`` is).
    """
    predictions = [
        head(chunk.to(device) if device is not None else chunk).argmax(1).cpu() for _, chunk in float_chunks(x, rows)
    ]
    return torch.cat(predictions) if predictions else torch.zeros(0, dtype=torch.int64)
