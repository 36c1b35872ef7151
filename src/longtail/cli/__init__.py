"""The ``longtail`` command (entry point ``longtail.cli:main``): :mod:`.main` parses and dispatches; each group
of commands is a module of its own (:mod:`.stages`, :mod:`.experiments`, :mod:`.results`, :mod:`.tools`)."""

import os
import sys

try:
    os.getcwd()
except FileNotFoundError:
    # torch cannot load from a deleted directory: oneMKL ended the process with "FATAL ERROR: Cannot load
    # .../libtorch_cpu.so", which names neither the cause nor the cure.
    print("longtail: error: the current directory was deleted; cd to an existing directory", file=sys.stderr)
    raise SystemExit(1) from None

from .thread_env import drop_unreadable_thread_count

# Before torch loads libgomp, which would print its own line; where torch is loaded already (the library used in
# a program of its own), libgomp has read the variable and there is nothing to change.
_thread_warning = None if "torch" in sys.modules else drop_unreadable_thread_count()
if _thread_warning:
    print(_thread_warning, file=sys.stderr)

try:
    from .main import build_parser, main
except KeyboardInterrupt:  # Ctrl-C while torch and the rest load (seconds): the command's one line, not a traceback
    print("longtail: interrupted", file=sys.stderr)
    raise SystemExit(130) from None

__all__ = ["build_parser", "main"]
