"""The export artifact: one ``torch.export`` program (normalisation + backbone + folded classifier) and its metadata.

The file is what ``torch.export.save`` writes (a ``.pt2`` zip archive); the
metadata is the JSON entry ``longtail.json`` among its ``extra_files``. Loading
needs PyTorch alone::

    import json, torch
    extra = {"longtail.json": ""}
    model = torch.export.load("model.pt2", extra_files=extra).module()
    meta = json.loads(extra["longtail.json"])
    logits = model(images)  # (N, C, H, W) float32 in [0, 1] -> (N, num_classes)

The program takes images in [0, 1] *before* normalisation (the mean/std of the
training data are baked in) and has a dynamic batch dimension.

Plain ``torch.export.load`` trusts its file (it unpickles, runs guard code,
evaluates expressions); :func:`load_artifact` checks a file from elsewhere
first and refuses anything that could run code (:mod:`~longtail.safe_program`).
"""

from __future__ import annotations

import json
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import shown
from ..fs.atomic import os_error_reason, write_binary_atomic
from ..safe_program import UnsafeProgramError, load_program
from ..safe_text import parse_json
from .errors import ExportError
from .fold import FoldedHead
from .metadata_check import check_metadata

FORMAT = "longtail-export"
FORMAT_VERSION = 1
METADATA_FILE = "longtail.json"
MAX_BATCH = 65536  # the dynamic batch dimension's upper bound (torch.export wants one)


class ExportedClassifier(nn.Module):
    """Images (N, C, H, W) float32 in [0, 1] -> logits (N, num_classes), nothing to do after.

    Normalises with the training data's per-channel statistics, runs the
    backbone's ``forward_features`` (N, d), then the folded classifier.

    Args:
        backbone: a module with ``forward_features`` (frozen, in eval mode).
        head: the classifier folded into one linear layer (:func:`~longtail.export.fold.fold_head`).
        mean, std: per-channel statistics of images in [0, 1].
    """

    def __init__(self, backbone: nn.Module, head: FoldedHead, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) in [0, 1] -> (N, num_classes)."""
        return self.head(self.backbone.forward_features((images - self.mean) / self.std))


def export_program(module: nn.Module, channels: int, height: int, width: int) -> torch.export.ExportedProgram:
    """``torch.export`` of ``module`` (CPU, eval mode) for (N, channels, height, width) float32 input, N dynamic."""
    module = module.cpu().eval()
    # A batch of 2: torch.export specialises a dimension it sees as 0 or 1.
    example = torch.rand(2, channels, height, width)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with torch.no_grad():
        return torch.export.export(module, (example,), dynamic_shapes=({0: batch},))


def save_artifact(path: str | Path, program: torch.export.ExportedProgram, metadata: dict[str, Any]) -> Path:
    """Write ``program`` with ``metadata`` (JSON in its extra files) to ``path`` atomically."""
    path = Path(path)
    extra = {METADATA_FILE: json.dumps(metadata, indent=2)}
    with warnings.catch_warnings():
        # torch.export.save warns about weights "not on CPU" for tensors that share storage; ours all are on CPU.
        warnings.filterwarnings("ignore", message="No complete tensor found")
        write_binary_atomic(path, lambda handle: torch.export.save(program, handle, extra_files=extra))
    return path


def read_metadata(path: str | Path) -> tuple[torch.export.ExportedProgram, dict[str, Any]]:
    """The program and metadata of an artifact written by :func:`save_artifact`.

    The archive is checked first (:func:`~longtail.safe_program.check_archive`):
    one holding pickles, guard code, or anything but ATen operators on raw
    tensors is refused unread, so a model file from elsewhere runs no code.

    Raises:
        ExportError: naming ``path`` when it is missing, not a ``torch.export``
            archive, holds anything that could run code, has no longtail
            metadata, or a newer format version.
    """
    path = Path(path)
    try:
        if path.is_dir():
            raise ExportError(f"{path}: a directory, not a model file (a .pt2 written by `longtail export`)")
        if not path.is_file():
            raise ExportError(f"{path}: model file not found")
        zipped = zipfile.is_zipfile(path)
    except OSError as error:  # a name longer than the file system allows: Path.is_dir raises on Python 3.11
        where = shown(path, 160, quote=False, middle=True)
        raise ExportError(f"{where}: cannot read the model file ({os_error_reason(error)})") from None
    if not zipped:  # torch.export.load would log a traceback before failing
        raise ExportError(f"{path}: not a model exported by `longtail export` (not a .pt2 zip archive)")
    extra = {METADATA_FILE: ""}
    try:
        program = load_program(path, extra_files=extra)
    except UnsafeProgramError as error:
        raise ExportError(str(error)) from None
    except Exception as error:  # noqa: BLE001 - the loader raises many types for archives it cannot read
        raise ExportError(
            f"{path}: not a model exported by `longtail export` (a zip archive, but torch.export.load "
            f"fails with {error.__class__.__name__})"
        ) from None
    if not isinstance(extra.get(METADATA_FILE), (str, bytes)) or not extra[METADATA_FILE]:
        raise ExportError(f"{path}: a torch.export archive without longtail metadata ({METADATA_FILE})")
    metadata = parse_json(extra[METADATA_FILE], f"{path}: {METADATA_FILE}", error=ExportError)
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise ExportError(f"{path}: {METADATA_FILE} is not longtail export metadata (format != {FORMAT!r})")
    version = metadata.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ExportError(f"{path}: format version {version!r}; this longtail reads up to {FORMAT_VERSION}")
    check_metadata(path, metadata, program)
    return program, metadata


def load_artifact(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """``(module, metadata)`` of an artifact: the module maps (N, C, H, W) in [0, 1] to (N, num_classes) logits."""
    program, metadata = read_metadata(path)
    return program.module(), metadata
