"""float16 features against float32: the same vectors (the float16 file is the float32 one rounded), several seeds.

For each seed and each dtype: ``longtail train`` (10 epochs) on a features file
at CIFAR-100-LT's shape (d = 128), then ``longtail decouple --method
crt,lws,tau_norm,ncm`` with their default epochs; the test macro accuracy of
every classifier is written to ``--out`` (read by :mod:`scale_report`).

    OMP_NUM_THREADS=1 python benchmarks/scale_accuracy.py [--work /tmp/scale/acc] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from scale import SHAPES, write_features

METHODS = ("joint", "crt", "lws", "tau_norm", "ncm")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="/tmp/scale/acc")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    work = Path(args.work)
    write_features(work / "f32.npz", SHAPES["cifar100_lt"], 128, "float32", seed=0)
    with np.load(work / "f32.npz") as archive:  # our own file
        arrays = {key: archive[key] for key in archive.files}
    for split in ("train", "val", "test"):
        arrays[f"x_{split}"] = arrays[f"x_{split}"].astype(np.float16)
    np.savez(work / "f16.npz", **arrays)
    longtail = [sys.executable, "-m", "longtail"]
    out = {}
    for dtype in ("f32", "f16"):
        for seed in args.seeds.split(","):
            run = work / f"run_{dtype}_{seed}"
            data = [f"data.path={work / (dtype + '.npz')}", "train.epochs=10", f"seed={seed}"]
            quiet = {"check": True, "stdout": subprocess.DEVNULL}
            subprocess.run([*longtail, "train", "data.name=features", *data, "--out", str(run), "--overwrite"], **quiet)
            subprocess.run([*longtail, "decouple", str(run), "--method", "crt,lws,tau_norm,ncm"], **quiet)
            methods = json.loads((run / "results.json").read_text())["methods"]
            out[f"{dtype}_{seed}"] = {m: methods[m]["macro"] for m in METHODS}
            print(dtype, seed, out[f"{dtype}_{seed}"], flush=True)
    (work / "acc.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
