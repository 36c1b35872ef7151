"""A deployment prior from a file (``longtail predict --prior FILE``, ``longtail export --prior FILE``).

A prior is one non-negative weight per class, in class-index order; it is
normalised to sum to 1 (so counts work as well as shares). Accepted forms:

- text (any other suffix): numbers separated by whitespace, commas or new
  lines; ``#`` starts a comment;
- ``.json``: a list of numbers;
- ``.npy``: a 1-D numeric array; ``.npz``: an archive whose array ``prior`` (or
  its only array) is one.

The file is data: read through :mod:`longtail.safe_text` / :mod:`longtail.safe_npz`
(bounded in size, no pickle). Every refusal is one line naming the file.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from ..errors import DataError, shown
from ..fs.atomic import os_error_reason
from ..safe_npz import open_npz, read_npy
from ..safe_text import parse_json, read_text_file

MAX_PRIOR_BYTES = 64 << 20  # a text prior of a million classes is about 20 MB
_SEPARATORS = re.compile(r"[\s,]+")


def _text_values(path: Path) -> np.ndarray:
    text = read_text_file(path, "prior file", max_bytes=MAX_PRIOR_BYTES, error=DataError)
    tokens = [t for line in text.splitlines() for t in _SEPARATORS.split(line.split("#", 1)[0]) if t]
    try:
        return np.array([float(t) for t in tokens], dtype=np.float64)
    except ValueError as error:
        raise DataError(f"{path}: expected numbers, one weight per class ({error})") from None


def _json_values(path: Path) -> np.ndarray:
    text = read_text_file(path, "prior file", max_bytes=MAX_PRIOR_BYTES, error=DataError)
    data = parse_json(text, str(path), error=DataError)
    if not isinstance(data, list) or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in data):
        raise DataError(f"{path}: expected a JSON list of numbers, one weight per class")
    return np.array(data, dtype=np.float64)


def _npz_values(path: Path, num_classes: int) -> np.ndarray:
    with open_npz(path, what="prior file", error=DataError) as archive:
        names = archive.names
        if "prior" in archive:
            name = "prior"
        elif len(names) == 1:
            name = names[0]
        else:
            raise DataError(f"{path}: expected an array named 'prior' (or a single array), found {names[:5]}")
        # Checked from its header before it is decompressed: a compressed member of a few hundred kilobytes
        # can inflate to gigabytes (then eight times that as float64), and anything but C weights is refused.
        shape = archive.header(name).shape
        if len(shape) == 1 and shape[0] != num_classes:
            raise DataError(f"{path}: {shape[0]} weights, expected one per class ({num_classes})")
        if math.prod(shape) != num_classes:
            raise DataError(f"{path}: expected a 1-D list of numbers, got shape {shape}")
        return archive.read(name)


def read_prior_file(path: str | Path, num_classes: int) -> np.ndarray:
    """(C,) float64 prior read from ``path``, checked and normalised to sum to 1.

    Raises:
        DataError: naming the file: missing, unreadable, not numbers, not ``num_classes`` long, negative or
            non-finite weights, or all zero.
    """
    if not str(path).strip():  # Path("") is ".", which the message would name instead of what was given
        raise DataError(f"prior file {str(path)!r}: expected the name of a file")
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if not path.is_file():  # a directory, a pipe (/dev/stdin) or a device "was not found" before
            what = "not a regular file (a directory, pipe or device)" if path.exists() else "prior file not found"
            raise DataError(f"{path}: {what}" + ("; expected a prior file" if path.exists() else ""))
        if suffix == ".npy":
            values = read_npy(path, error=DataError)
        elif suffix == ".npz":
            values = _npz_values(path, num_classes)
        elif suffix == ".json":
            values = _json_values(path)
        else:
            values = _text_values(path)
    except OSError as error:  # also a name longer than the file system allows (Path.is_file raises on 3.11)
        where = shown(path, 160, quote=False, middle=True)
        raise DataError(f"{where}: cannot read the prior file ({os_error_reason(error)})") from None
    array = np.asarray(values)
    if array.ndim != 1 or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise DataError(f"{path}: expected a 1-D list of numbers, got shape {array.shape} {array.dtype}")
    array = array.astype(np.float64)
    if len(array) != num_classes:
        raise DataError(f"{path}: {len(array)} weights, expected one per class ({num_classes})")
    bad = ~(np.isfinite(array) & (array >= 0))
    if bad.any():
        index = int(np.argmax(bad))
        weight = float(array[index])
        raise DataError(f"{path}: class {index} has weight {weight!r}; expected finite non-negative weights")
    if float(array.max()) <= 0:
        raise DataError(f"{path}: the weights sum to 0; expected at least one class with a positive weight")
    return normalised_weights(array)


def normalised_weights(weights: np.ndarray) -> np.ndarray:
    """(C,) finite non-negative float64 weights, one of them positive -> probabilities summing to 1.

    Divided by the largest first: finite weights near 1e308 would sum to infinity.
    """
    weights = weights / weights.max()
    return weights / weights.sum()
