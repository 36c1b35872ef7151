"""The error type of everything a user can get wrong, and how a value is shown in its message.

A :class:`LongtailError` carries one readable line that names the culprit (a
file, a config key, a value) and says what was expected. The CLI prints that
line and exits non-zero; anything else escaping is a bug and keeps its
traceback.
"""

import re


class LongtailError(Exception):
    """A user-facing error whose message names what is wrong and what was expected."""


class ConfigError(LongtailError, ValueError):
    """A config key that does not exist, has the wrong type or an impossible value."""


class DataError(LongtailError):
    """Data that is missing, malformed or unusable for the requested method."""


class RunDirError(LongtailError):
    """A run directory that is missing, not a run, or does not match its config."""


class RunInUseError(RunDirError):
    """Another process holds the lock of a run directory (see :func:`longtail.runs.run_lock`)."""


class OutputPathError(LongtailError):
    """A user-named output path that would replace a run's own file, or an existing file without --overwrite."""


class StorageError(LongtailError):
    """A file that could not be written (full disk, quota, read-only file system, permissions).

    The message names the file and says that the previous file, if any, was
    left as it was.
    """


class TrainingError(LongtailError):
    """Training that cannot go on: the loss became NaN or infinite.

    Attributes:
        step: 1-based step of the epoch where it first happened.
    """

    def __init__(self, message: str, step: int = 0) -> None:
        super().__init__(message)
        self.step = step


# --- how a value appears in an error's one line ------------------------------------------------------------

SHOWN_CHARS = 80  # a value in a message is cut to this: a file or a config can hold a value of any size
_REPR_LINE_BREAK = re.compile(r"\n\s*")


def shown(value: object, limit: int = SHOWN_CHARS, *, quote: bool = True, middle: bool = False) -> str:
    """``value`` for a one-line message: ``repr(value)`` (``str`` with ``quote=False``), cut past ``limit`` characters.

    A cut text says its full length: ``'abcdef... (12,345 characters)``; with
    ``middle`` its middle is cut instead and its end stays, as a path's file
    name does: ``/data/sub...dir/name.png (9,000 characters)``. Never fails: an
    integer past Python's 4,300-digit limit of int -> str, and a structure
    nested too deep for ``repr``, are described instead.

    The one message-shortening helper of longtail: every error that quotes a
    value from a file, a config or a command line shows it through this.
    """
    try:
        text = repr(value) if quote else str(value)
    except ValueError:  # int -> str refuses more than 4300 digits
        if isinstance(value, int):
            return f"<an integer of {value.bit_length():,} bits>"
        return f"<a {type(value).__name__} that cannot be shown>"
    except RecursionError:
        return f"<a {type(value).__name__} nested too deep to show>"
    if quote:  # a repr over lines (a 2-D NumPy array) joined: a str's own line breaks are escaped by repr already
        text = _REPR_LINE_BREAK.sub(" ", text)
    if len(text) <= limit:
        return text
    size = f" ({len(text):,} characters)"
    if not middle:
        return f"{text[: max(limit - 3, 1)]}...{size}"
    head = max(limit - 3, 2) // 2
    tail = max(limit - 3 - head, 1)
    return f"{text[:head]}...{text[-tail:]}{size}"


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def one_line(text: str) -> str:
    """``text`` with its control characters as escapes (a line break as ``\\n``): a message or a table row that
    quotes a file's name (which may hold a line break) stays on one line."""
    return _CONTROL.sub(lambda match: repr(match.group())[1:-1], text)


def described(error: BaseException, limit: int = 160) -> str:
    """``Type: first line of the message`` of an exception from a library, :func:`shown` to ``limit`` characters:
    the one-line reason of a failure whose message may run to pages (a damaged file, a program refusing input)."""
    first = next((line for line in str(error).splitlines() if line.strip()), "")
    return f"{error.__class__.__name__}: {shown(first, limit, quote=False)}" if first else error.__class__.__name__
