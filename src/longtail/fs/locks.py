"""Locking a directory between processes: an flock on a file inside it, and a record of who holds it.

An flock on ``FOLDER/LOCK_FILE``: the kernel drops it when the holder exits in
any way (SIGKILL included), so a lock is never stale. A second process fails
at once (or after ``wait`` seconds) rather than waiting forever, with the
caller's error naming the holder ("PID 4242 (longtail decouple)", from the
record the holder wrote into the file). The last holder removes the file, so a
folder at rest holds only its own files; whoever locks a file that was removed
meanwhile (its inode is no longer the path's) locks the new one instead.
Writers take it exclusive, readers shared; it is re-entrant within a process,
and a forked child (a DataLoader worker) drops its copies of the parent's locks.

What the lock is called and how its failures read belong to the caller
(:class:`LockPolicy`): :func:`longtail.runs.run_lock` is this lock on a run
directory, in a run's words.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import LongtailError
from ..safe_text import parse_json, read_json_file
from .atomic import os_error_reason, pid_alive, storage_error

log = logging.getLogger(__name__)

RETRY_S = 0.05  # how often a lock that is taken is tried again, while there is time left to wait
MAX_RECORD = 4096  # bytes of a holder record: {"pid", "command", "since"} is well under a hundred


@dataclass(frozen=True)
class LockPolicy:
    """What a directory lock is called, where its file lives, and the errors its failures raise.

    Attributes:
        file_name: the lock file inside the folder (``.longtail.lock``).
        noun: what is locked, in the log line of a file system without locks ("cannot lock the run directory")
            and the error of a shared lock asked to become exclusive ("a shared run lock").
        missing: ``folder -> error``: the folder does not exist.
        in_use: ``(folder, holder) -> error``: another process holds it; ``holder`` is "PID n (COMMAND)" or
            "another longtail process".
        unwritable: ``(folder, OSError, command) -> error``: an exclusive lock on a folder that cannot be written.
        on_exclusive: run with the folder once an exclusive lock is taken (not on re-entry): clean-up that is
            safe only while no other process writes there.
    """

    file_name: str
    noun: str
    missing: Callable[[Path], Exception]
    in_use: Callable[[Path, str], Exception]
    unwritable: Callable[[Path, OSError, str], Exception]
    on_exclusive: Callable[[Path], None] | None = None


# Locks this process holds: real path of the lock file -> (lock fd, exclusive).
_HELD: dict[str, tuple[int, bool]] = {}


def _close_inherited_locks() -> None:
    """In a forked child (DataLoader workers), drop the copies of the lock fds.

    The parent keeps its locks; without this a worker that outlives a
    SIGKILLed parent for a few seconds would keep the folder locked.
    """
    for fd, _ in _HELD.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_close_inherited_locks)


def _holder(path: Path) -> str:
    """Who holds the lock file ``path``, as "PID n (longtail decouple)", from what the holder wrote into it."""
    for _ in range(5):  # the holder writes its record just after taking the lock: give it a moment
        try:
            record = read_json_file(path, "lock record", max_bytes=MAX_RECORD, error=LongtailError)
            if pid_alive(int(record["pid"])):  # else a killed holder's record, the live one could not write its own
                return f"PID {int(record['pid'])} ({record['command']})"
            break
        except (OSError, LongtailError, ValueError, KeyError, TypeError):
            time.sleep(0.02)
    return "another longtail process"


def _recorded_pid(fd: int) -> int | None:
    """The PID recorded in the lock file, if any."""
    try:
        return int(parse_json(os.pread(fd, MAX_RECORD, 0), "", error=LongtailError)["pid"])
    except (OSError, LongtailError, ValueError, KeyError, TypeError):
        return None


def _record_holder(fd: int, command: str, *, exclusive: bool) -> None:
    """Write who holds the lock into the lock file; best effort (a full disk or a read-only fd skips it).

    A reader keeps the record of another live reader: the message then names one that is still there.
    """
    if not exclusive:
        pid = _recorded_pid(fd)
        if pid is not None and pid != os.getpid() and pid_alive(pid):
            return
    record = json.dumps({"pid": os.getpid(), "command": command, "since": time.time()}).encode()
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, record, 0)


def _open_lock_file(folder: Path, policy: LockPolicy, *, exclusive: bool, command: str) -> int | None:
    """The fd of ``folder``'s lock file, created if absent; None for a reader of a folder nobody can write."""
    path = folder / policy.file_name
    if not folder.is_dir():
        raise policy.missing(folder)
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as error:
        if error.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise storage_error(path, error, existed=path.exists()) from error
        if exclusive:
            raise policy.unwritable(folder, error, command) from error
        try:  # a reader locks an existing lock file read-only, so that writers still see it
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None  # no lock file and none can be made: no process can write this folder either


