"""A directory of class folders (``data.name=imagefolder``): ``root/train/<class>/*``, ``root/val``, ``root/test``.

Classes are the folder names under ``train/``, sorted (so class 0 is the first
name in alphabetical order), and kept as the class names of reports. Images
may sit in sub-folders of a class folder (symlinked ones included; a link that
loops, or leads to a folder the split reads already, is refused); files are taken
in sorted order and recognised by extension. ``val/`` is optional (without it the
validation split is held out of the training images, at most a fifth of a class);
``test/`` is required. Every class folder of ``val/`` and ``test/`` must exist in ``train/``.
Folder and image names must be valid UTF-8: another name is refused, naming
its bytes (files that are not images by extension are ignored, whatever their name).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..config import DataConfig
from ..errors import DataError
from .dataset import DatasetSplits
from .file_splits import Split, file_splits
from .image_files import PathTable
from .registry import DatasetSpec, register_dataset

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def require_utf8(folder: Path | str, name: str) -> str:
    """``name`` (an entry of ``folder``) if it is valid UTF-8, else a DataError naming its bytes.

    Image paths are kept as UTF-8 (:class:`~.image_files.PathTable`), and class
    names end up in results.json and the report, so a name the file system
    holds as other bytes cannot be used. It is refused rather than skipped:
    skipping would silently train on fewer images or classes than the folder holds.
    """
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsdecode(folder).encode("utf-8", "backslashreplace").decode("utf-8")
        raise DataError(
            f"{shown}: the name {os.fsencode(name)!r} is not valid UTF-8; rename it (longtail reads UTF-8 names only)"
        ) from None
    return name


def _is_folder(entry: os.DirEntry) -> bool:
    """Whether ``entry`` is a folder, or a symlink to one.

    Raises:
        DataError: naming the entry when the answer cannot be had (a symlink loop):
            a class it might hold is not skipped silently.
    """
    try:
        return entry.is_dir()
    except OSError as error:  # is_dir() answers False for a dangling symlink, raises for a loop (ELOOP)
        shown = os.fsdecode(entry.path).encode("utf-8", "backslashreplace").decode("utf-8")
        raise DataError(
            f"{shown}: cannot be followed ({error.strerror}); expected a class folder: repair or remove it"
        ) from None


def class_folders(split_dir: Path) -> list[str]:
    """Names of the class folders in ``split_dir``, sorted; hidden folders are skipped."""
    with os.scandir(split_dir) as entries:
        names = [e.name for e in entries if not e.name.startswith(".") and _is_folder(e)]
    return sorted(require_utf8(split_dir, name) for name in names)


def _walk(class_dir: Path, seen: dict[tuple[int, int], str]) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk(class_dir)``, into symlinked sub-folders too, as into a symlinked class folder.

    ``seen``: the folders read so far in the split, by device and inode, and the first path each was read by.

    Raises:
        DataError: naming a folder that cannot be listed, or one reached a second time in the split (a symbolic
            link that loops, or leads to a folder read already, of this class or another): its images would be
            skipped, or counted twice, perhaps under two labels.
    """

    def unreadable(error: OSError) -> None:
        shown = os.fsdecode(error.filename or class_dir).encode("utf-8", "backslashreplace").decode("utf-8")
        raise DataError(f"{shown}: cannot be listed ({error.strerror}); expected a folder of images")

    for folder, subdirs, files in os.walk(class_dir, onerror=unreadable, followlinks=True):
        status = os.stat(folder)
        first = seen.setdefault((status.st_dev, status.st_ino), folder)
        if first != folder:
            shown = folder.encode("utf-8", "backslashreplace").decode("utf-8")
            raise DataError(
                f"{shown}: the folder {first} again (a symbolic link loops or repeats it); "
                "expected each folder of images once"
            )
        yield folder, subdirs, files


def scan_split(root: Path, split: str, classes: list[str]) -> Split:
    """Relative paths and labels of every image under ``root/split/<class>/``, in sorted order."""
    split_dir = root / split
    paths: list[str] = []
    labels: list[int] = []
    index = {name: i for i, name in enumerate(classes)}
    seen: dict[tuple[int, int], str] = {}
    for name in class_folders(split_dir):
        if name not in index:
            raise DataError(f"{split_dir / name}: class folder not in {root / 'train'} (classes come from train/)")
        for folder, subdirs, files in _walk(split_dir / name, seen):
            subdirs[:] = sorted(require_utf8(folder, d) for d in subdirs if not d.startswith("."))
            rel = Path(folder).relative_to(root)
            for file in sorted(files):
                if file.lower().endswith(IMAGE_EXTENSIONS) and not file.startswith("."):
                    paths.append(str(rel / require_utf8(folder, file)))
                    labels.append(index[name])
    if not paths:
        raise DataError(f"{split_dir}: no images found (expected {split}/<class>/<image> files)")
    return PathTable(paths), np.asarray(labels, dtype=np.int64)


def build_imagefolder(cfg: DataConfig) -> DatasetSplits:
    """The dataset in ``data.root``'s ``train/``, ``val/`` (optional) and ``test/`` class folders."""
    if cfg.root is None:
        raise DataError("data.root is not set: the imagefolder reader needs the directory holding train/ and test/")
    root = Path(cfg.root)
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise DataError(f"{root / split}: folder not found; imagefolder expects {root}/train/<class>/ and test/")
    classes = class_folders(root / "train")
    if not classes:
        raise DataError(f"{root / 'train'}: no class folders found")
    train = scan_split(root, "train", classes)
    val = scan_split(root, "val", classes) if (root / "val").is_dir() else None
    return file_splits(
        f"imagefolder:{root.name}",
        cfg,
        root=root,
        train=train,
        val=val,
        test=scan_split(root, "test", classes),
        num_classes=len(classes),
        class_names=classes,
        info={"root": str(root)},
    )


SPEC = register_dataset(
    DatasetSpec(
        name="imagefolder",
        create=build_imagefolder,
        label="image folders",
        summary="image files in data.root's train/, val/ (optional) and test/, one folder per class",
        image_files=True,
    )
)
