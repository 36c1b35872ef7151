"""Class names as a data file stores them (text, bytes or numbers) -> text, refused with one line when they are
not text."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import DataError


def decode_class_names(path: Path, names: Sequence[Any]) -> list[str]:
    """Each name as a ``str``: text as it is, bytes decoded as UTF-8, numbers written out.

    A name that is not valid UTF-8 is refused rather than guessed at (as an image
    folder's names are): a latin-1 reading would print another class name
    than the one the file meant, in every table and report.

    Raises:
        DataError: naming ``path``, the name's index and its bytes.
    """
    decoded = []
    for index, name in enumerate(names):
        if isinstance(name, bytes):
            try:
                name = name.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(
                    f"{path}: class_names[{index}] = {name[:60]!r} is not valid UTF-8; write the names as UTF-8 text"
                ) from None
        decoded.append(str(name))
    return decoded
