"""The ASCII spelling of a character longtail prints, and text as a stream that lacks some characters prints it.

``tau`` for "τ", ``+/-`` for "±", ``--`` for "—"; a letter without its accents;
``?`` for anything else. :mod:`longtail.cli.stream_encoding` makes standard
output and error write these spellings where their encoding lacks a character
(``PYTHONIOENCODING=ascii``); :func:`as_printed` gives the same text before it
is written, so that a table pads its columns to the widths it will have
("τ-norm" is 6 characters, "tau-norm" 8: padded to the first, the columns
after it were 2 characters off).
"""

from __future__ import annotations

import codecs
import sys
import unicodedata
from typing import Any

# The characters longtail itself prints (tables, help, log lines), spelled as a reader of ASCII expects.
_SPELLINGS = {
    "τ": "tau",
    "π": "pi",
    "α": "alpha",
    "β": "beta",
    "γ": "gamma",
    "θ": "theta",
    "φ": "phi",
    "λ": "lambda",
    "ε": "eps",
    "μ": "mu",
    "Σ": "sum",
    "±": "+/-",
    "·": "*",
    "×": "x",
    "²": "^2",
    "⁰": "^0",
    "–": "-",
    "−": "-",
    "—": "--",
    "…": "...",
    "→": "->",
    "↦": "->",
    "←": "<-",
    "≥": ">=",
    "≤": "<=",
    "≈": "~",
    "∝": "~",
    "‖": "||",
    "√": "sqrt",
    "°": " deg",
    "✕": "x",
}


def ascii_spelling(char: str) -> str:
    """An ASCII spelling of one character: longtail's own table, the letter without accents, or ``?``."""
    if char in _SPELLINGS:
        return _SPELLINGS[char]
    bare = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
    return bare if bare.isascii() and bare.isprintable() and bare else "?"


def as_printed(text: str, stream: Any = None) -> str:
    """``text`` as ``stream`` (default: standard output) will write it: each character its encoding lacks in
    its ASCII spelling; unchanged on a UTF-8 stream, or one without an encoding (a test's ``StringIO``)."""
    stream = sys.stdout if stream is None else stream
    encoding = getattr(stream, "encoding", None)
    try:
        if not encoding or codecs.lookup(encoding).name == "utf-8":
            return text
        text.encode(encoding)
        return text
    except LookupError:  # an unknown codec: written as Python would, unchanged here too
        return text
    except UnicodeEncodeError:
        return "".join(char if _encodes(char, encoding) else ascii_spelling(char) for char in text)


def _encodes(char: str, encoding: str) -> bool:
    try:
        char.encode(encoding)
    except UnicodeEncodeError:
        return False
    return True
