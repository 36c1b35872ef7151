"""Scale: longtail's commands on long-tailed features at the shapes of the real benchmarks, beside a bare floor.

For each shape (CIFAR-100-LT, Places-LT, ImageNet-LT, iNaturalist 2018: their
training-set size N, class count C and largest / smallest class) and feature
dimension d, it writes a synthetic features file (:func:`write_features`: class
means plus Gaussian noise, the class sizes of :func:`class_sizes`) and runs, each
as its own process:

- ``longtail train data.name=features data.path=FILE`` (the linear probe; or,
  with ``--joint-file`` shapes, ``model.joint=file``: the file's classifier, no
  training, for shapes too large to train in the time);
- ``longtail decouple RUN --method M`` for cRT, LWS, τ-norm and NCM;

and, alternating with each (ours, floor, ours, floor, ... so that the load of a
shared machine hits both alike), the *floor*: a bare PyTorch loop in its own
process doing the same arithmetic on the same tensors (:mod:`scale_floor`).
Each child's wall time and peak resident memory (``ru_maxrss`` of that child,
from ``os.wait4``) are recorded; our training loop's own time is read from the
run's ``results.json`` (``timing``), the floor's from its JSON line. Writes
``docs/results/scale.md``.

    OMP_NUM_THREADS=1 python benchmarks/scale.py [--shapes cifar100_lt,imagenet_lt] [--dims 512,2048]
        [--dtype float32|float16] [--epochs 1] [--work /tmp/scale] [--doc docs/results/scale.md]

``--shapes tiny`` is a smoke run of a few seconds (the test suite's).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DOC = HERE.parent / "docs" / "results" / "scale.md"
METHODS = ("crt", "lws", "tau_norm", "ncm")
TRAINED = ("train", "crt", "lws")  # the trained heads: their loops are compared per epoch


@dataclass(frozen=True)
class Shape:
    """A benchmark's training-set shape: ``images`` over ``classes``, largest class ``n_max``, smallest ``n_min``;
    ``val`` and ``test`` vectors per class (balanced, as the real sets' evaluation splits)."""

    images: int
    classes: int
    n_max: int
    n_min: int
    val: int
    test: int


SHAPES = {
    "tiny": Shape(585, 10, 200, 5, 5, 10),
    "cifar100_lt": Shape(10_847, 100, 500, 5, 10, 100),
    "places_lt": Shape(62_500, 365, 4_980, 5, 20, 100),
    "imagenet_lt": Shape(115_846, 1_000, 1_280, 5, 20, 50),
    "inat2018": Shape(437_513, 8_142, 1_000, 2, 3, 3),
}
LABELS = {
    "tiny": "tiny",
    "cifar100_lt": "CIFAR-100-LT",
    "places_lt": "Places-LT",
    "imagenet_lt": "ImageNet-LT",
    "inat2018": "iNaturalist 2018",
}


def class_sizes(shape: Shape) -> np.ndarray:
    """(C,) class sizes, largest first: ``round(n_max * (n_min / n_max) ** (t ** g))`` at ``t = c / (C - 1)``.

    ``g = 1`` is the exponential profile (CIFAR-100-LT's recipe, which floors
    instead of rounding: 500 to 5 over 100 classes, 10,847 images). An
    exponential with the real sets' end points holds more images than they do,
    so ``g <= 1`` (found by bisection) bends it down faster, keeping the largest
    and smallest class and the total; the rounding left over is made up in the
    middle class.
    """
    t = np.linspace(0.0, 1.0, shape.classes)
    ratio = shape.n_min / shape.n_max

    def total(g: float) -> np.ndarray:
        return np.maximum(np.round(shape.n_max * ratio ** (t**g)), shape.n_min).astype(np.int64)

    low, high = 1e-3, 1.0
    if total(1.0).sum() > shape.images:
        for _ in range(80):
            g = (low + high) / 2
            low, high = (g, high) if total(g).sum() < shape.images else (low, g)
    counts = total(high)
    middle = shape.classes // 2
    counts[middle] += shape.images - counts.sum()  # within a few images: the rounding
    return counts


def write_features(path: Path, shape: Shape, dim: int, dtype: str, seed: int = 0) -> int:
    """Write a features file of ``shape`` with ``dim`` features of ``dtype``; return the bytes of its features.

    Vectors are ``(mu[y] + noise) * 3 / sqrt(d)`` with class means ``mu`` (C, d) of norm about 4 and unit
    Gaussian noise: classes overlap (accuracies are neither 0 nor 100) and vectors have norm about 3 at any
    d. The file carries a joint classifier (the class means as weights) for ``model.joint=file``.
    """
    import torch  # here: the parent process needs no torch to time its children

    generator = torch.Generator().manual_seed(seed)
    counts = class_sizes(shape)
    means = torch.randn(shape.classes, dim, generator=generator) * (4.0 / dim**0.5)
    arrays: dict[str, np.ndarray] = {}
    for split, per_class in (("train", None), ("val", shape.val), ("test", shape.test)):
        labels = np.repeat(np.arange(shape.classes), counts if per_class is None else per_class)
        labels = np.random.default_rng(seed + len(split)).permutation(labels)
        x = torch.randn(len(labels), dim, generator=generator)
        x += means[torch.from_numpy(labels)]
        x *= 3.0 / dim**0.5  # (N, d)
        arrays[f"x_{split}"] = x.numpy().astype(dtype, copy=False)
        arrays[f"y_{split}"] = labels.astype(np.int64)
    arrays["joint_weight"] = means.numpy()
    arrays["joint_bias"] = np.zeros(shape.classes, dtype=np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return sum(arrays[f"x_{split}"].nbytes for split in ("train", "val", "test"))


def run_child(args: list[str], log: Path) -> tuple[float, float]:
    """Run ``args`` as a child process (output to ``log``); return (wall seconds, peak resident GB of that child).

    The peak is the child's own ``ru_maxrss`` (from ``os.wait4``), not the
    maximum over all children so far (``RUSAGE_CHILDREN``). It includes this
    process's resident size at the fork (Linux carries the high-water mark
    across ``exec``), so this process stays small: no torch, no features.
    """
    start = time.perf_counter()
    with log.open("a") as out:
        out.write(f"$ {' '.join(args)}\n")
        out.flush()
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(args[:4])} ... failed ({process.returncode}); see {log}")
    return wall, usage.ru_maxrss * 1024 / 1e9  # ru_maxrss is in KiB on Linux


def longtail_args(*args: str) -> list[str]:
    return [sys.executable, "-m", "longtail", *args]


def floor_args(what: str, file: Path, result: Path, **keys: object) -> list[str]:
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in keys.items()]
    return [sys.executable, str(HERE / "scale_floor.py"), what, str(file), "--out", str(result), *flags]


