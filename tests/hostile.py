"""Helpers of the hostile-input tests: a tiny run, pickles that would run code, one-line failures.

A planted pickle's ``__reduce__`` calls ``os.mkdir(marker)``: unpickled by
anything that executes pickles, it creates the directory ``marker``; the tests
assert that the marker never appears.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import zlib
from pathlib import Path

import pytest
import torch

from longtail.cli import main

# The smallest stage-1 run on the ``tiny_fmnist`` data: 20 images in the largest class, one epoch.
TINY = [
    "data.n_max=20",
    "data.imbalance_factor=10",
    "data.val_per_class=2",
    "train.epochs=1",
    "train.batch_size=32",
    "decouple.crt.epochs=1",
    "decouple.crt.batch_size=64",
    "decouple.lws.epochs=1",
    "eval.many=10",
    "eval.few=5",
    "eval.batch_size=256",
]


def train_tiny_run(root: Path, out: Path) -> Path:
    """Train the tiny run on the data in ``root`` into ``out`` (about a second on one core)."""
    assert main(["train", f"data.root={root}", *TINY, "--out", str(out), "--no-progress"]) == 0
    return out


class Plant:
    """Unpickling this creates the directory ``marker`` (``os.mkdir``): code a file would run if trusted."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (os.mkdir, (self.marker,))


def pickled_plant(marker: Path) -> bytes:
    """A bare pickle of a :class:`Plant`."""
    return pickle.dumps(Plant(marker))


def torch_saved_plant(marker: Path, wrap: str | None = "model") -> bytes:
    """What ``torch.save`` writes for a :class:`Plant` (under ``wrap`` in a dict): a zip holding the pickle."""
    buffer = io.BytesIO()
    torch.save({wrap: Plant(marker)} if wrap else Plant(marker), buffer)
    return buffer.getvalue()


def one_error_line(args: list[str], capsys: pytest.CaptureFixture, *expected: str) -> str:
    """Run ``longtail ARGS``; assert exit status 1 and a single stderr line holding every ``expected`` text."""
    assert main(args) == 1
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("longtail: error:"), err
    for text in expected:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    return lines[0]


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` grey pixels and holds none (a few dozen bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IEND", b"")
    )
