"""``torch.load`` for files a user may have received: tensors and plain containers only, never code.

Every PyTorch file longtail reads (checkpoints, classifiers, feature caches,
partial states, pretrained weights, an exported program's sample inputs) goes
through :func:`load_tensors`: ``weights_only=True`` makes the unpickler refuse
any global but tensors and plain containers, so a planted ``__reduce__`` is
never called. The unpickler's own warnings about a foreign file (a pickle
protocol it was not written with) are silenced: the caller's one-line error or
log line says what happened.
"""

from __future__ import annotations

import warnings
from typing import IO, Any

import torch


def load_tensors(source: str | Any | IO[bytes], *, mmap: bool = False) -> Any:
    """``torch.load(source, weights_only=True)`` onto the CPU; raises what torch raises for a refused file."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(source, map_location="cpu", weights_only=True, mmap=mmap)