def stage2_batch(results: dict, method: str) -> int:
    """The batch a trained head used (``stage2.<method>.batch_size``, resolved from ``auto``)."""
    return int(results["stage2"][method]["batch_size"])


def measure(name: str, dim: int, args: argparse.Namespace, work: Path) -> list[dict]:
    """Every command and its floor at one shape; one row per command."""
    shape = SHAPES[name]
    file = work / f"{name}_{dim}_{args.dtype}.npz"
    run = work / f"run_{name}_{dim}_{args.dtype}"
    log = work / f"{name}_{dim}_{args.dtype}.log"
    start = time.perf_counter()
    # In a child: a child's ru_maxrss starts from its parent's resident size at the fork (Linux keeps the
    # pre-exec high-water mark), so this process must never hold the features itself.
    writer = [sys.executable, __file__, "--write", str(file), "--shapes", name, "--dims", str(dim)]
    subprocess.run([*writer, "--dtype", args.dtype], check=True)
    feature_bytes = int(file.with_suffix(".bytes").read_text())
    print(f"{name} d={dim} {args.dtype}: file written in {time.perf_counter() - start:.1f}s", flush=True)
    joint_file = name in args.joint_file
    epochs = {"train": args.epochs, "crt": args.epochs, "lws": args.epochs}
    shutil.rmtree(run, ignore_errors=True)
    train = ["train", "data.name=features", f"data.path={file}", "--out", str(run), f"train.epochs={args.epochs}"]
    train += ["model.joint=file"] if joint_file else []
    commands = [("train", train)]
    for method in args.methods:
        keys = [f"decouple.{method}.epochs={args.epochs}"] if method in ("crt", "lws") else []
        commands.append((method, ["decouple", str(run), "--method", method, *keys]))
    rows = []
    for what, command in commands:
        row = {
            "shape": name,
            "d": dim,
            "dtype": args.dtype,
            "command": "longtail " + " ".join(command).replace(str(file), "FILE").replace(str(run), "RUN"),
            "what": what,
            "feature_bytes": feature_bytes,
            "epochs": 0 if (what == "train" and joint_file) else epochs.get(what, 0),
            "N": shape.images,
            "C": shape.classes,
        }
        floor = not (args.no_floor or (what == "train" and joint_file))
        repeats = args.repeats if what in TRAINED else 1
        measured: dict[str, list[float]] = {key: [] for key in ("wall_s", "peak_gb", "loop_s")}
        floors: dict[str, list[float]] = {key: [] for key in ("floor_wall_s", "floor_peak_gb", "floor_s")}
        for repeat in range(repeats):  # ours, floor, ours, floor: the machine's load hits both alike
            again = ["--overwrite"] if repeat else []
            wall, peak = run_child(longtail_args(*command, *again), log)
            results = json.loads((run / "results.json").read_text())
            timing = results["timing"]
            ours = timing["train_seconds"] if what == "train" else timing["decouple_seconds"][what]
            for key, value in zip(measured, (wall, peak, ours), strict=True):
                measured[key].append(value)
            if floor:
                keys: dict[str, object] = {"epochs": max(1, row["epochs"])}
                if what in ("crt", "lws"):
                    keys["batch_size"] = stage2_batch(results, what)
                result = work / f"floor_{name}_{dim}_{what}.json"
                floor_wall, floor_peak = run_child(floor_args(what, file, result, **keys), log)
                floor_loop = json.loads(result.read_text())["loop_s"]
                for key, value in zip(floors, (floor_wall, floor_peak, floor_loop), strict=True):
                    floors[key].append(value)
        # The fastest of the repeats (the least disturbed by other jobs); peaks: the largest.
        for values in (measured, floors):
            for key, seen in values.items():
                if seen:
                    row[key] = round(max(seen) if "peak" in key else min(seen), 3)
                    row[f"{key}_all"] = [round(v, 3) for v in seen]
        scored = results["methods"]["joint" if what == "train" else what]
        row["test_macro"], row["test_all"] = scored.get("macro"), scored.get("all")
        row["load_1min"] = round(os.getloadavg()[0], 1)
        if what == "train" and joint_file:
            row["note"] = "model.joint=file: nothing trained"
        rows.append(row)
        print(json.dumps(row), flush=True)
        with (work / "rows.jsonl").open("a") as out:
            out.write(json.dumps(row) + "\n")
    if not args.keep:
        file.unlink()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="cifar100_lt,places_lt,imagenet_lt")
    parser.add_argument("--dims", default="512")
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    parser.add_argument("--epochs", type=int, default=1, help="epochs of every trained head (reported per epoch)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--joint-file", default="inat2018", help="shapes run with model.joint=file (no stage 1)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each trained head and its floor (min kept)")
    parser.add_argument("--no-floor", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the features files")
    parser.add_argument("--work", default="/tmp/scale")
    parser.add_argument("--write", metavar="FILE", help="only write the features file of one shape and d")
    args = parser.parse_args()
    if args.write:
        written = write_features(Path(args.write), SHAPES[args.shapes], int(args.dims), args.dtype)
        Path(args.write).with_suffix(".bytes").write_text(str(written))
        return
    args.methods = [m for m in args.methods.split(",") if m]
    args.joint_file = args.joint_file.split(",")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    for name in args.shapes.split(","):
        for dim in (int(d) for d in args.dims.split(",")):
            measure(name, dim, args, work)


if __name__ == "__main__":
    main()
