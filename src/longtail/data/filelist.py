"""Split files: the ImageNet-LT / Places-LT / iNaturalist 2018 format (``data.name=filelist``).

One image per line, ``relative/path label``, the path relative to ``data.root``
and the label an integer class index 0 to C-1::

    train/n01440764/n01440764_190.JPEG 0

Keys: ``data.root``, ``data.filelist.train_list``, ``data.filelist.test_list`` and
optionally ``data.filelist.val_list`` (without it the validation split is held out of the training
images, at most a fifth of a class). A relative list path is looked up in the
current directory first, then in ``data.root``. An image path may not leave
``data.root``: an absolute path, or a ``..`` that climbs above it, is refused
with ``file:line`` (a symlink inside the root may point anywhere). Images are
decoded lazily, item by item, with Pillow (see :mod:`~longtail.data.image_files`).
An image listed twice, or in two splits, is used as listed and logged as a warning (:func:`repeated_images`).
"""

from __future__ import annotations

import logging
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from ..config import DataConfig, option
from ..errors import DataError
from .dataset import DatasetSplits
from .file_splits import Split, check_labels, file_splits
from .image_files import PathTable
from .longtail import first_missing_class
from .registry import DatasetSpec, register_dataset

# A class index: ASCII digits (int() would also take "٣", "1_0" and "+1"), a minus sign to name a negative one.
_LABEL = re.compile(r"-?[0-9]+", re.ASCII)
MAX_LABEL = 2**31 - 1
# Splits that must not share an image: the first's images would be scored (or chosen on) as unseen.
DISJOINT = (("train_list", "test_list"), ("train_list", "val_list"), ("val_list", "test_list"))

log = logging.getLogger(__name__)


def _shown(line: str, limit: int = 120) -> str:
    """``line`` for a message: quoted, and cut if long."""
    return repr(line if len(line) <= limit else line[:limit] + "...")


def leaves_root(relative: str) -> str | None:
    """Why the list path ``relative`` would name a file outside ``data.root``, or None when it stays inside.

    Judged on the text alone: an absolute path, or a ``..`` that climbs above
    the root. A symlink inside the root may point anywhere: whoever made the
    root put it there, a list file from elsewhere cannot.
    """
    if PurePosixPath(relative).is_absolute() or Path(relative).is_absolute():
        return "is absolute"
    depth = 0
    for part in PurePosixPath(relative).parts:
        depth += -1 if part == ".." else 0 if part == "." else 1
        if depth < 0:
            return "climbs above data.root with '..'"
    return None


