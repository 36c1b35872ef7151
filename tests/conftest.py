"""Shared fixtures: generated Fashion-MNIST-format data and the real files when present."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from longtail.data import write_idx
from longtail.data.fashion_mnist import DEFAULT_ROOT, FILES

NUM_CLASSES = 10


def synthetic_images(labels: np.ndarray, seed: int) -> np.ndarray:
    """28x28 uint8 images a small network tells apart, also after a horizontal flip.

    Class c lights a band at height ``c // 2``: a centred bar for even c, two
    side blocks for odd c (both left-right symmetric); plus noise and jitter.
    """
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, size=(len(labels), 28, 28)).astype(np.int64)
    for i, label in enumerate(labels):
        top = 2 + 5 * (int(label) // 2) + rng.integers(-1, 2)
        if label % 2 == 0:
            images[i, top : top + 4, 8:20] += 180
        else:
            images[i, top : top + 4, 2:8] += 180
            images[i, top : top + 4, 20:26] += 180
    return np.clip(images, 0, 255).astype(np.uint8)


def write_fashion_mnist_like(root: Path, train_per_class: int = 130, test_per_class: int = 20, seed: int = 0) -> Path:
    """Write the four IDX .gz files of a small 10-class dataset in the Fashion-MNIST layout."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        labels = rng.permutation(np.repeat(np.arange(NUM_CLASSES), per_class)).astype(np.uint8)
        write_idx(root / FILES[f"x_{split}"], synthetic_images(labels, seed + len(split)))
        write_idx(root / FILES[f"y_{split}"], labels)
    return root


@pytest.fixture(scope="session")
def tiny_fmnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with generated Fashion-MNIST-format IDX files (1300 train, 200 test images)."""
    return write_fashion_mnist_like(tmp_path_factory.mktemp("fmnist"))


# wb fitted once, at its configured point, instead of over its weight-decay x radius grid.
WB_NO_GRID = ("decouple.wb.weight_decay_grid=[]", "decouple.wb.thresh_grid=[]")


# Overrides for a run on ``tiny_fmnist`` that takes a few seconds.
def tiny_overrides(root: Path) -> list[str]:
    return [
        f"data.root={root}",
        "data.n_max=100",
        "data.imbalance_factor=10",
        "data.val_per_class=5",
        "train.epochs=4",
        "train.batch_size=32",
        "decouple.crt.epochs=3",
        "decouple.crt.batch_size=64",
        "decouple.lws.epochs=2",
        "decouple.lws.batch_size=64",
        "decouple.wb.batch_size=64",  # batch auto would be 32 on these ~400 images: twice WB's steps, 4x LAS's
        "decouple.las.batch_size=128",
        "eval.many=50",
        "eval.few=20",
        "eval.batch_size=256",
    ]


@pytest.fixture(scope="session")
def real_fmnist() -> Path:
    """Debian's Fashion-MNIST directory; the test is skipped when it is absent."""
    if not all((DEFAULT_ROOT / name).is_file() for name in FILES.values()):
        pytest.skip(f"Fashion-MNIST not in {DEFAULT_ROOT} (apt-get install dataset-fashion-mnist)")
    return DEFAULT_ROOT


# The real ImageNet-LT / Places-LT / iNaturalist split files: ../shared/data/splits beside the
# repository, or wherever LONGTAIL_SPLITS_DIR points (they are read, never copied into the repository).
SPLITS_DIR = Path(os.environ.get("LONGTAIL_SPLITS_DIR", Path(__file__).resolve().parents[2] / "shared/data/splits"))


def real_split(name: str) -> Path:
    """The real split file ``name``; the test is skipped, saying where it was looked for, when it is absent."""
    path = SPLITS_DIR / name
    if not path.is_file():
        pytest.skip(f"{path} absent: the real split files live in ../shared/data/splits/ (or LONGTAIL_SPLITS_DIR)")
    return path


@pytest.fixture(scope="session")
def tiny_run(tiny_fmnist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny finished stage-1 run on ``tiny_fmnist``, shared by every module that only reads it.

    A test that changes a run works on a copy (:func:`copy_run`).
    """
    from longtail.cli import main

    run = tmp_path_factory.mktemp("shared") / "tiny_run"
    assert main(["train", *tiny_overrides(tiny_fmnist), "--out", str(run), "--no-progress"]) == 0
    return run


@pytest.fixture(scope="session")
def tiny_decoupled_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:func:`tiny_run` after `longtail decouple --method auto` (every method, plus auto), shared read-only."""
    from longtail.cli import main

    run = copy_run(tiny_run, tmp_path_factory.mktemp("shared") / "tiny_decoupled_run")
    assert main(["decouple", str(run), "--method", "auto"]) == 0
    return run


def copy_run(run: Path, to: Path) -> Path:
    """A copy of run directory ``run`` at ``to``, for a test that changes it."""
    import shutil

    shutil.copytree(run, to)
    return to
