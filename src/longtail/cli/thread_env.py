"""A malformed ``OMP_NUM_THREADS`` becomes the command's own one-line warning, before torch loads.

libgomp (torch's OpenMP runtime) parses the variable when torch is imported;
on a value it cannot read (``0``, ``abc``, ``1.5``, empty) it prints a blank
line and "libgomp: Invalid value for environment variable OMP_NUM_THREADS" and
goes on with its default thread count. That line names neither the value nor
what was expected, and appears before anything the command says. So the
variable is checked first, in libgomp's own terms (a comma-separated list of
positive integers, spaces allowed), and a value libgomp would ignore is
dropped from this process's environment with one line that says so: the
command then runs as libgomp would have run it, silently.
"""

from __future__ import annotations

import os
import re
from collections.abc import MutableMapping

VARIABLE = "OMP_NUM_THREADS"
# What libgomp reads (checked against it on torch 2.13's libgomp: "2", " 2 ", "+2", "02", "2,1", "2 ,1" are read;
# "0", "-1", "1.5", "", "abc" are refused).
_POSITIVE = r"\s*\+?0*[1-9][0-9]*\s*"
_READABLE = re.compile(rf"{_POSITIVE}(?:,{_POSITIVE})*")


def drop_unreadable_thread_count(environ: MutableMapping[str, str] = os.environ) -> str | None:
    """Remove ``OMP_NUM_THREADS`` from ``environ`` when libgomp could not read it; the warning line, or None."""
    value = environ.get(VARIABLE)
    if value is None or _READABLE.fullmatch(value):
        return None
    del environ[VARIABLE]
    return (
        f"longtail: warning: {VARIABLE}={value!r} is not a positive integer (or a comma-separated list of them); "
        "ignored, torch uses its default number of threads"
    )
