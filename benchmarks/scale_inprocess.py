"""cRT's and LWS's training loops against the floor's in one process, on the same tensors, after a warm-up.

The whole-process rows of :mod:`scale` include, in ours and in the floor's
loop alike, what a fresh process pays once (``torch.optim`` imports
``torch._dynamo`` when the first optimiser is built: seconds). Here both run
in one process, alternating, after one warm-up round of each: the steady-state
ratio of longtail's loop (``train_head``: its sampler, DataLoader, scheduler
and per-step bookkeeping) to the bare one (:func:`scale_floor.train_loop`).

    OMP_NUM_THREADS=1 python benchmarks/scale_inprocess.py FILE.npz [--rounds 3] [--out RESULT.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from scale_floor import Scaled, train_loop
from torch import nn

from longtail.config import load_config
from longtail.engine.head_schedule import resolved_section
from longtail.engine.head_training import Features, train_head
from longtail.methods.crt import fresh_linear_head
from longtail.methods.lws import LWSHead


def ours(what: str, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> float:
    """Seconds of one epoch of longtail's ``train_head`` for cRT or LWS (the methods' own sections)."""
    config = load_config(None, [f"decouple.{what}.epochs=1"])
    section = resolved_section(config.decouple.sections[what], len(y))
    if what == "crt":
        head = fresh_linear_head(x.shape[1], len(weight), 0)
    else:
        head = LWSHead(weight, bias)
    start = time.perf_counter()
    train_head(head, Features(x, y), section, sampling=config.decouple, seed=0, device=torch.device("cpu"))
    return time.perf_counter() - start


def floor(what: str, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> float:
    """Seconds of one epoch of the bare loop (batch 512, as ``auto`` resolves at these sizes)."""
    model = nn.Linear(x.shape[1], len(weight)) if what == "crt" else Scaled(weight, bias)
    lr, wd = (0.2, 5e-4) if what == "crt" else (0.2, 0.0)
    start = time.perf_counter()
    train_loop(model, x, y, epochs=1, batch=512, lr=lr, wd=wd, balanced=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out")
    args = parser.parse_args()
    with np.load(args.file) as archive:
        x, y = torch.from_numpy(archive["x_train"]), torch.from_numpy(archive["y_train"])
        weight, bias = torch.from_numpy(archive["joint_weight"]), torch.from_numpy(archive["joint_bias"])
    results = {}
    for what in ("crt", "lws"):
        ours(what, x, y, weight, bias), floor(what, x, y, weight, bias)  # warm-up: imports, first allocations
        pairs = [(ours(what, x, y, weight, bias), floor(what, x, y, weight, bias)) for _ in range(args.rounds)]
        ratios = [a / b for a, b in pairs]
        results[what] = {"pairs": [[round(a, 3), round(b, 3)] for a, b in pairs], "ratios": ratios}
        print(
            f"{what}: ours {[round(a, 2) for a, _ in pairs]} s, floor {[round(b, 2) for _, b in pairs]} s, "
            f"paired ratio {statistics.fmean(ratios):.2f} ± {statistics.stdev(ratios) if len(ratios) > 1 else 0:.2f}",
            flush=True,
        )
    if args.out:
        Path(args.out).write_text(json.dumps(results))


if __name__ == "__main__":
    main()
