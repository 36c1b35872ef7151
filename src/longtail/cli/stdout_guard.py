"""Standard output that cannot be written is one error line, not a traceback.

``longtail eval RUN > /dev/full`` (or a full disk, or a terminal gone away)
made ``print`` raise ``OSError`` in the middle of a command: a traceback, and
no word of which file failed. The command's standard output is wrapped so that
such a failure is a :class:`~longtail.errors.StorageError` naming standard
output. A reader that went away (``| head -1``) stays a ``BrokenPipeError``,
which ``main`` ends quietly as SIGPIPE would.

A standard output closed before the command starts (``longtail eval RUN >&-``)
is refused at once: Python then sets ``sys.stdout`` to None and ``print``
writes nothing, so the command ran, printed nothing and exited 0; and the
next file the command opened would take descriptor 1.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any, TextIO

from ..errors import StorageError


class _GuardedStdout:
    """Writes to ``stream``; an ``OSError`` other than a broken pipe becomes a ``StorageError``."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def _guarded(self, call: Any, *args: Any) -> Any:
        try:
            return call(*args)
        except BrokenPipeError:
            raise
        except OSError as error:
            reason = error.strerror or type(error).__name__
            with contextlib.suppress(OSError, ValueError):  # what is still buffered must not fail again at exit
                os.dup2(os.open(os.devnull, os.O_WRONLY), self._stream.fileno())
            raise StorageError(f"cannot write to standard output: {reason}") from error

    def write(self, text: str) -> int:  # noqa: D102
        return self._guarded(self._stream.write, text)

    def flush(self) -> None:  # noqa: D102
        self._guarded(self._stream.flush)

    def __getattr__(self, name: str) -> Any:  # isatty, encoding, fileno, ...: the stream's own
        return getattr(self._stream, name)


def _descriptor_closed(fd: int) -> bool:
    """Whether file descriptor ``fd`` is not open (``>&-`` in a shell)."""
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


@contextlib.contextmanager
def guarded_stdout() -> Iterator[None]:
    """Guard the process's own standard output for the command's duration (one swapped by a test is left as is).

    Raises:
        StorageError: standard output is closed: nothing the command printed would be seen.
    """
    stream = sys.stdout
    if stream is None and _descriptor_closed(1):
        raise StorageError(
            "cannot write to standard output: it is closed (>&-); send it to a file, or to /dev/null to discard it"
        )
    if stream is None or stream is not sys.__stdout__:
        yield
        return
    sys.stdout = _GuardedStdout(stream)  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stdout = stream
