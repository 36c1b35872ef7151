"""Atomic file writes: a crash leaves the previous file or the new one, never half of one.

Every write goes to a temporary sibling ``.NAME.PID.XXXXXXXX.tmp``, is flushed
and fsynced, renamed over ``NAME``, and the directory is fsynced so that the
rename survives a power loss. A write that fails for want of storage (full
disk, quota, read-only file system, permissions) raises one
:class:`~longtail.errors.StorageError` line naming the file; the previous file
is left as it was and the temporary file removed. The writer's PID in the
temporary name lets a later write recognise one left by a killed process
(:func:`remove_stale_temporaries`).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import glob
import io
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from ..errors import StorageError

# Temporary files of a longtail older than this process (no PID in their name) are stale when older than this.
_PROCESS_START = time.time()
# What a failed write says, by errno; other errors say their own strerror.
_REASONS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EFBIG: "file too large for the file system",
    errno.EIO: "input/output error",
}
# Directory fsync is not supported everywhere (some network and FUSE file systems): then the rename stands alone.
_NO_DIRECTORY_SYNC = (errno.EINVAL, errno.ENOTSUP, errno.EBADF)


def os_error_reason(error: OSError) -> str:
    """A short lower-case reason for ``error``: "no space left on device", "read-only file system"..."""
    if error.errno in _REASONS:
        return _REASONS[error.errno]
    return (error.strerror or error.__class__.__name__).lower()


def storage_error(path: Path, error: OSError, *, existed: bool) -> StorageError:
    """The one-line error of a failed write of ``path``: the file, the reason, and that nothing changed."""
    left = "nothing was replaced" if existed else "nothing was written"
    reason = os_error_reason(error)
    if error.errno in (errno.EEXIST, errno.ENOTDIR):  # "file exists" read as if path itself existed
        blocking = _file_in_the_way(Path(path))
        reason = reason if blocking is None else f"{blocking} is a file, not a directory"
    return StorageError(f"{path}: {reason}; {left}")


def _file_in_the_way(path: Path) -> Path | None:
    """The nearest existing folder above ``path`` if it is not a directory (its folders cannot be made), else None."""
    for parent in path.parents:
        if parent.is_symlink() or parent.exists():
            return None if parent.is_dir() else parent
    return None


@contextlib.contextmanager
def _translated(path: Path, existed: bool) -> Iterator[None]:
    """Turn an OSError of the block into the :class:`StorageError` of writing ``path`` (the cause kept for --debug)."""
    try:
        yield
    except OSError as error:
        raise storage_error(path, error, existed=existed) from error


class _GuardedWriter(io.RawIOBase):
    """The temporary file as the writer callback sees it: write errors are recorded, never raised.

    torch's zip writer calls ``write`` from C++; an exception there can abort
    the whole process (torch.export.save) or leave a confusing RuntimeError
    (torch.save). So the first OSError is kept in ``error``, later writes are
    dropped, and the caller raises it once the callback has returned.
    """

    def __init__(self, file: io.BufferedWriter) -> None:
        super().__init__()
        self._file = file
        self.error: OSError | None = None

    def _guard(self, operation: Callable[[], Any], fallback: Any) -> Any:
        if self.error is not None:
            return fallback
        try:
            return operation()
        except OSError as error:
            self.error = error
            return fallback

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._file.seekable()

    def write(self, data: Any) -> int:
        size = memoryview(data).nbytes
        written = self._guard(lambda: self._file.write(data), size)
        return size if written is None else written

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._guard(lambda: self._file.seek(offset, whence), 0)

    def tell(self) -> int:
        return self._guard(self._file.tell, 0)

    def flush(self) -> None:
        if not self._file.closed:
            self._guard(self._file.flush, None)

    def close(self) -> None:
        # The real file belongs to _atomic_write, which syncs and closes it; only this view closes here.
        self.flush()
        super().close()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (a PID of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# A process whose start /proc puts this much after a file's last change did not write it (btime is whole seconds).
_START_SLACK_S = 2.0


@functools.cache
def _boot_time() -> int | None:
    """When this machine booted, in seconds since the epoch (Linux ``/proc/stat``); None where unknown."""
    try:
        with open("/proc/stat", "rb") as handle:
            return next(int(line.split()[1]) for line in handle if line.startswith(b"btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started, in seconds since the epoch (Linux ``/proc``); None where unknown."""
    boot = _boot_time()
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            ticks = int(handle.read().rsplit(b")", 1)[1].split()[19])  # field 22, starttime, after "(comm)"
    except (OSError, ValueError, IndexError):
        return None
    return None if boot is None else boot + ticks / os.sysconf("SC_CLK_TCK")


def writer_gone(pid: int, written: Path) -> bool:
    """Whether process ``pid``, named in a temporary ``written`` it made, can no longer be writing it.

    Gone when no process has that PID, or when the one that has it now
    started after ``written`` last changed: the PID was reused (a container's
    command is PID 1 again after a restart; any PID after a reboot). This
    process counts as any other: its own temporaries are newer than it.
    """
    if not pid_alive(pid):
        return True
    started = _process_start(pid)
    try:
        changed = os.lstat(written).st_mtime
    except OSError:
        return False
    return started is not None and started > changed + _START_SLACK_S


