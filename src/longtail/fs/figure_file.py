"""Write a Matplotlib figure in the format its file name's suffix names, atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .atomic import write_binary_atomic

FIGURE_FORMATS = (".png", ".svg", ".pdf")


def figure_format(path: str | Path) -> str:
    """The Matplotlib format ``path``'s suffix names: "png", "svg" or "pdf" (any case).

    Raises:
        ConfigError: another suffix, or none: the file's bytes would not be what its name says.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in FIGURE_FORMATS:
        raise ConfigError(f"{path}: expected a file name ending in {', '.join(FIGURE_FORMATS)} (the figure's format)")
    return suffix[1:]


def write_figure(figure: Any, path: str | Path) -> Path:
    """Save ``figure`` to ``path`` in its suffix's format, through a temporary sibling renamed over it.

    Raises:
        ConfigError: the suffix is not one of :data:`FIGURE_FORMATS`.
    """
    path = Path(path)
    kind = figure_format(path)
    write_binary_atomic(path, lambda handle: figure.savefig(handle, format=kind))
    return path
