"""``longtail predict``: read images, apply the artifact's recorded input transform, print the top-k classes."""

from __future__ import annotations

import math
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from ..data.image_files import open_image
from ..data.image_transforms import CenterCrop, to_rgb
from ..errors import ConfigError, DataError, shown
from ..fs.atomic import os_error_reason
from ..safe_npz import npy_header, read_npy
from ..shift import Adapted
from .deploy_prior import adapt_logits, read_target_prior, recorded_adapter

BATCH = 64  # images per forward pass


class _NpyRefused(DataError):
    """An ``.npy`` image the checked reader refuses: reported as "cannot read image" with the reason."""


@dataclass
class Prediction:
    """The top-k classes of one image: ``(class name, class index, probability)``, most probable first."""

    image: str
    top: list[tuple[str, int, float]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "top": [{"class": name, "index": index, "probability": prob} for name, index, prob in self.top],
        }


def _npy_shape(path: Path) -> tuple[int, ...]:
    """The shape a ``.npy`` file declares in its header, refused when larger than Pillow lets an image be."""
    with open(path, "rb") as handle:
        shape, _ = npy_header(handle)  # ValueError when it is not a .npy array: "cannot read image"
    # The bound Pillow sets image files (twice MAX_IMAGE_PIXELS is its decompression-bomb error), at 4 channels.
    limit = Image.MAX_IMAGE_PIXELS  # None when the user turned Pillow's limit off
    if limit is not None and math.prod(shape) > 2 * limit * 4:
        raise Image.DecompressionBombError(f"shape {shape}: more values than an image of Pillow's size limit holds")
    return shape


def _npy_image(path: Path) -> Image.Image:
    """A ``.npy`` array as a Pillow image: (H, W), (H, W, C) or (C, H, W); uint8, or floats in [0, 1]."""
    _npy_shape(path)  # before anything is allocated: the header may declare terabytes
    array = read_npy(path, error=_NpyRefused)  # no pickle; declared data within the file and memory
    if array.ndim == 3 and array.shape[-1] not in (1, 3, 4) and array.shape[0] in (1, 3, 4):
        array = array.transpose(1, 2, 0)  # channels first -> last
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(f"shape {array.shape}: expected (H, W), (H, W, C) or (C, H, W) with C in 1, 3, 4")
    if array.size == 0:  # else resized from nothing and "predicted", or min() of nothing raised NumPy's message
        raise ValueError(f"shape {array.shape}: no pixels; expected H and W of at least 1")
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.floating) or not np.isfinite(array).all():
            raise ValueError(f"dtype {array.dtype}: expected uint8, or finite floats in [0, 1]")
        if array.min() < 0 or array.max() > 1:
            raise ValueError(f"values in [{array.min():g}, {array.max():g}]: expected floats in [0, 1]")
        array = np.rint(array * 255.0).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(array))


def _transform(image: Image.Image, spec: dict[str, Any]) -> Image.Image:
    """The recorded geometry and channels; ``image`` may be unloaded (a JPEG then decodes at reduced scale)."""
    if spec["geometry"] == "resize_shorter_center_crop":
        image = CenterCrop(size=spec["height"], resize=spec["resize_shorter"])(image)
    elif image.size != (spec["width"], spec["height"]):
        image = image if image.mode in ("L", "RGB") else to_rgb(image)  # 16-bit grey, palettes: see to_rgb
        image = image.resize((spec["width"], spec["height"]), Image.Resampling.BILINEAR)
    # convert() returns a loaded copy, which outlives the file that closes after this returns.
    channels = "L" if spec["channels"] == 1 else "RGB"
    return (image if image.mode == channels else to_rgb(image)).convert(channels)


def _require_regular_file(path: Path) -> None:
    """Refuse a directory ("cannot read image (IsADirectoryError ...)" before) and a pipe, socket or device: a
    FIFO among a folder's files made ``predict`` wait forever for a writer, /dev/zero read until it failed."""
    mode = path.stat().st_mode  # FileNotFoundError: "image not found"
    if stat.S_ISDIR(mode):
        raise DataError(f"{path}: a directory, not an image file; give its images (e.g. {path}/*.png)")
    if not stat.S_ISREG(mode):
        raise DataError(f"{path}: not a regular file (a pipe, socket or device); expected an image file")


def _unreadable(path: Path, error: Exception) -> str:
    """The one line of an image that cannot be read. A refusal of the path itself by the system (a name past
    NAME_MAX, permission denied: an errno) gives its reason, with the path once and cut to 160 characters (the
    OSError's text repeated the whole path); a decoder's error keeps its own words."""
    if isinstance(error, OSError) and error.errno is not None:
        return f"{shown(path, 160, quote=False, middle=True)}: cannot read image ({os_error_reason(error)})"
    return f"{path}: cannot read image ({error.__class__.__name__}: {error})"


