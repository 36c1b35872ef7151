"""The ``longtail`` command (entry point ``longtail.cli:main``); see :mod:`longtail.cli.main`."""

from .main import _grid_seeds, build_parser, main

__all__ = ["_grid_seeds", "build_parser", "main"]
