"""The error type of everything a user can get wrong.

A :class:`LongtailError` carries one readable line that names the culprit (a
file, a config key, a value) and says what was expected. The CLI prints that
line and exits non-zero; anything else escaping is a bug and keeps its
traceback.
"""


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
