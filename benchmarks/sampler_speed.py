"""Time one class-balanced epoch at iNaturalist 2018 scale: ours against a per-sample Python round-robin.

The reference is the official ``ClassAwareSampler`` (Kang et al.), re-written
here with the same structure: cycle iterators over a reshuffled class list and
over each class's reshuffled images, and a generator yielding one index at a
time, ``num_samples_cls`` per class visit. Both sides build and iterate a full epoch of
``len(labels)`` indices. Prints a table and writes it to
``docs/results/sampler_speed.md``.

    python benchmarks/sampler_speed.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from longtail.fs.atomic import write_text_atomic
from longtail.samplers import make_sampler

OUT = Path(__file__).resolve().parent.parent / "docs" / "results" / "sampler_speed.md"


def inaturalist_like_counts(
    classes: int = 8142, images: int = 437_513, n_max: int = 1000, n_min: int = 2
) -> np.ndarray:
    """Class sizes shaped like iNaturalist 2018: ``n_max * (1 + i / s)^-2`` floored at ``n_min``.

    The scale ``s`` is found by bisection so the total is within a few images of ``images``.
    """
    rank = np.arange(classes, dtype=np.float64)
    low, high = 1.0, float(classes)
    for _ in range(60):
        scale = (low + high) / 2
        counts = np.maximum(np.floor(n_max * (1 + rank / scale) ** -2), n_min).astype(np.int64)
        low, high = (low, scale) if counts.sum() > images else (scale, high)
    return counts


def inaturalist_like_labels(seed: int = 0) -> np.ndarray:
    """Shuffled labels with :func:`inaturalist_like_counts` images per class."""
    counts = inaturalist_like_counts()
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(len(counts)), counts))


class _RandomCycle:
    """Endless iterator over a list, reshuffled at every pass: the official ``RandomCycleIter``'s algorithm."""

    def __init__(self, items: list[int], rng: random.Random) -> None:
        self.items, self.rng = list(items), rng
        self.position = len(self.items) - 1

    def __iter__(self) -> _RandomCycle:
        return self

    def __next__(self) -> int:
        self.position += 1
        if self.position == len(self.items):
            self.position = 0
            self.rng.shuffle(self.items)
        return self.items[self.position]


def _blocked_round_robin(classes: _RandomCycle, images: list[_RandomCycle], n: int, k: int):
    """Yield ``n`` indices one at a time, ``k`` per class visit: the official generator's structure."""
    drawn, in_block = 0, 0
    block: tuple[int, ...] = ()
    while drawn < n:
        if in_block >= k:
            in_block = 0
        if in_block == 0:
            block = next(zip(*[images[next(classes)]] * k, strict=False))  # k draws from one cycle
        yield block[in_block]
        drawn += 1
        in_block += 1


def python_round_robin_epoch(by_class: list[list[int]], num_samples: int, k: int, seed: int) -> None:
    """Iterate one epoch of the official blocked round-robin, one Python generator step per index."""
    rng = random.Random(seed)
    classes = _RandomCycle(list(range(len(by_class))), rng)
    images = [_RandomCycle(members, rng) for members in by_class]
    for _ in _blocked_round_robin(classes, images, num_samples, k):
        pass


def best_of(repeats: int, run) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    labels = inaturalist_like_labels()
    by_class = [np.flatnonzero(labels == c).tolist() for c in range(int(labels.max()) + 1)]
    rows = []
    reference = best_of(args.repeats, lambda: python_round_robin_epoch(by_class, len(labels), 4, 0))
    rows.append(("per-sample Python round-robin (official structure)", reference))
    for strategy in ("class_aware", "class", "sqrt", "progressive", "instance"):
        sampler = make_sampler(labels, strategy, seed=0, epochs=90)

        def epoch(sampler=sampler) -> None:
            sampler.set_epoch(1)
            for _ in sampler:
                pass

        rows.append((f"longtail `{strategy}`", best_of(args.repeats, epoch)))
    lines = [
        f"One epoch (`set_epoch` + iterating all {len(labels):,} indices) over {len(by_class):,} classes, "
        f"best of {args.repeats}; {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"Python {platform.python_version()}, torch {torch.__version__}.",
        "",
        "| sampler | seconds per epoch | speed-up over the Python round-robin |",
        "|---|---:|---:|",
    ]
    lines += [f"| {name} | {seconds:.3f} | {reference / seconds:.1f}× |" for name, seconds in rows]
    table = "\n".join(lines)
    print(table)
    command = "python benchmarks/sampler_speed.py"
    text = f"# Sampler speed at iNaturalist 2018 scale\n\nGenerated by `{command}`.\n\n{table}\n"
    write_text_atomic(OUT, text)
    print(f"\nwritten to {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
