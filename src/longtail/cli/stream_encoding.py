"""Print on terminals and pipes that cannot encode every character of longtail's output.

Tables and help use "τ", "±", "—" and class names from the data. Standard
output of a Python started with ``PYTHONIOENCODING=ascii`` (or ``latin-1``, or
an old Windows code page) raised ``UnicodeEncodeError`` on the first of them,
a traceback in place of the table. The streams are switched to an error
handler that writes a readable ASCII spelling instead: ``tau``, ``+/-``,
``--``; letters with accents lose them (``château`` -> ``chateau``); anything
else becomes ``?``. A stream that can encode a character writes it as before.

A UTF-8 stream of ``errors="strict"`` (``LANG=en_US.UTF-8``) raised the same
error on a run directory whose name is not UTF-8 (Python holds its bytes as
surrogates): it writes those bytes back as they were.
"""

from __future__ import annotations

import codecs
import sys

from ..ascii_spelling import ascii_spelling

ERROR_HANDLER = "longtail-ascii-spelling"


def _spell_unencodable(error: UnicodeError) -> tuple[str, int]:
    """Codec error handler: the unencodable characters of ``error`` in their ASCII spelling."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    text = error.object[error.start : error.end]
    return "".join(ascii_spelling(c) for c in text), error.end


codecs.register_error(ERROR_HANDLER, _spell_unencodable)


def spell_what_streams_cannot_encode() -> None:
    """Make ``sys.stdout`` and ``sys.stderr`` write an ASCII spelling of what their encoding lacks.

    Only real text streams are switched (a test's ``StringIO`` has no
    encoding to fail); their encoding and buffering stay as they are.
    """
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is None or not getattr(stream, "encoding", None):
            continue
        try:
            if codecs.lookup(stream.encoding).name != "utf-8":
                reconfigure(errors=ERROR_HANDLER)
            elif stream.errors == "strict":
                # Every character encodes but a file name's undecodable bytes (surrogates, as Python reads
                # them): written back as the bytes they were, as under the C.UTF-8 locale
                reconfigure(errors="surrogateescape")
        except (LookupError, ValueError, OSError):  # an unknown codec, a closed stream: print as Python would
            continue
