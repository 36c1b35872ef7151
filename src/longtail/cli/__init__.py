"""The ``longtail`` command (entry point ``longtail.cli:main``): :mod:`.main` parses and dispatches; each group
of commands is a module of its own (:mod:`.stages`, :mod:`.experiments`, :mod:`.results`, :mod:`.tools`)."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
