"""A TensorBoard writer whose storage failures are one :class:`~longtail.errors.StorageError` line.

``torch.utils.tensorboard.SummaryWriter`` writes its event file from a
background thread. On a full disk that thread dies with an OSError, Python
prints the thread's traceback, and the next call in the main thread raises
the same OSError: two tracebacks for one full disk. :class:`GuardedSummaryWriter`
keeps the thread quiet (its error is raised in the main thread anyway) and
turns the main thread's OSError into one line naming the folder.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from ..errors import StorageError
from ..fs.atomic import os_error_reason

_previous_hook = threading.excepthook  # replaced by the one in place when the guard is installed


def _quiet_writer_threads(args: threading.ExceptHookArgs) -> None:
    """threading.excepthook: silence an OSError of TensorBoard's writer thread; anything else as before."""
    thread_class = type(args.thread).__name__ if args.thread is not None else ""
    if thread_class == "_AsyncWriterThread" and isinstance(args.exc_value, OSError):
        return  # stored by the thread and raised by the next write, flush or close of the main thread
    _previous_hook(args)


def _install_hook() -> None:
    global _previous_hook
    if threading.excepthook is not _quiet_writer_threads:
        _previous_hook, threading.excepthook = threading.excepthook, _quiet_writer_threads


class GuardedSummaryWriter:
    """``SummaryWriter(log_dir=folder)`` with ``add_scalar``, ``flush`` and ``close``; OSErrors become StorageError."""

    def __init__(self, folder: str | Path) -> None:
        from torch.utils.tensorboard import SummaryWriter  # loads the tensorboard package: only when logging

        self._folder = Path(folder)
        _install_hook()
        self._writer = self._call(lambda: SummaryWriter(log_dir=str(self._folder)))

    def _call(self, operation: Any) -> Any:
        try:
            return operation()
        except OSError as error:
            raise StorageError(
                f"{self._folder}: {os_error_reason(error)}; the TensorBoard log could not be written"
            ) from error

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self._call(lambda: self._writer.add_scalar(tag, value, step))

    def flush(self) -> None:
        self._call(self._writer.flush)

    def close(self) -> None:
        self._call(self._writer.close)
