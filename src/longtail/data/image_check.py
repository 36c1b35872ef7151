"""Every image file of a dataset opened and decoded once, when the dataset is built (``data.skip_bad``).

Why up front: a missing, corrupt or truncated image that a DataLoader meets in
epoch 7 stops a run that has already written checkpoints. Met while the dataset
is built, it stops the command before anything is written, naming the file; or,
with ``data.skip_bad=true``, it is dropped from its split and reported.

What is checked: the file exists, Pillow identifies it, and it decodes to its
end. JPEGs are decoded in draft mode (1/8 scale): libjpeg still reads every byte
of the compressed stream, so a truncated or damaged file fails, but skips most
of the pixel work (about 2 ms for a 500 x 375 photograph on one core instead of 3).

Cost, and the cache: the check runs on ``data.decode_threads`` threads. For a
split of at least :data:`CACHE_MIN_IMAGES` images the verdict is kept in a small
JSON file in the user's cache directory (``$LONGTAIL_CACHE_DIR``, else
``$XDG_CACHE_HOME/longtail``, else ``~/.cache/longtail``), keyed by the
directory and the list of paths and valid while no file's size or modification
time changes: the next build (``decouple``, ``eval``, the next run on the same
data) only ``stat``s the files. Small splits, such as the tests', are checked
afresh every time and write nothing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError, LongtailError
from ..fs.atomic import write_json_atomic, write_text_atomic
from ..safe_text import read_json_file
from .image_files import PathTable, open_image

log = logging.getLogger(__name__)

# Splits at least this large keep their verdict in the cache (smaller ones are checked in well under a second).
CACHE_MIN_IMAGES = 2000
CACHE_VERSION = 1
MAX_CACHE_BYTES = 256 << 20  # a verdict lists the bad images only: far less for any real folder
# Skipped images named in the log line and in results.json; skipped_images.txt lists all of them.
SHOWN = 5
RECORDED = 20
SKIPPED_FILE = "skipped_images.txt"

Problem = tuple[int, str]  # index into the split, what is wrong with that image


def image_problem(path: Path) -> str | None:
    """What is wrong with the image file ``path`` (e.g. ``"not found"``), or None when it decodes."""
    try:
        if not path.is_file():
            if path.is_symlink() and not path.exists():  # else "not found" for a file that is there, as a link
                return "a symbolic link to nothing (its target is missing, or the links loop)"
            return "not found" if not path.exists() else "not a file"
        if path.stat().st_size == 0:
            return "empty file"
        with open_image(path) as image:
            image.draft(None, (1, 1))  # JPEG: decode at 1/8 scale, still reading the whole stream
            image.load()
    except UnidentifiedImageError:
        return "not an image Pillow can read"
    except Image.DecompressionBombError as error:
        return f"too large ({error})"
    except PermissionError as error:
        return f"unreadable ({error.__class__.__name__}: {error.strerror})"
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        kind = "truncated" if "truncated" in str(error).lower() else "corrupt"
        return f"{kind} ({error.__class__.__name__}: {error})"
    return None


def _map(function: Callable[[int], Any], count: int, threads: int) -> list[Any]:
    """``[function(i) for i in range(count)]``, on ``threads`` threads (Pillow and stat release the GIL)."""
    if threads <= 1 or count < 2:
        return [function(i) for i in range(count)]
    with ThreadPoolExecutor(min(threads, count)) as pool:
        return list(pool.map(function, range(count)))


def cache_dir() -> Path:
    """Where verdicts of large splits are kept: ``$LONGTAIL_CACHE_DIR``, ``$XDG_CACHE_HOME/longtail``, ``~/.cache``."""
    if os.environ.get("LONGTAIL_CACHE_DIR"):
        return Path(os.environ["LONGTAIL_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "longtail"


def stat_signature(root: Path, paths: PathTable, threads: int) -> str:
    """SHA-256 of every file's (size, modification time); a missing file counts as (-1, -1)."""

    def stat(i: int) -> tuple[int, int]:
        try:
            info = os.stat(root / paths[i])
        except OSError:
            return (-1, -1)
        return (info.st_size, info.st_mtime_ns)

    stats = np.asarray(_map(stat, len(paths), threads), dtype=np.int64).reshape(-1, 2)
    return hashlib.sha256(stats.tobytes()).hexdigest()


def _cache_file(root: Path, paths: PathTable) -> Path:
    key = hashlib.sha256(str(root.resolve()).encode() + b"\0" + paths.fingerprint().encode()).hexdigest()
    return cache_dir() / "image-checks" / f"{key[:32]}.json"


class _CacheRefused(LongtailError):
    """A cache file that is too large, not UTF-8 or not JSON: ignored, the images are checked again."""


def _read_cache(file: Path, signature: str, count: int) -> list[Problem] | None:
    try:  # longtail's own cache, but in a folder others may write: bounded like any file from elsewhere
        cached = read_json_file(file, "image-check cache", max_bytes=MAX_CACHE_BYTES, error=_CacheRefused)
        if cached["version"] != CACHE_VERSION or cached["signature"] != signature or cached["images"] != count:
            return None
        return [(int(i), str(reason)) for i, reason in cached["problems"]]
    except (OSError, _CacheRefused, ValueError, KeyError, TypeError):  # absent, damaged, another version: check again
        return None