def _flock(fd: int, folder: Path, policy: LockPolicy, *, exclusive: bool, deadline: float) -> bool:
    """flock ``fd``, retrying until ``deadline`` (monotonic); False where the file system has no locks."""
    while True:
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise policy.in_use(folder, _holder(folder / policy.file_name)) from None
            time.sleep(RETRY_S)
        except OSError as error:  # ENOLCK, EOPNOTSUPP: some network file systems cannot lock
            reason = os_error_reason(error)
            log.warning("%s: cannot lock the %s directory (%s); going on without", folder, policy.noun, reason)
            return False


def _is_current(fd: int, path: Path) -> bool:
    """Whether ``fd`` is still the file at ``path`` (the last holder removes it on release)."""
    try:
        opened, current = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (opened.st_dev, opened.st_ino) == (current.st_dev, current.st_ino)


def _lock(folder: Path, policy: LockPolicy, command: str, *, exclusive: bool, wait: float) -> int | None:
    """Open and flock ``folder``'s lock file; the fd, or None where no lock can be had (read-only, for a reader)."""
    deadline = time.monotonic() + wait
    while True:
        fd = _open_lock_file(folder, policy, exclusive=exclusive, command=command)
        if fd is None:
            return None
        try:
            locked = _flock(fd, folder, policy, exclusive=exclusive, deadline=deadline)
        except BaseException:
            os.close(fd)
            raise
        if not locked or _is_current(fd, folder / policy.file_name):
            if locked:
                _record_holder(fd, command, exclusive=exclusive)
            return fd
        os.close(fd)  # its holder removed it as we locked it: lock the file now at the path


def _alone(fd: int) -> bool:
    """Whether a reader holds the lock alone (it can take it exclusive without waiting)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _release(fd: int, path: Path, *, exclusive: bool) -> None:
    """Unlock; the last holder (exclusive, or a reader alone) removes the lock file first."""
    try:
        if (exclusive or _alone(fd)) and _is_current(fd, path):
            path.unlink()
    except OSError:
        pass  # a read-only folder keeps its lock file; the next holder reuses it
    finally:
        os.close(fd)  # closing the last fd of the lock file releases the flock


@contextlib.contextmanager
def directory_lock(
    folder: str | Path, policy: LockPolicy, command: str = "longtail", *, exclusive: bool = True, wait: float = 0.0
) -> Iterator[None]:
    """Hold the lock of directory ``folder`` for the block.

    Taken ``exclusive`` it excludes everyone; shared (``exclusive=False``),
    other readers coexist. A lock held by another process fails at once with
    ``policy.in_use``, or after ``wait`` seconds of retrying. Re-entrant within
    one process (a shared lock cannot become exclusive). A reader of a folder
    nobody can write, and any holder on a file system without locks (logged),
    goes on unlocked.

    Args:
        folder: an existing directory.
        policy: the lock file's name and the caller's errors.
        command: what this process is, for the message another one gets ("longtail decouple").
        exclusive: a writer's lock (else a reader's).
        wait: seconds to keep trying while another process holds it.

    Raises:
        the errors of ``policy`` (missing folder, in use, not writable); StorageError when the lock file cannot
        be created for another reason.
    """
    folder = Path(folder)
    key = os.path.join(os.path.realpath(folder), policy.file_name)
    if key in _HELD:
        if exclusive and not _HELD[key][1]:
            raise RuntimeError(
                f"{folder}: a shared {policy.noun} lock cannot become exclusive; take it exclusive first"
            )
        yield
        return
    fd = _lock(folder, policy, command, exclusive=exclusive, wait=wait)
    if fd is None:
        yield
        return
    try:
        _HELD[key] = (fd, exclusive)
        if exclusive and policy.on_exclusive is not None:
            policy.on_exclusive(folder)
        yield
    finally:
        _HELD.pop(key, None)
        _release(fd, folder / policy.file_name, exclusive=exclusive)
