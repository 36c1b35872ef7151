"""Reading ``.npz`` archives and ``.npy`` arrays from elsewhere: every member checked from its header first.

Every NumPy file longtail reads (an image dataset ``data.name=npz``, precomputed
features ``data.name=features``, a run's ``predictions/*.npz``, an ``.npy``
image given to ``longtail predict``) goes through this module, never through
``np.load``. :func:`open_npz` lists an archive's members; a member's header
(dtype and shape, a few bytes) is read when it is asked for, and its data only
when :meth:`NpzArchive.read` asks for it, after these checks:

- the member is a ``.npy`` array (anything else is refused, not returned as bytes);
- its dtype holds no Python objects (those are stored as a pickle, which could
  run code: refused, never read);
- the data its header declares (shape x item size) fits in the bytes the zip
  directory says the member holds: a member cannot inflate beyond that (the zip
  reader stops there), so a small file cannot make the reader allocate gigabytes;
- what is read in all fits in this machine's memory.

A member that is not asked for is never decompressed, however large it
inflates: a 1 MB file holding a 1 GiB member of zeros costs nothing unless that
member is read (tests/test_small_inputs.py measures it for each entrance).
"""

from __future__ import annotations

import contextlib
import math
import os
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from .errors import DataError, LongtailError, described

Header = tuple[tuple[int, ...], np.dtype]  # what a .npy member declares: shape and dtype
NPY_MAGIC = b"\x93NUMPY"
# What a damaged archive raises while a member is read: the zip reader, zlib and NumPy's parser.
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError, RuntimeError)


def memory_bytes() -> int:
    """Physical memory in bytes (0 where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def npy_header(handle: IO[bytes]) -> Header:
    """Shape and dtype that a ``.npy`` stream declares, read from its first bytes (nothing is allocated).

    Raises:
        ValueError: when the stream is not a ``.npy`` array of format 1.0 or 2.0.
    """
    if handle.read(6) != NPY_MAGIC:
        raise ValueError("not a .npy array (no \\x93NUMPY magic)")
    version = tuple(handle.read(2))
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in readers:
        raise ValueError(f".npy format version {version}, expected 1.0 or 2.0")
    shape, _, dtype = readers[version](handle)
    return tuple(int(n) for n in shape), dtype


def declared_bytes(header: Header) -> int:
    """The bytes of data a header declares: its shape's product times the item size."""
    shape, dtype = header
    return math.prod(shape) * dtype.itemsize


