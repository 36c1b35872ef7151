"""An artifact's metadata checked against its program before anything uses it.

A ``.pt2`` may come from elsewhere, or from a hand edit of ``longtail.json``:
its metadata is data like any other input. Before this check, a model whose
metadata lacked ``input`` or ``class_names``, named fewer classes than the
program scores, held numbers for names or another image size than the program
takes, ended ``longtail predict`` in a ``KeyError``, ``IndexError`` or
``AttributeError`` traceback, or in torch's "Guard failed" assertion; an unknown
``geometry`` was silently read as ``resize``. Now each is one line naming the
file and the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import shown
from .deploy_prior import ADAPTER_KEY, PRIOR_KEY
from .errors import ExportError

GEOMETRIES = ("resize", "resize_shorter_center_crop")
CHANNELS = (1, 3)  # grey or RGB: what read_image converts an image to


def _program_shapes(path: Path, program: torch.export.ExportedProgram) -> tuple[tuple[int, ...], int]:
    """The program's one input shape without its batch dimension, and its output's classes (last dimension)."""
    try:
        signature = program.graph_signature
        nodes = {node.name: node for node in program.graph.nodes}
        (name,) = signature.user_inputs
        (output,) = next(node for node in program.graph.nodes if node.op == "output").args[0]
        inputs, outputs = nodes[name].meta["val"].shape, output.meta["val"].shape
        return tuple(int(d) for d in inputs[1:]), int(outputs[-1])
    except (ValueError, KeyError, AttributeError, TypeError, IndexError, StopIteration):
        raise ExportError(
            f"{path}: not a model exported by `longtail export` (expected one (N, ...) input and one "
            "(N, classes) output)"
        ) from None


def _dims(shape: tuple[int, ...]) -> str:
    return " x ".join(str(d) for d in shape)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _check_input(path: Path, spec: Any, shape: tuple[int, ...]) -> None:
    """``input`` describes what the program takes: its kind, channels, size and geometry."""
    where = f"{path}: longtail.json 'input'"
    if not isinstance(spec, dict):
        raise ExportError(f"{where}: expected an object describing the model's input, got {shown(spec)}")
    if spec.get("kind") == "features":
        features = spec.get("features")
        if not _positive_int(features) or (features,) != shape:
            raise ExportError(f"{where}: features {shown(features)}; the program takes inputs of {_dims(shape)}")
        return
    channels, height, width = (spec.get(key) for key in ("channels", "height", "width"))
    if channels not in CHANNELS or isinstance(channels, bool) or not (_positive_int(height) and _positive_int(width)):
        raise ExportError(
            f"{where}: channels {shown(channels)}, height {shown(height)}, width {shown(width)}; expected "
            "channels 1 or 3 and a height and width of at least 1"
        )
    if (channels, height, width) != shape:
        raise ExportError(f"{where}: {channels} x {height} x {width}; the program takes inputs of {_dims(shape)}")
    geometry = spec.get("geometry")
    if geometry not in GEOMETRIES:
        raise ExportError(f"{where}: geometry {shown(geometry)}; expected one of {', '.join(GEOMETRIES)}")
    if geometry == "resize_shorter_center_crop" and not (
        _positive_int(spec.get("resize_shorter")) and spec["resize_shorter"] >= max(height, width)
    ):
        raise ExportError(
            f"{where}: resize_shorter {shown(spec.get('resize_shorter'))}; expected an integer of at least "
            f"the crop's {max(height, width)}"
        )


def check_metadata(path: Path, metadata: dict[str, Any], program: torch.export.ExportedProgram) -> None:
    """Refuse metadata that does not describe ``program``: class names, input, recorded prior.

    Raises:
        ExportError: one line naming ``path`` and the key.
    """
    shape, classes = _program_shapes(path, program)
    names = metadata.get("class_names")
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ExportError(f"{path}: longtail.json 'class_names': expected a list of class names (strings)")
    if len(names) != classes:
        raise ExportError(f"{path}: longtail.json names {len(names)} classes; the program scores {classes} per image")
    _check_input(path, metadata.get("input"), shape)
    for key in (PRIOR_KEY, ADAPTER_KEY):
        if key in metadata and metadata[key] is not None and not isinstance(metadata[key], dict):
            raise ExportError(f"{path}: longtail.json {key!r}: expected an object, got {shown(metadata[key])}")
