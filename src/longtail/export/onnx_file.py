"""ONNX beside the ``.pt2``: the same exported program through ``torch.onnx`` (optional packages)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..fs.atomic import write_binary_atomic
from .errors import ExportError

ONNX_PACKAGES = ("onnx", "onnxscript")
INSTALL_HINT = "pip install 'longtail[export]'"
METADATA_KEY = "longtail"  # the ONNX model's metadata_props entry holding the artifact's metadata JSON


def require_onnx() -> None:
    """Raise a one-line :class:`ExportError` naming the extra to install when the ONNX exporter is missing."""
    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(f"--onnx: needs the package(s) {', '.join(missing)}; install them with {INSTALL_HINT}")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence torch.onnx's chatter (torchvision ops it skips, deprecation warnings) for the duration."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def save_onnx(program: torch.export.ExportedProgram, path: str | Path, metadata: dict[str, Any]) -> Path:
    """Write ``program`` as an ONNX model to ``path`` atomically, with ``metadata`` as JSON in its metadata_props.

    Input ``images`` (N, C, H, W) float32 in [0, 1], N dynamic; output ``logits`` (N, num_classes).
    """
    require_onnx()
    path = Path(path)
    channels, height, width = (metadata["input"][key] for key in ("channels", "height", "width"))
    example = torch.rand(2, channels, height, width)
    with _quiet():
        onnx_program = torch.onnx.export(
            program, (example,), dynamo=True, input_names=["images"], output_names=["logits"], verbose=False
        )
    proto = onnx_program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    data = proto.SerializeToString()
    write_binary_atomic(path, lambda handle: handle.write(data))
    return path