@dataclass(frozen=True)
class Member:
    """One array of an archive, as its header declares it: ``name`` as ``np.load`` names it (``x_train``)."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    held: int  # bytes the zip directory says the member inflates to (header included)

    @property
    def nbytes(self) -> int:
        """The bytes of data the header declares."""
        return declared_bytes((self.shape, self.dtype))


class NpzArchive:
    """An open ``.npz`` archive: member names at once, headers and data on demand, each checked.

    Use :func:`open_npz`; every refusal is one line of ``error`` naming the file and the member.
    """

    def __init__(self, path: Path, archive: zipfile.ZipFile, error: type[LongtailError]) -> None:
        self.path = path
        self.error = error
        self._archive = archive
        self._entries: dict[str, str] = {}
        for entry in archive.namelist():  # x_train.npy -> x_train, as np.load names them; the first one wins
            self._entries.setdefault(entry[:-4] if entry.endswith(".npy") else entry, entry)
        self._headers: dict[str, Member] = {}
        self._read_bytes = 0

    @property
    def names(self) -> list[str]:
        """The members' names, in the archive's order."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def header(self, name: str) -> Member:
        """Shape and dtype of member ``name``, from its first bytes; refused when it is not an array or holds
        Python objects. Nothing else of the member is decompressed."""
        if name in self._headers:
            return self._headers[name]
        if name not in self._entries:
            raise self.error(f"{self.path}: no array {name!r}")
        entry = self._entries[name]
        try:
            with self._archive.open(entry) as handle:
                shape, dtype = npy_header(handle)
        except ValueError:  # what np.load would return as bytes, not an array
            raise self.error(f"{self.path}: {name} is not a NumPy array (.npy member)") from None
        except _READ_ERRORS as error:
            raise self._damaged(error) from None
        if dtype.hasobject:  # stored as a pickle, which could run code: never read
            raise self.error(f"{self.path}: not a readable .npz file ({name} holds Python objects, a pickle; refused)")
        self._headers[name] = Member(name, shape, dtype, self._archive.getinfo(entry).file_size)
        return self._headers[name]

    def check(self, names: Iterable[str]) -> None:
        """Refuse, before any is decompressed, a member whose header declares more data than the member holds,
        or members that declare more in all (with what was read before) than this machine's memory."""
        total = self._read_bytes
        for name in names:
            member = self.header(name)
            if member.nbytes > member.held:
                declared, held = f"{member.nbytes:,}", f"{member.held:,}"
                raise self.error(f"{self.path}: {name} declares {declared} bytes of data, but its member holds {held}")
            total += member.nbytes
        memory = memory_bytes()
        if memory and total > memory:
            gib = f"{total / 2**30:.1f}"
            raise self.error(f"{self.path}: its arrays declare {gib} GiB, more than this machine's memory")

    def read(self, name: str) -> np.ndarray:
        """Member ``name``, checked (:meth:`header`, :meth:`check`), then decompressed; never with pickle."""
        self.check([name])
        try:
            with self._archive.open(self._entries[name]) as handle:
                array = np.lib.format.read_array(handle, allow_pickle=False)
        except _READ_ERRORS as error:
            raise self._damaged(error) from None
        self._read_bytes += self._headers[name].nbytes
        return array

    def _damaged(self, error: Exception) -> LongtailError:
        return self.error(f"{self.path}: not a readable .npz file ({described(error)})")


@contextlib.contextmanager
def open_npz(path: str | Path, *, what: str, error: type[LongtailError] = DataError) -> Iterator[NpzArchive]:
    """The ``.npz`` archive at ``path``, open for checked reads (:class:`NpzArchive`).

    Args:
        path: the file.
        what: what the file is, for the message of a missing one ("features file (data.path)").
        error: the error type of every refusal (one line naming ``path``).

    Raises:
        ``error``: the file is missing, not a zip archive (a single ``.npy`` is named as such), or damaged.
    """
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise error(f"{path}: is a directory, expected the {what}") from None
    except zipfile.BadZipFile:
        kind = "a single .npy array, expected an .npz archive" if _starts_with(path, NPY_MAGIC) else "not a zip"
        raise error(f"{path}: not a readable .npz file ({kind})") from None
    except (OSError, ValueError, EOFError) as failure:
        raise error(f"{path}: not a readable .npz file ({described(failure)})") from None
    with archive:
        yield NpzArchive(path, archive, error)


def read_npy(path: str | Path, *, error: type[LongtailError] = DataError) -> np.ndarray:
    """A single ``.npy`` file, checked as an archive member is: an array, no Python objects, its declared data
    within the file and within this machine's memory; never with pickle."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            try:
                shape, dtype = npy_header(handle)
            except ValueError as failure:
                raise error(f"{path}: not a NumPy array ({failure})") from None
            if dtype.hasobject:
                raise error(f"{path}: holds Python objects (a pickle, which could run code); refused")
            declared, held = declared_bytes((shape, dtype)), os.fstat(handle.fileno()).st_size - handle.tell()
            if declared > held:
                raise error(f"{path}: declares {declared:,} bytes of data, but the file holds {held:,}")
            memory = memory_bytes()
            if memory and declared > memory:
                raise error(f"{path}: declares {declared / 2**30:.1f} GiB, more than this machine's memory")
            handle.seek(0)  # read_array reads the header again
            return np.lib.format.read_array(handle, allow_pickle=False)
    except LongtailError:
        raise
    except (OSError, ValueError, EOFError) as failure:
        raise error(f"{path}: not a readable .npy file ({described(failure)})") from None


def _starts_with(path: Path, magic: bytes) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(len(magic)) == magic
    except OSError:
        return False
