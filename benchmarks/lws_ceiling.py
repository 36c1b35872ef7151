"""How far can LWS go on a run's representation? Its objective solved exactly, beside what the run's LWS reached.

LWS (Kang et al. 2020) learns one scale ``s_j`` per class on the frozen joint
classifier: logits ``(W x + b) * s`` (the official forward), trained with
class-balanced sampling, i.e. on the class-balanced cross-entropy

    L(s) = sum_j 1 / (C n_j) * sum_{i: y_i = j} CE((W x_i + b) * s, y_i),

which is convex in ``s`` (the logits are linear in it). This script minimises
``L`` exactly (full-batch L-BFGS with a strong-Wolfe line search, on the run's
cached training features) and scores the optimum on val and test. If the
optimum stays below cRT, no schedule of LWS (steps, batch, learning rate)
closes the gap: LWS's parametrisation does.

For comparison it also solves the same objective with one additive offset per
class on top of the scales, ``(W x + b) * s + t`` (2C parameters): how much of
the gap is the multiplicative form.

    PYTHONPATH=src .venv/bin/python benchmarks/lws_ceiling.py RUN [RUN ...] --doc docs/results/lws_ceiling.md

Each RUN is a finished ``longtail train`` + ``longtail decouple --method lws,crt``
(or ``auto``) run directory; nothing in it is changed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _doc import machine_line  # noqa: E402

from longtail.evaluation.metrics import accuracy_summary  # noqa: E402
from longtail.fs.atomic import write_text_atomic  # noqa: E402
from longtail.pipeline.run_state import load_run  # noqa: E402
from longtail.pipeline.stage2 import load_fitted, run_features  # noqa: E402
from longtail.runs import read_results  # noqa: E402

DOC = Path(__file__).resolve().parent.parent / "docs" / "results" / "lws_ceiling.md"
FORMS = ("scales", "scales + offsets")
EXPLAINED = (
    "LWS learns one scale per class on the frozen joint classifier, `(W x + b) * s` (the official forward), "
    "class-balanced; its objective, the class-balanced cross-entropy, is convex in `s`. *LWS objective solved* "
    "is its exact minimiser (full-batch L-BFGS on the run's cached training features): no schedule of LWS (steps, "
    "batch, learning rate) can do better on this objective. *scales + offsets* adds one learned additive offset per "
    "class (2C parameters; not LWS): how much of what is left is the multiplicative form. The run's own rows are "
    "read from its `results.json`. Macro top-1 (%); val: 20 images per class, test: the balanced test set."
)


def balanced_weights(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N,) weights 1 / (C n_{y_i}): each class weighs 1/C in the loss, as class-balanced sampling in expectation."""
    counts = torch.bincount(y, minlength=num_classes).clamp(min=1).double()
    return (1.0 / (num_classes * counts))[y]


def solve(joint_logits: torch.Tensor, y: torch.Tensor, form: str, max_iter: int = 500) -> torch.Tensor:
    """The exact minimiser of the class-balanced cross-entropy over ``form``'s parameters.

    Args:
        joint_logits: (N, C) float64 ``W x + b`` of the frozen joint classifier on the training features.
        y: (N,) int64 labels.
        form: ``"scales"`` (LWS: C scales) or ``"scales + offsets"`` (2C parameters).

    Returns:
        (2, C) float64: the scales and the offsets (zeros for ``"scales"``).
    """
    num_classes = joint_logits.shape[1]
    weights = balanced_weights(y, num_classes)
    scales = torch.ones(num_classes, dtype=torch.float64, requires_grad=True)
    offsets = torch.zeros(num_classes, dtype=torch.float64, requires_grad=form == "scales + offsets")
    parameters = [scales] + ([offsets] if offsets.requires_grad else [])
    optimizer = torch.optim.LBFGS(parameters, lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = (F.cross_entropy(joint_logits * scales + offsets, y, reduction="none") * weights).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return torch.stack([scales.detach(), offsets.detach()])


def measure(run_dir: Path) -> dict[str, dict[str, float]]:
    """Val and test macro of: the run's own LWS and cRT (results.json), and each form solved exactly."""
    run = load_run(run_dir)
    fitted = load_fitted(run)
    joint = fitted["joint"].head.cpu().eval().as_linear()
    counts = run.splits.train_counts
    logits = {}
    labels = {}
    with torch.no_grad():
        for split in ("train", "val", "test"):
            features = run_features(run, split)
            bias = None if joint.bias is None else joint.bias.double()
            logits[split] = F.linear(features.x.double(), joint.weight.double(), bias)  # (N, C)
            labels[split] = features.y
    results = read_results(run_dir)
    rows = {}
    for method in ("crt", "lws"):
        rows[f"run's {method}"] = {
            "val": results["val_methods"][method]["macro"],
            "test": results["methods"][method]["macro"],
        }
    for form in FORMS:
        scales, offsets = solve(logits["train"], labels["train"], form)
        rows[f"LWS objective solved, {form}"] = {
            split: accuracy_summary((logits[split] * scales + offsets).argmax(1), labels[split], counts)["macro"]
            for split in ("val", "test")
        }
    return rows


def table(rows: dict[str, dict[str, float]], spread: dict[str, dict[str, float]] | None = None) -> list[str]:
    lines = ["| classifier | val macro | test macro |", "|---|---:|---:|"]
    for name, cells in rows.items():
        shown = [
            f"{cells[split]:.1f}" + (f" ± {spread[name][split]:.1f}" if spread else "") for split in ("val", "test")
        ]
        lines.append(f"| {name} | {' | '.join(shown)} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished run directories (one per training seed)")
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--note", default="", help="a paragraph written under the header")
    args = parser.parse_args()
    torch.set_num_threads(1)
    per_run = {run: measure(run) for run in args.runs}
    names = list(next(iter(per_run.values())))
    mean = {n: {s: statistics.fmean(r[n][s] for r in per_run.values()) for s in ("val", "test")} for n in names}
    spread = statistics.stdev if len(per_run) > 1 else (lambda values: 0.0)
    std = {n: {s: spread([r[n][s] for r in per_run.values()]) for s in ("val", "test")} for n in names}
    gap = mean["run's crt"]["test"] - mean["LWS objective solved, scales"]["test"]
    lines = [
        "# LWS's ceiling on the demo's representation",
        "",
        f"Generated by `benchmarks/lws_ceiling.py {' '.join(str(r) for r in args.runs)}`. {machine_line()}",
        "",
        EXPLAINED,
        "",
        *([args.note, ""] if args.note else []),
        f"## Mean ± std over {len(per_run)} runs",
        "",
        *table(mean, std),
        "",
        f"cRT minus LWS's exact optimum, test macro: {gap:+.1f} points (mean over the runs).",
    ]
    for run, rows in per_run.items():
        lines += ["", f"## `{run.name}`", "", *table(rows)]
    text = "\n".join(lines) + "\n"
    print(text)
    write_text_atomic(args.doc, text)


if __name__ == "__main__":
    main()
