"""What the stage-2 batch does on small data: each trained head at a fixed number of steps an epoch, on validation.

``decouple.<method>.batch_size=auto`` (:mod:`longtail.engine.head_schedule`)
keeps a head's reference batch (512 for cRT and LWS, WB's 64, LAS's 128)
wherever the data gives at least 64 optimiser steps an epoch with it, and
shrinks the batch below that, never under 32. This script measures what that
choice rests on: on finished runs, every trained head is fitted again at its
reference batch and at the batches that give 32, 64 and 128 steps an epoch
(``N // steps``), everything else at its defaults, and scored on validation
(what chooses) and test (shown, never used).

    PYTHONPATH=src .venv/bin/python benchmarks/head_schedule.py RUN [RUN ...] --work DIR

Each RUN is a finished ``longtail train`` run; it is copied into ``--work``
(its feature cache with it) and only the copy is changed.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _doc import machine_line  # noqa: E402

from longtail.engine.head_schedule import MIN_BATCH, OFFICIAL_BATCH, STEPS_PER_EPOCH, auto_batch_size  # noqa: E402
from longtail.fs.atomic import write_text_atomic  # noqa: E402
from longtail.methods import spec_of  # noqa: E402
from longtail.pipeline import decouple  # noqa: E402
from longtail.pipeline.run_state import load_run  # noqa: E402

DOC = Path(__file__).resolve().parent.parent / "docs" / "results" / "head_schedule.md"
METHODS = ("lws", "crt", "wb", "las")
STEPS = (32, 64, 128)
REFERENCE = "reference"


def reference_batch(method: str) -> int:
    """The head's reference batch: its section's ``reference_batch_size`` (cRT and LWS: the official 512)."""
    return getattr(spec_of(method).config, "reference_batch_size", OFFICIAL_BATCH)


def settings(num_samples: int, method: str, steps: tuple[int, ...]) -> dict[str, int]:
    """Setting name -> batch: the reference batch, then ``num_samples // k`` for each k of ``steps``."""
    batches = {REFERENCE: reference_batch(method)}
    batches |= {f"{k} steps": max(1, num_samples // k) for k in steps}
    return batches


def measure(run: Path, work: Path, methods: tuple[str, ...], steps: tuple[int, ...]) -> dict[str, dict]:
    """(method, setting) -> {"batch", "val", "test"} macro top-1 (%) on a copy of ``run``."""
    copy = work / run.name
    if not copy.exists():
        shutil.copytree(run, copy)
    num_samples = int(sum(load_run(copy).splits.train_counts))
    rows: dict[str, dict] = {"num_samples": {"n": num_samples}}
    for method in methods:
        for name, batch in settings(num_samples, method, steps).items():
            results = decouple(copy, [method], [f"decouple.{method}.batch_size={batch}"], overwrite=True)
            rows[f"{method}|{name}"] = {
                "batch": batch,
                "val": results["val_methods"][method]["macro"],
                "test": results["methods"][method]["macro"],
            }
            print(f"{run.name} {method} {name} (batch {batch}): val {rows[f'{method}|{name}']['val']:.1f}", flush=True)
    return rows


def summary_table(per_run: dict[Path, dict], methods: tuple[str, ...], steps: tuple[int, ...]) -> list[str]:
    """Mean ± std over the runs of val and test macro per (method, setting); the batch of the first run."""
    first = next(iter(per_run.values()))
    spread = statistics.stdev if len(per_run) > 1 else (lambda values: 0.0)
    lines = [
        "| method | setting | batch | steps / epoch | val macro | test macro | auto's choice |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    num_samples = first["num_samples"]["n"]
    for method in methods:
        chosen = auto_batch_size(num_samples, reference_batch(method))
        for name in [REFERENCE, *(f"{k} steps" for k in steps)]:
            key = f"{method}|{name}"
            batch = first[key]["batch"]
            cells = []
            for split in ("val", "test"):
                values = [rows[key][split] for rows in per_run.values()]
                cells.append(f"{statistics.fmean(values):.1f} ± {spread(values):.1f}")
            mark = "yes" if batch == chosen else ""
            lines.append(f"| {method} | {name} | {batch} | {num_samples // batch} | {cells[0]} | {cells[1]} | {mark} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished run directories (one per training seed)")
    parser.add_argument("--work", type=Path, required=True, help="where the runs are copied and refitted")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--steps", nargs="+", type=int, default=list(STEPS), help="steps an epoch to try")
    parser.add_argument("--doc", type=Path, default=DOC)
    args = parser.parse_args()
    torch.set_num_threads(1)
    methods, steps = tuple(args.methods), tuple(args.steps)
    start = time.perf_counter()
    per_run = {run: measure(run, args.work, methods, steps) for run in args.runs}
    minutes = (time.perf_counter() - start) / 60
    num_samples = next(iter(per_run.values()))["num_samples"]["n"]
    lines = [
        "# Stage-2 batch size on small data, on validation",
        "",
        f"Generated by `benchmarks/head_schedule.py {' '.join(str(r) for r in args.runs)} --work DIR` in "
        f"{minutes:.0f} min. {machine_line()}",
        "",
        f"Each trained head refitted on the runs' cached features ({num_samples:,} training images) at its "
        "reference batch and at the batches that give "
        + ", ".join(str(k) for k in steps)
        + " steps an epoch, every other key at its default; macro top-1 (%), mean ± std over the "
        f"{len(per_run)} runs (val: 20 images per class, what chooses; test: shown, never used). `auto's "
        f"choice` marks the batch `batch_size=auto` takes here: the reference batch where it gives at least "
        f"{STEPS_PER_EPOCH} steps an epoch, else N // {STEPS_PER_EPOCH}, at least {MIN_BATCH}.",
        "",
        *summary_table(per_run, methods, steps),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    write_text_atomic(args.doc, text)


if __name__ == "__main__":
    main()