def read_split_lines(path: str | Path, *, inside_root: bool = False) -> tuple[list[str], np.ndarray]:
    """The relative paths and (N,) int64 labels of a split file; blank lines are skipped.

    Lines end at a line feed, a carriage return and line feed, or a lone carriage return (Python's universal
    newlines), and no other character, so line numbers are an editor's; a UTF-8 byte-order mark is ignored.
    A path may contain spaces, the
    label is the last field: ASCII digits. With ``inside_root``, a path that
    would leave ``data.root`` (:func:`leaves_root`) is refused: a list from
    elsewhere must not make longtail read, or report on, any other file.

    Raises:
        DataError: naming the file, the line number and the line of anything that is not ``path label``.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: split file not found") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read split file ({error.__class__.__name__})") from None
    data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")  # universal newlines, as text mode reads them
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as failure:  # Latin-1 or another code page: say where, as for any other bad line
        line = data[: failure.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text; expected a split file in UTF-8 (re-save it so)") from None
    paths: list[str] = []
    labels: list[int] = []
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.strip()
        if not line:
            continue
        where = f"{path}:{number}"
        parts = line.rsplit(None, 1)  # the path may contain spaces, the label cannot
        if len(parts) != 2:
            raise DataError(f"{where}: expected 'relative/path label', got {_shown(line)}")
        if not _LABEL.fullmatch(parts[1]):
            raise DataError(f"{where}: label {_shown(parts[1])} is not an integer in {_shown(line)}")
        if len(parts[1].lstrip("-").lstrip("0")) > len(str(MAX_LABEL)):  # before int(): 4,300 digits raise
            raise DataError(f"{where}: label {_shown(parts[1], 40)}, expected a class index 0 to 2^31 - 1")
        label = int(parts[1])
        if label < 0:
            raise DataError(f"{where}: label {label}, expected a class index >= 0 in {_shown(line)}")
        if label > MAX_LABEL:
            raise DataError(f"{where}: label {label}, expected a class index below 2^31 in {_shown(line)}")
        outside = leaves_root(parts[0]) if inside_root else None
        if outside is not None:
            raise DataError(
                f"{where}: path {_shown(parts[0])} {outside}; list paths are relative to data.root and stay "
                "inside it (a symlink inside data.root may point elsewhere)"
            )
        paths.append(parts[0])
        labels.append(label)
    if not paths:
        raise DataError(f"{path}: split file has no entries")
    return paths, np.asarray(labels, dtype=np.int64)


def resolve_list(key: str, value: str | None, root: Path | None) -> Path:
    """The split file of ``data.filelist.<key>``: as given (absolute or from the current directory), else in
    ``root``."""
    if value is None:
        raise DataError(f"data.filelist.{key} is not set: the filelist reader needs it (a 'relative/path label' file)")
    given = Path(value)
    if given.is_file() or given.is_absolute() or root is None:
        return given
    in_root = root / given
    if in_root.is_file():
        return in_root
    raise DataError(
        f"data.filelist.{key}={value!r}: split file not found (looked in the current directory and in {root})"
    )


def _normal_path(path: str) -> str:
    """``path`` without ``.``, ``..``, doubled or trailing slashes; normalised only where it has any (fast)."""
    return posixpath.normpath(path) if "/." in path or "//" in path or path[:1] == "." or path[-1:] == "/" else path


def repeated_images(read: dict[str, tuple[list[str], np.ndarray]], lists: dict[str, Path]) -> list[str]:
    """One warning per split file that lists an image more than once, and per pair of splits that share one.

    Paths are compared as written, normalised (``./a.jpg`` is ``a.jpg``). A repeated image is used as listed
    (each listing counts in its class's size, is drawn and is scored), which may be meant (oversampling by
    hand) or not; an image in two splits is test data seen in training (or validation choosing on training
    images, or on test images): the scores no longer measure what they say. Neither is refused: the warning
    says how many and names the first.
    """
    normal = {key: list(map(_normal_path, paths)) for key, (paths, _) in read.items()}
    distinct = {key: set(paths) for key, paths in normal.items()}
    warnings = []
    for key, paths in normal.items():
        if len(distinct[key]) == len(paths):
            continue
        labels, first, repeats, relabelled, example = read[key][1], {}, 0, 0, ""
        for i, image in enumerate(paths):
            j = first.setdefault(image, i)
            if j != i:
                repeats += 1
                relabelled += int(labels[i] != labels[j])
                example = example or image
        if repeats:
            entries = "1 entry repeats" if repeats == 1 else f"{repeats:,} entries repeat"
            other = f", {relabelled:,} with another label" if relabelled else ""
            warnings.append(
                f"{lists[key]}: {entries} an image listed before{other} (first: {example!r}); "
                "each entry counts as one image (class sizes, training, scores)"
            )
    for a, b in DISJOINT:
        if a in normal and b in normal:
            shared = distinct[a] & distinct[b]
            if shared:
                example = next(image for image in normal[b] if image in shared)
                warnings.append(
                    f"{lists[b]}: {len(shared):,} image(s) also listed in {lists[a]} (first: {example!r}); the "
                    f"{b.removesuffix('_list')} split should share none with the {a.removesuffix('_list')} split"
                )
    return warnings


def class_names_from_paths(paths: list[str], labels: np.ndarray, num_classes: int) -> list[str]:
    """Class names from the images' folders (``train/n01440764/x.JPEG`` -> ``n01440764``), if they are unique.

    Falls back to the class indices as strings when a class's first image has
    no folder or two classes would share a name.
    """
    first = np.full(num_classes, -1, dtype=np.int64)
    order = np.arange(len(labels))[::-1]
    first[labels[order]] = order  # later writes win: the first occurrence of each class
    names = [Path(paths[i]).parent.name for i in first]
    if any(not n for n in names) or len(set(names)) != num_classes:
        return [str(c) for c in range(num_classes)]
    return names


def _check_root(root: Path, first: str | None, list_path: Path) -> None:
    """A wrong ``data.root`` fails here, with the path that was tried, before every image is checked."""
    if not root.is_dir():
        raise DataError(f"data.root={str(root)!r}: directory not found")
    if first is not None and not (root / first).is_file():
        raise DataError(
            f"{root / first}: not found (first image of {list_path}); "
            "data.root must be the directory the list's paths are relative to"
        )


def build_filelist(cfg: DataConfig) -> DatasetSplits:
    """The dataset described by the split files ``data.filelist.train_list``, ``val_list``, ``test_list``."""
    if cfg.root is None:
        raise DataError("data.root is not set: the filelist reader needs the directory the list paths start from")
    root, own = Path(cfg.root), cfg.filelist
    lists = {key: resolve_list(key, getattr(own, key), root) for key in ("train_list", "test_list")}
    if own.val_list is not None:
        lists["val_list"] = resolve_list("val_list", own.val_list, root)
    read = {key: read_split_lines(path, inside_root=True) for key, path in lists.items()}
    for warning in repeated_images(read, lists):
        log.warning(warning)
    train_paths, train_labels = read["train_list"]
    # With data.skip_bad the first image may be one of the bad ones; the image check then names a wrong root.
    _check_root(root, None if cfg.skip_bad else train_paths[0], lists["train_list"])
    missing = first_missing_class(train_labels)
    if missing is not None:
        raise DataError(
            f"{lists['train_list']}: class {missing} has no training image "
            f"(labels run up to {int(train_labels.max())}); "
            "expected labels 0 to C-1 with every class present in the training split"
        )
    num_classes = int(train_labels.max()) + 1
    splits: dict[str, Split] = {}
    for key, (paths, labels) in read.items():
        splits[key] = (PathTable(paths), labels)
        if key != "train_list":
            check_labels(splits[key], num_classes, str(lists[key]))
    return file_splits(
        f"filelist:{lists['train_list'].stem}",
        cfg,
        root=root,
        train=splits["train_list"],
        val=splits.get("val_list"),
        test=splits["test_list"],
        num_classes=num_classes,
        class_names=class_names_from_paths(train_paths, train_labels, num_classes),
        info={"root": str(root), **{key: str(path) for key, path in lists.items()}},
    )


@dataclass
class FilelistConfig:
    """data.filelist: the split files, one ``relative/path label`` per line."""

    train_list: str | None = option(None, "training split file (required)")
    val_list: str | None = option(None, "validation split file; null: held out of the training images")
    test_list: str | None = option(None, "test split file (required)")


SPEC = register_dataset(
    DatasetSpec(
        name="filelist",
        label="split files",
        summary="image files listed in split files, one 'relative/path label' per line (the ImageNet-LT, "
        "Places-LT and iNaturalist 2018 format), paths relative to data.root",
        create=build_filelist,
        config=FilelistConfig,
        locations=("train_list", "val_list", "test_list"),
        image_files=True,
        renamed={"train_list": "train_list", "val_list": "val_list", "test_list": "test_list"},
    )
)
