"""Datasets of image files decoded item by item: the file-based readers (``filelist``, ``imagefolder``).

Each item is opened with Pillow, transformed (random for stage-1 training,
fixed at test time) and returned as (3, S, S) uint8; normalisation runs per
batch on the training device. Decoding happens where the DataLoader fetches:
in its worker processes when ``data.num_workers`` > 0, otherwise in the main
process, where a batch is decoded by a pool of threads (Pillow releases the GIL
while decoding and resizing), so evaluation and feature extraction are
parallel too.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, get_worker_info

from ..errors import DataError
from .image_transforms import ImageTransform, to_array


class PathTable:
    """Many relative paths in one UTF-8 buffer with offsets.

    A Python list of 400,000 strings is copied page by page into every forked
    DataLoader worker as reference counts change; two NumPy arrays are not.
    """

    def __init__(self, paths: Sequence[str]) -> None:
        encoded = [p.encode("utf-8") for p in paths]
        self._offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=self._offsets[1:])
        self._buffer = np.frombuffer(b"".join(encoded), dtype=np.uint8) if encoded else np.zeros(0, np.uint8)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, index: int) -> str:
        start, end = self._offsets[index], self._offsets[index + 1]
        return self._buffer[start:end].tobytes().decode("utf-8")

    def fingerprint(self) -> str:
        """SHA-256 of the paths in order: equal tables have equal fingerprints."""
        digest = hashlib.sha256(self._offsets.tobytes())
        digest.update(self._buffer.tobytes())
        return digest.hexdigest()

    def take(self, indices: Sequence[int] | np.ndarray) -> PathTable:
        """A new table with the paths at ``indices``, in that order."""
        return PathTable([self[int(i)] for i in indices])


# Pillow formats that decode by running another program: EPS is rendered by Ghostscript, so an "image" from
# elsewhere would run PostScript. Image files are opened with every other format Pillow knows.
EXTERNAL_PROGRAM_FORMATS = frozenset({"EPS"})


@functools.cache
def image_formats() -> tuple[str, ...]:
    """The Pillow formats an image file may be in: all Pillow reads but :data:`EXTERNAL_PROGRAM_FORMATS`."""
    Image.init()
    return tuple(name for name in Image.OPEN if name not in EXTERNAL_PROGRAM_FORMATS)


def open_image(path: str | Path) -> Image.Image:
    """``Image.open(path)`` limited to :func:`image_formats`; an EPS file is "not an image" (UnidentifiedImageError)."""
    return Image.open(path, formats=image_formats())


class ImageReadError(DataError):
    """An image file that cannot be read, named in one line.

    A DataLoader worker's exception reaches the main process re-created from a
    message that holds the worker's whole traceback; this class keeps only its
    own line of it, so the command still reports one line naming the file.
    """

    def __init__(self, message: str) -> None:
        if message.startswith("Caught ") and "Original Traceback" in message:
            last = message.rstrip().splitlines()[-1]  # "longtail.data.image_files.ImageReadError: PATH: why"
            message = last.split(": ", 1)[-1]
        super().__init__(message)


def read_image(path: Path, transform: ImageTransform, rng: np.random.Generator | None) -> np.ndarray:
    """Decode ``path`` and apply ``transform``: (3, S, S) uint8.

    Raises:
        ImageReadError: naming the file when it is missing or not a readable image.
    """
    try:
        with open_image(path) as image:
            return to_array(transform(image, rng))
    except FileNotFoundError:
        raise ImageReadError(f"{path}: image not found") from None
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError, EOFError) as error:
        raise ImageReadError(f"{path}: cannot decode image ({error.__class__.__name__}: {error})") from None


def item_rng(seeds: Sequence[int], epoch: int, batch: Sequence[int], position: int) -> np.random.Generator:
    """The generator of one draw: fixed by the seeds, the epoch, the batch's indices and the position in it.

    The batch's indices (not the worker that fetches it) identify a draw, so
    the augmentation does not depend on the number of workers; and an image
    drawn twice in an epoch (class-balanced sampling repeats tail images) gets
    two different augmentations.
    """
    batch_key = zlib.crc32(np.asarray(batch, dtype=np.int64).tobytes())
    return np.random.default_rng([*seeds, epoch, batch_key, position])


class ImageFileDataset(Dataset):
    """Images in files under ``root`` with their labels; items are (3, S, S) uint8 and an int64 label.

    Args:
        root: directory the relative paths start from.
        paths: relative path of every image.
        labels: (N,) class index per image.
        transform: what each image goes through (random for stage-1 training).
        eval_transform: the test-time transform, used by :meth:`eval_view`.
        seed: seed of the per-item augmentation (``data.seed``; the run's seed joins it in :meth:`set_epoch`).
        threads: decoding threads when fetched in the main process (1: sequential).

    ``__getitems__`` returns a whole batch ((B, 3, S, S) uint8, (B,) int64), as
    the in-memory datasets do. Call :meth:`set_epoch` before each training epoch.
    """

    def __init__(
        self,
        root: str | Path,
        paths: PathTable,
        labels: torch.Tensor | np.ndarray,
        transform: ImageTransform,
        *,
        eval_transform: ImageTransform,
        seed: int = 0,
        threads: int = 1,
    ) -> None:
        labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
        if labels.dim() != 1 or len(labels) != len(paths):
            raise DataError(f"labels: expected shape ({len(paths)},) to match the paths, got {tuple(labels.shape)}")
        self.root = Path(root)
        self.paths = paths
        self.labels = labels
        self.transform = transform
        self.eval_transform = eval_transform
        self.seed = seed
        self.threads = max(1, threads)
        # (epoch, run seed) of the augmentation, in shared memory: persistent DataLoader workers hold
        # their own copy of the dataset but see set_epoch's writes to this tensor.
        self._epoch_state = torch.zeros(2, dtype=torch.int64).share_memory_()

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one item."""
        return (3, self.transform.size, self.transform.size)

    @property
    def per_item_augmentation(self) -> bool:
        """Whether items are augmented here (so the batch transform must only normalise)."""
        return self.transform.random

    def set_epoch(self, epoch: int, seed: int = 0) -> None:
        """Select the epoch, and the run's ``seed``, whose augmentation the next fetches draw (in every worker)."""
        self._epoch_state[0] = epoch
        self._epoch_state[1] = seed

    def eval_view(self) -> ImageFileDataset:
        """The same images with the test-time transform (stage 2 extracts training features this way)."""
        view = copy.copy(self)
        view.transform = self.eval_transform
        return view

    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageFileDataset:
        """The items at ``indices``, as a new dataset with the same transforms."""
        index = np.asarray(indices, dtype=np.int64)
        part = copy.copy(self)
        part._epoch_state = self._epoch_state.clone().share_memory_()  # its own epoch, not its parent's
        part.paths = self.paths.take(index)
        part.labels = self.labels[torch.from_numpy(index)]
        return part

    def path(self, index: int) -> Path:
        """Full path of item ``index``."""
        return self.root / self.paths[index]

    def _load(self, batch: Sequence[int], position: int) -> np.ndarray:
        if self.transform.random:
            epoch, run_seed = self._epoch_state.tolist()
            rng = item_rng((self.seed, run_seed), epoch, batch, position)
        else:
            rng = None
        return read_image(self.path(int(batch[position])), self.transform, rng)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self.__getitems__([index])
        return images[0], labels[0]

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        indices = [int(i) for i in indices]
        size = self.transform.size
        images = np.empty((len(indices), 3, size, size), dtype=np.uint8)  # filled without torch: see to_array
        positions = range(len(indices))
        # Threads only in the main process: DataLoader workers already run in parallel.
        if self.threads > 1 and len(indices) > 1 and get_worker_info() is None:
            with ThreadPoolExecutor(min(self.threads, len(indices))) as pool:
                decoded = pool.map(lambda p: self._load(indices, p), positions)
                for position, image in zip(positions, decoded, strict=True):
                    images[position] = image
        else:
            for position in positions:
                images[position] = self._load(indices, position)
        return torch.from_numpy(images), self.labels[torch.as_tensor(indices, dtype=torch.int64)]
