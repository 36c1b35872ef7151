"""The ``longtail`` command (entry point ``longtail.cli:main``): :mod:`.main` parses and dispatches; each group
of commands is a module of its own (:mod:`.stages`, :mod:`.experiments`, :mod:`.results`, :mod:`.tools`)."""

try:
    from .main import build_parser, main
except KeyboardInterrupt:  # Ctrl-C while torch and the rest load (seconds): the command's one line, not a traceback
    import sys

    print("longtail: interrupted", file=sys.stderr)
    raise SystemExit(130) from None

__all__ = ["build_parser", "main"]