def find_bad_images(root: Path, paths: PathTable, *, threads: int = 1) -> list[Problem]:
    """``(index, problem)`` of every image under ``root`` that is missing or does not decode, in order."""
    use_cache = len(paths) >= CACHE_MIN_IMAGES
    if use_cache:
        signature = stat_signature(root, paths, threads)
        file = _cache_file(root, paths)
        cached = _read_cache(file, signature, len(paths))
        if cached is not None:
            return cached
        log.info("checking %d images under %s (once; the verdict is cached in %s)", len(paths), root, file.parent)
    start = time.perf_counter()
    verdicts = _map(lambda i: image_problem(root / paths[i]), len(paths), threads)
    problems = [(i, reason) for i, reason in enumerate(verdicts) if reason is not None]
    if use_cache:
        log.info("checked %d images in %.1fs: %d unreadable", len(paths), time.perf_counter() - start, len(problems))
        record = {"version": CACHE_VERSION, "root": str(root), "images": len(paths), "signature": signature}
        try:
            write_json_atomic(file, {**record, "problems": [list(p) for p in problems]})
        except OSError:  # a read-only home directory: the check simply runs again next time
            pass
    return problems


def screen_split(
    root: Path,
    paths: PathTable,
    labels: np.ndarray,
    split: str,
    *,
    skip_bad: bool,
    threads: int = 1,
) -> tuple[PathTable, np.ndarray, list[dict[str, str]]]:
    """Check every image of one split; refuse a bad one, or drop it when ``skip_bad``.

    Args:
        root: directory the relative ``paths`` start from.
        paths, labels: the split, (N,) labels.
        split: its name for messages ("train", "val", "test").
        skip_bad: drop unreadable images instead of refusing the split.
        threads: checking threads.

    Returns:
        The paths and labels kept, and ``{"split", "path", "problem"}`` of every image dropped.

    Raises:
        DataError: naming the first unreadable image (without ``skip_bad``), or
            the directory when none of the split's images exists there.
    """
    problems = find_bad_images(root, paths, threads=threads)
    if not problems:
        return paths, labels, []
    first = root / paths[problems[0][0]]
    if len(problems) == len(paths) and all(reason == "not found" for _, reason in problems):
        raise DataError(
            f"{root}: none of the {len(paths)} images of the {split} split is there (first: {first}); "
            "data.root must be the directory the image paths are relative to"
        )
    if not skip_bad:
        raise DataError(
            f"{first}: {problems[0][1]} ({len(problems)} of the {len(paths)} images of the {split} split cannot be "
            "read; repair or remove them, or set data.skip_bad=true to skip them)"
        )
    bad = np.asarray([i for i, _ in problems], dtype=np.int64)
    keep = np.setdiff1d(np.arange(len(paths)), bad)
    skipped = [{"split": split, "path": paths[i], "problem": reason} for i, reason in problems]
    return paths.take(keep), np.asarray(labels)[keep], skipped


def describe_skipped(skipped: Sequence[dict[str, str]]) -> str:
    """One log line: how many images were skipped, per split, and the first few with their problem."""
    counts: dict[str, int] = {}
    for item in skipped:
        counts[item["split"]] = counts.get(item["split"], 0) + 1
    per_split = ", ".join(f"{split} {n}" for split, n in counts.items())
    shown = "; ".join(f"{item['path']} ({item['problem']})" for item in skipped[:SHOWN])
    more = f"; and {len(skipped) - SHOWN} more" if len(skipped) > SHOWN else ""
    return f"data.skip_bad: skipped {len(skipped)} unreadable image(s) ({per_split}): {shown}{more}"


def skipped_images_record(info: dict[str, Any]) -> dict[str, Any] | None:
    """What results.json says of the images ``data.skip_bad`` dropped (``DatasetSplits.info``); None if none.

    ``{"count", "by_split", "first": [{"split", "path", "problem"}, ...], "file": "skipped_images.txt"}``
    """
    skipped = info.get("skipped_images") or []
    if not skipped:
        return None
    by_split: dict[str, int] = {}
    for item in skipped:
        by_split[item["split"]] = by_split.get(item["split"], 0) + 1
    return {"count": len(skipped), "by_split": by_split, "first": list(skipped[:RECORDED]), "file": SKIPPED_FILE}


def write_skipped_images(run_dir: Path, info: dict[str, Any]) -> Path | None:
    """Write ``run_dir/skipped_images.txt`` (``split<TAB>path<TAB>problem`` per line) when images were skipped."""
    skipped = info.get("skipped_images") or []
    if not skipped:
        return None
    path = Path(run_dir) / SKIPPED_FILE
    lines = "".join(f"{item['split']}\t{item['path']}\t{item['problem']}\n" for item in skipped)
    write_text_atomic(path, "# images skipped by data.skip_bad=true: split, path, problem\n" + lines)
    return path