def read_pixels(path: str | Path, spec: dict[str, Any]) -> torch.Tensor:
    """One image file (PNG, JPEG, anything Pillow reads, or ``.npy``) -> (C, H, W) uint8, as the model takes it.

    The artifact's input ``spec``: converted to its channels (grey ``L`` or
    ``RGB``); ``resize`` geometry: resized (bilinear) to (height, width) when its
    size differs; ``resize_shorter_center_crop``: shorter side to
    ``resize_shorter``, centre crop, as at test time in the pipeline.

    Raises:
        DataError: naming ``path`` when it is missing or not a readable image.
    """
    path = Path(path)
    try:
        _require_regular_file(path)
        if path.suffix.lower() == ".npy":
            image = _transform(_npy_image(path), spec)
        else:
            with open_image(path) as opened:  # as the pipeline reads image files (see data.image_files.read_image)
                image = _transform(opened, spec)
    except FileNotFoundError:
        raise DataError(f"{path}: image not found") from None
    except _NpyRefused as error:
        raise DataError(f"{path}: cannot read image ({str(error).removeprefix(f'{path}: ')})") from None
    except Image.DecompressionBombError as error:  # Pillow's guard against a small file of huge declared size
        raise DataError(f"{path}: image too large ({error})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as error:
        raise DataError(_unreadable(path, error)) from None
    array = np.asarray(image, dtype=np.uint8)
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return torch.tensor(array)  # a copy: Pillow's buffer is read-only


def read_image(path: str | Path, spec: dict[str, Any]) -> torch.Tensor:
    """:func:`read_pixels` as the model's input: (C, H, W) float32 in [0, 1]."""
    return read_pixels(path, spec).float() / 255.0


def check_topk(topk: int | None, num_classes: int) -> int:
    """``topk`` checked against the classes; None -> min(5, num_classes)."""
    if topk is None:
        return min(5, num_classes)
    if not 1 <= topk <= num_classes:
        raise ConfigError(f"--topk {topk}: expected 1 to {num_classes} (the model's classes)")
    return topk


def image_logits(module: nn.Module, metadata: dict[str, Any], paths: Sequence[str | Path]) -> torch.Tensor:
    """(N, C) logits of the images at ``paths``; every image is read (and checked) before the model runs,
    in batches of :data:`BATCH`."""
    # Held as uint8 until their batch runs: as float32, 10,000 images of 224 x 224 took 6 GB before the first
    # forward pass (a quarter of that now), since every image is read (and checked) first.
    images = [read_pixels(path, metadata["input"]) for path in paths]
    with torch.no_grad():
        parts = [
            module(torch.stack(images[start : start + BATCH]).float() / 255.0) for start in range(0, len(images), BATCH)
        ]
    return torch.cat(parts) if parts else torch.zeros(0, len(metadata["class_names"]))


def top_classes(
    probabilities: torch.Tensor, names: Sequence[str], paths: Sequence[str | Path], k: int
) -> list[Prediction]:
    """(N, C) probabilities -> the top ``k`` classes of each image."""
    values, indices = probabilities.topk(k, dim=1)
    return [
        Prediction(str(path), [(names[i], i, float(p)) for i, p in zip(row_i, row_p, strict=True)])
        for path, row_p, row_i in zip(paths, values.tolist(), indices.tolist(), strict=True)
    ]


def predict_images(
    module: nn.Module, metadata: dict[str, Any], paths: Sequence[str | Path], topk: int | None = None
) -> list[Prediction]:
    """Top-``topk`` classes with softmax probabilities for each image in ``paths``."""
    return predict_with_prior(module, metadata, paths, topk)[0]


def predict_with_prior(
    module: nn.Module,
    metadata: dict[str, Any],
    paths: Sequence[str | Path],
    topk: int | None = None,
    prior: str = "none",
    *,
    model: str = "model",
) -> tuple[list[Prediction], Adapted | None]:
    """Top-``topk`` classes of each image for the class prior ``prior``, and the adaptation (None for ``none``).

    ``none``: the model's softmax; ``em``: the prior estimated from these images by EM, after the calibration
    recorded at export (:mod:`~longtail.export.deploy_prior`); any other value: a prior file.
    """
    names = metadata["class_names"]
    k = check_topk(topk, len(names))
    adapter, target = None, None
    if prior != "none":  # the adapter and a prior file are refused before any image is read
        adapter = recorded_adapter(metadata, model)
        target = None if prior == "em" else read_target_prior(prior, adapter.num_classes)
    logits = image_logits(module, metadata, paths)
    if adapter is None:
        return top_classes(logits.softmax(dim=1), names, paths, k), None
    adapted = adapt_logits(logits, adapter, target)
    return top_classes(adapted.log_posteriors.exp(), names, paths, k), adapted


def _printable(text: str) -> str:
    """``text`` as it is, or its ``repr`` when it holds a new line, a tab, or bytes that are not UTF-8 (a file
    name may): one table line stays one line, and the escapes say what the name really holds."""
    return text if text.isprintable() else repr(text)


def format_predictions(predictions: Sequence[Prediction]) -> str:
    """A readable table: per image, its path, then one line per class: rank, probability, name.

    The probability comes before the name, so the columns stay aligned whatever the names' lengths (one class
    name of 200 characters padded every other line to its width) and the ranks line up up to the largest.
    """
    lines: list[str] = []
    rank_width = max(2, len(str(max((len(p.top) for p in predictions), default=1))))
    for prediction in predictions:
        lines.append(_printable(prediction.image))
        for rank, (name, _, probability) in enumerate(prediction.top, start=1):
            lines.append(f"  {rank:>{rank_width}}. {100 * probability:6.2f}%  {_printable(name)}")
    return "\n".join(lines)
