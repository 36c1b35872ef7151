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

from ..errors import shown
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


def onnx_bytes(program: torch.export.ExportedProgram, metadata: dict[str, Any]) -> bytes:
    """``program`` as a serialised ONNX model, with ``metadata`` as JSON in its metadata_props.

    Input ``images`` (N, C, H, W) float32 in [0, 1], N dynamic; output ``logits`` (N, num_classes). Called
    before the ``.pt2`` is written: a model torch.onnx cannot convert (an operator it lacks, more than
    protobuf's 2 GB) ended in a traceback with the ``.pt2`` already written, so that the same command again
    was refused ("exists") until ``--overwrite``.

    Raises:
        ExportError: one line, when the conversion or serialisation fails.
    """
    require_onnx()
    channels, height, width = (metadata["input"][key] for key in ("channels", "height", "width"))
    example = torch.rand(2, channels, height, width)
    try:
        with _quiet():
            onnx_program = torch.onnx.export(
                program, (example,), dynamo=True, input_names=["images"], output_names=["logits"], verbose=False
            )
        proto = onnx_program.model_proto
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
        return proto.SerializeToString()
    except Exception as error:  # noqa: BLE001 - torch.onnx and protobuf raise many types; none is the user's input
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ExportError(
            f"--onnx: torch.onnx cannot convert this model ({error.__class__.__name__}: {shown(reason)}); "
            "nothing was written: export it without --onnx"
        ) from None


def write_onnx(data: bytes, path: str | Path) -> Path:
    """Write the serialised ONNX model ``data`` (from :func:`onnx_bytes`) to ``path`` atomically."""
    path = Path(path)
    write_binary_atomic(path, lambda handle: handle.write(data))
    return path


def save_onnx(program: torch.export.ExportedProgram, path: str | Path, metadata: dict[str, Any]) -> Path:
    """Write ``program`` as an ONNX model to ``path`` atomically, with ``metadata`` as JSON in its metadata_props
    (:func:`onnx_bytes`, then :func:`write_onnx`)."""
    return write_onnx(onnx_bytes(program, metadata), path)
