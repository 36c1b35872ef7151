"""DecoupledClassifier against LogisticRegression on a long-tailed subset of scikit-learn's digits.

For each seed: a class-balanced test split of 50 images per class is drawn
from ``load_digits`` (1,797 8x8 images, 10 classes, 174 to 183 per class);
from the rest, a long-tailed training subset the CIFAR-LT way
(``longtail_counts(10, 120, 20)``: 120, 86, 61, 44, 31, 22, 16, 11, 8, 6
images for digits 0..9, the first ``n_i`` of class ``i`` after a seeded
shuffle). Every classifier is a ``Pipeline(StandardScaler(), clf)`` fitted on
that subset; DecoupledClassifier holds its validation split out of it.
Accuracy (%) on the test split: macro (mean per class) and per shot group
(many > 100, medium 20..100, few < 20 training images: digit 0; 1-5; 6-9).
The table is printed and written to docs/sklearn.md.

    .venv/bin/python benchmarks/sklearn_compare.py --seeds 0 1 2 3 4 5 6 7 8 9
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _doc import machine_line, write_section
from sklearn.base import BaseEstimator
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from longtail.data.longtail import balanced_holdout, longtail_counts, longtail_subset
from longtail.sklearn import DecoupledClassifier, HoldoutWarning, shot_accuracy

DOC = Path(__file__).resolve().parent.parent / "docs" / "sklearn.md"
HEADING = "## Measured: long-tailed digits"
COUNTS = longtail_counts(10, 120, 20)
TEST_PER_CLASS = 50
COLUMNS = ("macro", "many", "medium", "few")
BASELINE = "LogisticRegression(balanced)"


def classifiers(seed: int) -> dict[str, Callable[[], BaseEstimator]]:
    """Row label -> a fresh classifier (all behind a StandardScaler)."""
    rows: dict[str, Callable[[], BaseEstimator]] = {
        "LogisticRegression": lambda: LogisticRegression(max_iter=5000),
        BASELINE: lambda: LogisticRegression(max_iter=5000, class_weight="balanced"),
    }
    for method in ("joint", "ncm", "crt", "tau_norm", "lws", "logit_adjust", "auto"):
        rows[f"Decoupled({method})"] = lambda method=method: DecoupledClassifier(method, random_state=seed)
    return rows


def split(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_test, y_test)``: the long-tailed subset and the balanced test split of ``seed``."""
    x, y = load_digits(return_X_y=True)
    test = balanced_holdout(y, np.arange(len(y)), TEST_PER_CLASS, 10, seed)
    pool = np.setdiff1d(np.arange(len(y)), test)
    train = pool[longtail_subset(y[pool], COUNTS, seed)]
    return x[train], y[train], x[test], y[test]


def measure(seed: int) -> dict[str, dict[str, float]]:
    """Label -> {macro, many, medium, few, seconds} of every classifier on the split of ``seed``."""
    x_train, y_train, x_test, y_test = split(seed)
    rows = {}
    for label, make in classifiers(seed).items():
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", HoldoutWarning)  # tail classes of < 5 images give no validation image
            model = make_pipeline(StandardScaler(), make()).fit(x_train, y_train)
        seconds = time.perf_counter() - start
        scores = shot_accuracy(y_test, model.predict(x_test), np.arange(10), COUNTS)
        rows[label] = {**{c: scores[c] for c in COLUMNS}, "seconds": seconds}
        if label == "Decoupled(auto)":
            rows[label]["chosen"] = model[-1].method_
    return rows


def mean_std(values: list[float]) -> str:
    return f"{statistics.fmean(values):.1f} ± {statistics.stdev(values):.1f}" if len(values) > 1 else f"{values[0]:.1f}"


def paired(per_seed: list[dict], label: str, column: str) -> str:
    """Mean ± std over seeds of ``label`` minus the baseline on ``column``; '≈' when within 2 standard errors."""
    diffs = [run[label][column] - run[BASELINE][column] for run in per_seed]
    if len(diffs) < 2:
        return f"{diffs[0]:+.1f}"
    noise = " ≈" if within_noise(per_seed, label, column) else ""
    return f"{statistics.fmean(diffs):+.1f} ± {statistics.stdev(diffs):.1f}{noise}"


def table(per_seed: list[dict]) -> str:
    """The Markdown table: mean ± std over seeds, and the paired difference to the baseline."""
    head = "| classifier | Macro | Many | Medium | Few | Δ macro vs balanced LR | Δ few vs balanced LR | fit (s) |"
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for label in per_seed[0]:
        cells = [mean_std([run[label][c] for run in per_seed]) for c in COLUMNS]
        deltas = ["—", "—"] if label == BASELINE else [paired(per_seed, label, c) for c in ("macro", "few")]
        seconds = statistics.median(run[label]["seconds"] for run in per_seed)
        lines.append(f"| {label} | {' | '.join(cells)} | {' | '.join(deltas)} | {seconds:.2f} |")
    return "\n".join(lines)


def within_noise(per_seed: list[dict], label: str, column: str) -> bool:
    """Whether ``label``'s paired difference to the baseline on ``column`` is under two standard errors."""
    diffs = [run[label][column] - run[BASELINE][column] for run in per_seed]
    return len(diffs) > 1 and abs(statistics.fmean(diffs)) < 2 * statistics.stdev(diffs) / len(diffs) ** 0.5


def reading(per_seed: list[dict]) -> str:
    """One sentence per column: the best row by mean, and the Decoupled rows within noise of the baseline."""
    sentences = []
    for column, name in (("macro", "macro"), ("few", "few-shot")):
        means = {label: statistics.fmean(run[label][column] for run in per_seed) for label in per_seed[0]}
        best = max(means, key=means.get)
        tied = [label for label in means if label.startswith("Decoupled") and within_noise(per_seed, label, column)]
        sentences.append(
            f"Best {name} accuracy: {best} ({means[best]:.1f}); Decoupled rows within noise of the balanced "
            f"LogisticRegression on {name}: {', '.join(tied) if tied else 'none'}."
        )
    return " ".join(sentences)


def section(per_seed: list[dict], seeds: list[int], load: float) -> str:
    chosen = [run["Decoupled(auto)"]["chosen"] for run in per_seed]
    picks = ", ".join(f"{name} {chosen.count(name)}×" for name in sorted(set(chosen), key=chosen.index))
    return (
        f"{HEADING}\n\n"
        f"Generated by `python benchmarks/sklearn_compare.py --seeds {' '.join(map(str, seeds))}`: "
        f"top-1 accuracy (%) on the balanced test split ({TEST_PER_CLASS} images per class), mean ± std over "
        f"{len(seeds)} seeds (each seed draws its own test split, training subset and initialisation). "
        f"Training class sizes {COUNTS} (digits 0 to 9); Many is digit 0 alone, Few digits 6 to 9. "
        'Δ: the paired difference to `LogisticRegression(class_weight="balanced")` over the same seeds, '
        "mean ± std; ≈ marks a difference within noise (under two standard errors of the mean). "
        f"`Decoupled(auto)` chose: {picks}. fit (s): median wall time of one fit, scaler included.\n\n"
        f"{table(per_seed)}\n\n"
        f"{reading(per_seed)}\n\n"
        f"Measured on {machine_line(load)}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--doc", type=Path, default=DOC, help=f"Markdown file whose section to write (default {DOC})")
    args = parser.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    per_seed = [measure(seed) for seed in args.seeds]
    text = section(per_seed, args.seeds, load)
    print(text)
    write_section(args.doc, HEADING, text)
    print(f"written {args.doc}")


if __name__ == "__main__":
    main()