def _temporary_pattern(name: str = r".+?") -> re.Pattern[str]:
    """``.NAME.PID.XXXXXXXX.tmp`` (this version) or ``.NAME.XXXXXXXX.tmp`` (older versions, no PID)."""
    return re.compile(rf"^\.(?P<name>{name})\.(?:(?P<pid>\d+)\.)?[a-z0-9_]{{8}}\.tmp$")


def _is_stale(path: Path, match: re.Match[str], *, by_age: bool) -> bool:
    """A temporary file is stale when its writer is gone; one without a PID, when older than this process."""
    if match["pid"] is not None:
        return writer_gone(int(match["pid"]), path)
    if not by_age:
        return False
    try:
        return path.stat().st_mtime < _PROCESS_START
    except OSError:
        return False


def _remove_quietly(path: Path) -> bool:
    """Unlink ``path``; False when that failed (gone already, or a read-only directory)."""
    try:
        path.unlink()
    except OSError:
        return False
    return True


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the temporary files that killed writers left in ``folder`` (and below); returns them.

    Call it only while no other process may be writing ``folder`` (the run
    lock is held): temporary files without a PID in their name, from older
    versions, are judged by age.
    """
    pattern = _temporary_pattern()
    removed = []
    for root, _, names in os.walk(folder):  # unreadable folders are skipped
        for name in names:
            match = pattern.match(name)
            path = Path(root) / name
            if match and _is_stale(path, match, by_age=True) and _remove_quietly(path):
                removed.append(path)
    return removed


def _remove_stale_siblings(path: Path) -> None:
    """Remove temporary files of ``path`` whose writer died (no lock needed: a live writer's file is kept)."""
    pattern = _temporary_pattern(re.escape(path.name))
    with contextlib.suppress(OSError):
        for sibling in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
            match = pattern.match(sibling.name)
            if match and match["pid"] is not None and _is_stale(sibling, match, by_age=False):
                _remove_quietly(sibling)


def sync_directory(folder: Path, *, written: Path) -> None:
    """fsync ``folder``, so that a rename into it survives a power loss."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return  # a directory we may write but not open: the rename is done, durability is the system's
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno not in _NO_DIRECTORY_SYNC:
            raise StorageError(
                f"{written}: written, but its directory could not be synced ({os_error_reason(error)}); "
                "it may not survive a power loss"
            ) from error
    finally:
        os.close(fd)


def make_dirs(folder: Path) -> None:
    """``mkdir -p folder``; a failure is one :class:`StorageError` line naming it."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StorageError(f"{folder}: cannot create the directory ({os_error_reason(error)})") from error


def check_can_write(path: Path) -> None:
    """Fail now, in one :class:`StorageError` line, where :func:`write_text_atomic` could not write ``path``
    later (a read-only or missing folder): for a file written after hours of work (``grid --doc``).

    Creates ``path``'s folder and a temporary file in it, removed at once; ``path`` itself is not touched.
    """
    path = Path(path)
    try:
        existed = path.exists()
    except OSError:
        existed = False
    with _translated(path, existed):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    _remove_quietly(Path(tmp_name))


def remove_tree(path: Path) -> None:
    """``rm -r path`` (a file or a directory); a failure is one :class:`StorageError` line naming it."""
    try:
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    except OSError as error:
        raise StorageError(f"{path}: cannot remove it ({os_error_reason(error)})") from error


def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """Write through ``write(binary_file)`` into a temporary sibling, fsync, rename over ``path``, fsync the folder."""
    path = Path(path)
    try:
        existed = path.exists()
    except OSError:  # a folder we may not even look into: the write below says why
        existed = False
    with _translated(path, existed):
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_siblings(path)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    handle = None
    try:
        with _translated(path, existed):
            os.chmod(tmp_name, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual mode
            handle = os.fdopen(fd, "wb")
        sink = _GuardedWriter(handle)
        try:
            write(sink)
        except Exception:
            if sink.error is None:
                raise  # the callback's own failure, not the disk's: keep it as it is
        with _translated(path, existed):
            if sink.error is not None:
                raise sink.error
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
            os.replace(tmp_name, path)
    except BaseException:
        if handle is not None:
            with contextlib.suppress(OSError):
                handle.close()  # the fd is closed even when the final flush fails
        else:
            with contextlib.suppress(OSError):
                os.close(fd)
        _remove_quietly(Path(tmp_name))
        raise
    sync_directory(path.parent, written=path)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically."""
    _atomic_write(path, lambda handle: handle.write(data))


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, obj: Any) -> None:
    """Replace ``path`` with ``obj`` as indented JSON, atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_binary_atomic(path: Path, write: Callable[[Any], None]) -> None:
    """Replace ``path`` with what ``write(binary_file)`` writes, atomically.

    ``binary_file`` is writable and seekable; when the disk fails, its writes
    are dropped and a :class:`StorageError` is raised after ``write`` returns,
    so native writers (torch's zip writer) never see an exception.
    """
    _atomic_write(path, write)


def save_torch_atomic(path: Path, obj: Any) -> None:
    """``torch.save`` into ``path`` atomically."""
    write_binary_atomic(path, lambda handle: torch.save(obj, handle))
