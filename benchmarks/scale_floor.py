"""The floor of :mod:`scale`: the arithmetic of one longtail command as a bare PyTorch loop, in its own process.

    python benchmarks/scale_floor.py train|crt|lws|tau_norm|ncm FILE.npz --out RESULT.json [--epochs E]
        [--batch-size B]

Reads the features file :func:`scale.write_features` wrote (with plain
``np.load``: a file this benchmark made) and times only the loop, the way the
longtail command's ``results.json`` times its own:

- ``train``: a linear layer on ``x_train``, SGD (momentum 0.9, weight decay
  5e-3, lr 0.1, cosine to 0 per step), batch 128, a random permutation an
  epoch (``train.*``'s defaults, instance-balanced);
- ``crt``: a fresh linear layer, lr 0.2, weight decay 5e-4, class-balanced
  draws (a class uniformly, then one of its vectors);
- ``lws``: ``(x W^T + b) * s`` with ``W, b`` frozen (the file's joint
  classifier) and ``s`` (C,) trained, lr 0.2, class-balanced draws;
- ``tau_norm``: the 21 τ of ``linspace(0, 2, 21)``: validation logits once per
  row chunk, scaled by each τ's ``||w||^-τ``, arg-max and accuracy for each;
- ``ncm``: the training mean, then class means of the centred, L2-normalised
  features (cl2n).

A float16 file stays float16 in memory; each batch is cast to float32, as
longtail does. Writes ``{"loop_s": ..., "epochs": ...}`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

CHUNK = 8192  # rows predicted at a time: bounded logits


def class_balanced(labels: torch.Tensor, num_classes: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """(count,) indices: a class drawn uniformly, then one of its vectors uniformly."""
    order = torch.argsort(labels, stable=True)
    sizes = torch.bincount(labels, minlength=num_classes)
    starts = torch.cumsum(sizes, 0) - sizes
    classes = torch.randint(num_classes, (count,), generator=generator)
    offsets = (torch.rand(count, generator=generator) * sizes[classes]).long()
    return order[starts[classes] + offsets]


def train_loop(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, batch: int, lr: float, wd: float, balanced: bool
) -> None:
    """SGD with momentum 0.9 and per-step cosine lr over ``epochs`` of ``len(x) // batch`` steps."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd)
    steps = max(1, len(x) // batch)
    total, step = epochs * steps, 0
    generator = torch.Generator().manual_seed(0)
    num_classes = int(y.max()) + 1
    for _ in range(epochs):
        if balanced:
            order = class_balanced(y, num_classes, len(x), generator)
        else:
            order = torch.randperm(len(x), generator=generator)
        for i in range(steps):
            index = order[i * batch : (i + 1) * batch]
            loss = F.cross_entropy(model(x[index].float()), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            for group in optimizer.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))


class Scaled(nn.Module):
    """``(x W^T + b) * s``: LWS's arithmetic."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.scales = nn.Parameter(torch.ones(len(weight)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias) * self.scales


@torch.no_grad()
def tau_sweep(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor) -> None:
    """Validation accuracy of the τ-normalised weights for 21 τ: one product per chunk, then 21 scaled arg-maxes."""
    norms = weight.norm(dim=1)
    scales = [norms.pow(-tau) for tau in torch.linspace(0, 2, 21).tolist()]
    right = [0] * len(scales)
    for start in range(0, len(x), CHUNK):
        logits = F.linear(x[start : start + CHUNK].float(), weight)
        for t, scale in enumerate(scales):
            right[t] += int(((logits * scale).argmax(1) == y[start : start + CHUNK]).sum())


@torch.no_grad()
def ncm(x: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, d) class means of the centred, L2-normalised features (cl2n), in float32 chunks."""
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    for start in range(0, len(x), CHUNK):
        total += x[start : start + CHUNK].float().sum(0, dtype=torch.float64)
    mean = (total / len(x)).float()
    sums = torch.zeros(num_classes, x.shape[1])
    for start in range(0, len(x), CHUNK):
        sums.index_add_(0, y[start : start + CHUNK], F.normalize(x[start : start + CHUNK].float() - mean, dim=1))
    return sums / torch.bincount(y, minlength=num_classes).unsqueeze(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("train", "crt", "lws", "tau_norm", "ncm"))
    parser.add_argument("file")
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=512)
    args = parser.parse_args()
    with np.load(args.file) as archive:
        x = torch.from_numpy(archive["x_train"])
        y = torch.from_numpy(archive["y_train"])
        x_val, y_val = torch.from_numpy(archive["x_val"]), torch.from_numpy(archive["y_val"])
        weight = torch.from_numpy(archive["joint_weight"])
        bias = torch.from_numpy(archive["joint_bias"])
    num_classes, dim = len(weight), x.shape[1]
    torch.manual_seed(0)
    start = time.perf_counter()
    if args.what == "train":
        train_loop(nn.Linear(dim, num_classes), x, y, epochs=args.epochs, batch=128, lr=0.1, wd=5e-3, balanced=False)
    elif args.what == "crt":
        model = nn.Linear(dim, num_classes)
        train_loop(model, x, y, epochs=args.epochs, batch=args.batch_size, lr=0.2, wd=5e-4, balanced=True)
    elif args.what == "lws":
        model = Scaled(weight, bias)
        train_loop(model, x, y, epochs=args.epochs, batch=args.batch_size, lr=0.2, wd=0.0, balanced=True)
    elif args.what == "tau_norm":
        tau_sweep(x_val, y_val, weight)
    else:
        ncm(x, y, num_classes)
    loop = time.perf_counter() - start
    Path(args.out).write_text(json.dumps({"loop_s": loop, "epochs": args.epochs}))


if __name__ == "__main__":
    main()
