"""Throughput of the image pipeline of the file-based readers: decode + transform, images per second.

Generates JPEGs of photo-like content (smooth colour fields with texture) at the
typical sizes of ImageNet (500 x 375) and iNaturalist (800 x 600), then reads
them through :class:`longtail.data.ImageFileDataset` and a DataLoader, as
stage 1 (training transform: RandomResizedCrop 224, flip, ColorJitter) and
evaluation (resize 256, centre crop 224) do, with DataLoader worker processes
or with the dataset's decoding threads in the main process. Prints a Markdown
table and writes it into the "Image decoding and augmentation" section of
docs/performance.md (other sections are kept).

    .venv/bin/python benchmarks/image_pipeline.py [--images 512] [--doc docs/performance.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL
import torch
from _doc import write_section
from PIL import Image
from torch.utils.data import DataLoader

from longtail.data import CenterCrop, ImageFileDataset, PathTable, RandomResizedCrop, keep_batch
from longtail.data.image_transforms import ImageTransform

SECTION = "## Image decoding and augmentation"


def photo_like(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """A smooth random colour field plus fine texture: compresses and decodes like a photograph."""
    coarse = rng.integers(0, 256, size=(height // 32 + 1, width // 32 + 1, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), dtype=np.int16)
    texture = rng.integers(-12, 13, size=(height, width, 3), dtype=np.int16)
    return Image.fromarray(np.clip(smooth + texture, 0, 255).astype(np.uint8))


def write_jpegs(folder: Path, count: int, size: tuple[int, int], seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    names = []
    for i in range(count):
        name = f"{size[0]}x{size[1]}_{i:04d}.jpg"
        photo_like(*size, rng).save(folder / name, quality=90)
        names.append(name)
    return names


@dataclass(frozen=True)
class FullDecode:
    """``transform`` on a JPEG decoded at full size first (what reduced-scale decoding saves is measured against it)."""

    transform: ImageTransform

    @property
    def size(self) -> int:
        return self.transform.size

    @property
    def random(self) -> bool:
        return self.transform.random

    def __call__(self, image: Image.Image, rng: np.random.Generator | None) -> Image.Image:
        image.load()  # a loaded image can no longer be decoded at reduced scale
        return self.transform(image, rng)


def images_per_second(dataset: ImageFileDataset, *, workers: int, batch_size: int, repeats: int) -> float:
    """Best of ``repeats`` passes over the dataset (worker start-up included, as in a real epoch)."""
    best = 0.0
    for epoch in range(repeats):
        dataset.set_epoch(epoch)
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=keep_batch)
        start = time.perf_counter()
        seen = sum(len(labels) for _, labels in loader)
        best = max(best, seen / (time.perf_counter() - start))
    return best


def run(count: int, repeats: int, batch_size: int) -> list[tuple[str, str, str, float]]:
    rows = []
    train = RandomResizedCrop(224, (0.08, 1.0), flip=True, jitter=0.4)
    test = CenterCrop(224, 256)
    with tempfile.TemporaryDirectory() as tmp:
        for size in ((500, 375), (800, 600)):
            names = write_jpegs(Path(tmp), count, size)
            labels = np.zeros(len(names), dtype=np.int64)
            transforms = (
                ("train: RandomResizedCrop 224 + flip + ColorJitter", train),
                ("test: resize 256 + centre crop 224", test),
            )
            for label, transform in transforms:
                for how, workers, threads, full in (
                    ("1 process", 0, 1, False),
                    ("1 process, full-size decoding", 0, 1, True),
                    ("main process, 2 threads", 0, 2, False),
                    ("2 DataLoader workers", 2, 1, False),
                ):
                    used = FullDecode(transform) if full else transform
                    data = ImageFileDataset(
                        tmp, PathTable(names), labels, used, eval_transform=test, seed=0, threads=threads
                    )
                    rate = images_per_second(data, workers=workers, batch_size=batch_size, repeats=repeats)
                    rows.append((f"{size[0]} x {size[1]}", label, how, rate))
                    print(f"{rows[-1][0]:>9}  {label:<50}  {how:<24}  {rate:7.0f} images/s", flush=True)
    return rows


def markdown(rows: list[tuple[str, str, str, float]], count: int, load: float) -> str:
    lines = [
        SECTION,
        "",
        "Decode + transform throughput of the file-based readers (`filelist`, `imagefolder`): Pillow",
        "decodes each JPEG and applies the per-image transform, the DataLoader collates uint8",
        "(3, 224, 224) batches; normalisation is not included (it runs per batch on the training",
        "device). Measured by `benchmarks/image_pipeline.py` on generated photo-like JPEGs (quality 90)",
        f"at ImageNet's (500 x 375) and iNaturalist's (800 x 600) typical sizes, {count} images per pass,",
        f"best of 3 passes (worker start-up included); {os.cpu_count()} CPU cores, load average {load:.1f}",
        f"when it started; Python {platform.python_version()}, Pillow {PIL.__version__}, torch {torch.__version__}.",
        "",
        "| image size | transform | decoding in | images/s |",
        "|---|---|---|---:|",
    ]
    lines += [f"| {size} | {transform} | {how} | {rate:,.0f} |" for size, transform, how, rate in rows]
    lines += [
        "",
        "- Where decoding runs: stage 1 in `data.num_workers` DataLoader processes; with 0 workers (the",
        "  default), and always for evaluation and feature extraction, in the main process, a batch",
        "  at a time, with `data.decode_threads` threads (0: one per core).",
        '- "full-size decoding" decodes every JPEG whole before cropping; the other rows let libjpeg',
        "  decode at 1/2, 1/4 or 1/8 scale when the region kept is still at least 224 px at that scale.",
        "- Items are copied into the batch with NumPy, not torch: a torch copy of one image may be split",
        "  over OpenMP threads, which on a busy 2-core machine made decoding about five times slower",
        "  (measured while writing this pipeline: 121 against 627 images/s for the test transform).",
        "- The load average says how busy the machine was: rows that run two decoders in parallel",
        "  can only gain what the other core had free. Re-run the script on an idle machine to see",
        "  the scaling.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=512, help="JPEGs per size (default: 512)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--doc", type=Path, default=Path("docs/performance.md"), help="where to write the table")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    rows = run(args.images, args.repeats, args.batch_size)
    write_section(args.doc, SECTION, markdown(rows, args.images, load))
    print(f"\nwritten to {args.doc}")


if __name__ == "__main__":
    main()
