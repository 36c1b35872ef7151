"""DecoupledClassifier against LogisticRegression on long-tailed feature matrices, seed by seed.

Three matrices, each drawn anew for every seed (test split, long-tailed training subset, initialisation):

- ``digits`` (the default): scikit-learn's ``load_digits`` (1,797 8x8 images, 64 pixel features). A
  class-balanced test split of 50 images per class; from the rest, a long-tailed training subset the
  CIFAR-LT way (``longtail_counts(10, 120, 20)``: 120, 86, 61, 44, 31, 22, 16, 11, 8, 6 images for digits
  0..9, the first ``n_i`` of class ``i`` after a seeded shuffle).
- ``fashion``: Fashion-MNIST (Debian's ``dataset-fashion-mnist``) as 49 features, the 28x28 pixels averaged
  over 4x4 blocks; training subset ``longtail_counts(10, 200, 50)`` (200 down to 4 images) of the training
  images, test 200 images per class of the test images.
- ``--features FILE.npz``: a longtail feature file (``longtail features RUN --out FILE.npz``: ``x_train``,
  ``y_train``, ``x_test``, ``y_test``), e.g. of the demo's backbone; training subset
  ``longtail_counts(C, 150, 50)`` of its training features, test 200 per class of its test features.

Every classifier is a ``Pipeline(StandardScaler(), clf)`` fitted on the training subset; DecoupledClassifier
makes its choices inside it. Accuracy (%) on the test split: macro (mean per class) and per shot group (many
> 100, medium 20..100, few < 20 training images). Fit time: wall time of ``fit``, scaler included, the median
of ``--rounds`` fits per seed, every classifier fitted in turn round after round so that a shared machine's
load falls on all alike; "× LR" is the median over seeds of its ratio to the balanced LogisticRegression's.
The balanced LogisticRegression is also timed with its thread pools held to one thread (not a table row).
The table is printed and written to docs/sklearn.md, in the section of its matrix.

    .venv/bin/python benchmarks/sklearn_compare.py --seeds 0 1 2 3 4 5 6 7 8 9
    .venv/bin/python benchmarks/sklearn_compare.py --data fashion
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from _doc import machine_line, write_section
from sklearn.base import BaseEstimator
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from longtail.data.fashion_mnist import load_fashion_mnist
from longtail.data.longtail import balanced_holdout, longtail_counts, longtail_subset
from longtail.sklearn import DecoupledClassifier, HoldoutWarning, shot_accuracy

DOC = Path(__file__).resolve().parent.parent / "docs" / "sklearn.md"
COLUMNS = ("macro", "many", "medium", "few")
BASELINE = "LogisticRegression(balanced)"
BASELINE_ONE_THREAD = "LogisticRegression(balanced), one thread"
AUTO = "Decoupled(auto)"
TAU_ONE = {"decouple.logit_adjust.min": 1.0, "decouple.logit_adjust.max": 1.0, "decouple.logit_adjust.steps": 1}
Split = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Matrix:
    """A long-tailed feature matrix: how it is drawn per seed and described in the document."""

    heading: str
    description: str
    command: str
    counts: list[int]
    split: Callable[[int], Split]


def digits_matrix() -> Matrix:
    counts = longtail_counts(10, 120, 20)
    x, y = load_digits(return_X_y=True)

    def split(seed: int) -> Split:
        test = balanced_holdout(y, np.arange(len(y)), 50, 10, seed)
        pool = np.setdiff1d(np.arange(len(y)), test)
        train = pool[longtail_subset(y[pool], counts, seed)]
        return x[train], y[train], x[test], y[test]

    description = (
        "scikit-learn's digits (64 pixel features), test split 50 images per class, "
        f"training class sizes {counts} (digits 0 to 9); Many is digit 0 alone, Few digits 6 to 9"
    )
    return Matrix("## Measured: long-tailed digits", description, "", counts, split)


def fashion_matrix() -> Matrix:
    counts = longtail_counts(10, 200, 50)
    data = load_fashion_mnist()

    def pooled(images: np.ndarray) -> np.ndarray:
        """(N, 28, 28) uint8 -> (N, 49): the mean of each 4x4 block, in [0, 1]."""
        return images.reshape(len(images), 7, 4, 7, 4).mean(axis=(2, 4)).reshape(len(images), 49) / 255.0

    x, y = pooled(data["x_train"].reshape(-1, 28, 28)), data["y_train"].astype(np.int64)
    x_test, y_test = pooled(data["x_test"].reshape(-1, 28, 28)), data["y_test"].astype(np.int64)

    def split(seed: int) -> Split:
        train = longtail_subset(y, counts, seed)
        test = balanced_holdout(y_test, np.arange(len(y_test)), 200, 10, seed)
        return x[train], y[train], x_test[test], y_test[test]

    description = (
        "Fashion-MNIST as 49 features (the pixels averaged over 4x4 blocks), test split 200 images per class "
        f"of its test images, training class sizes {counts} of its training images"
    )
    return Matrix("## Measured: long-tailed Fashion-MNIST pixels", description, " --data fashion", counts, split)


def features_matrix(path: Path) -> Matrix:
    with np.load(path, allow_pickle=False) as data:
        x, y = data["x_train"].astype(np.float32), data["y_train"].astype(np.int64)
        x_test, y_test = data["x_test"].astype(np.float32), data["y_test"].astype(np.int64)
    num_classes = int(max(y.max(), y_test.max())) + 1
    counts = longtail_counts(num_classes, 150, 50)

    def split(seed: int) -> Split:
        train = longtail_subset(y, counts, seed)
        test = balanced_holdout(y_test, np.arange(len(y_test)), 200, num_classes, seed)
        return x[train], y[train], x_test[test], y_test[test]

    description = (
        f"the {x.shape[1]}-dimensional features of `{path.name}` (a `longtail features` file), test split 200 per "
        f"class of its test features, training class sizes {counts} of its training features"
    )
    heading = "## Measured: long-tailed features of a trained backbone"
    return Matrix(heading, description, f" --features {path.name}", counts, split)


def classifiers(seed: int, num_samples: int) -> dict[str, Callable[[], BaseEstimator]]:
    """Row label -> a fresh classifier (all behind a StandardScaler), for ``num_samples`` training samples."""
    rows: dict[str, Callable[[], BaseEstimator]] = {
        "LogisticRegression": lambda: LogisticRegression(max_iter=5000),
        BASELINE: lambda: LogisticRegression(max_iter=5000, class_weight="balanced"),
        "LogisticRegressionCV(balanced)": lambda: LogisticRegressionCV(max_iter=5000, class_weight="balanced"),
    }
    for method in ("joint", "joint_balanced", "ncm", "crt", "tau_norm", "lws", "logit_adjust", "auto"):
        rows[f"Decoupled({method})"] = lambda method=method: DecoupledClassifier(method, random_state=seed)
    # Logit adjustment at τ = 1 (Menon et al.'s choice for balanced error) on the probe at C = 1 (weight decay
    # 1 / n): nothing to choose, so one fit and no folds.
    rows["Decoupled(logit_adjust, τ=1, C=1)"] = lambda: DecoupledClassifier(
        "logit_adjust", weight_decay=1.0 / num_samples, random_state=seed, config=TAU_ONE
    )
    # What each default does, one at a time: the candidates with a solve of their own, the penalty grid (C of 1,
    # 1/3 and 3), 5 folds with the CLI's 21-point τ grids (the previous defaults), selection by accuracy; then
    # the first recipe of all (SGD probe, one held-out split, macro accuracy, every method a candidate).
    n = num_samples
    steps = {"decouple.tau.steps": 21, "decouple.logit_adjust.steps": 21}
    ablations = {
        "auto; train_heads": {"train_heads": True},
        "auto; penalties C = 1, 1/3, 3": {"weight_decay": [1.0 / n, 3.0 / n, 1.0 / (3 * n)]},
        "auto; 5-fold, 21-point τ grids": {"cv": 5, "config": steps},
        "auto; accuracy": {"selection": "accuracy"},
        "auto; sgd, hold-out, accuracy": {"solver": "sgd", "cv": None, "selection": "accuracy"},
    }
    for label, params in ablations.items():
        rows[f"Decoupled({label})"] = lambda params=params: DecoupledClassifier("auto", random_state=seed, **params)
    return rows


def timed_fit(make: Callable[[], BaseEstimator], x: np.ndarray, y: np.ndarray) -> tuple[BaseEstimator, float, float]:
    """``Pipeline(StandardScaler(), make())`` fitted on ``x, y``, its wall and CPU seconds (warnings silenced)."""
    wall, cpu = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HoldoutWarning)  # cv=None: tail classes of < 5 images give no image
        warnings.simplefilter("ignore", UserWarning)  # LogisticRegressionCV: a class smaller than its 5 folds
        warnings.simplefilter("ignore", FutureWarning)  # LogisticRegressionCV (scikit-learn 1.8+): its attributes
        model = make_pipeline(StandardScaler(), make()).fit(x, y)
    return model, time.perf_counter() - wall, time.process_time() - cpu


def one_thread_baseline() -> BaseEstimator:
    """The balanced LogisticRegression with its OpenMP and BLAS pools held to one thread during ``fit``."""
    return OneThread(LogisticRegression(max_iter=5000, class_weight="balanced"))


class OneThread(BaseEstimator):
    """``estimator`` fitted under ``threadpoolctl.threadpool_limits(1)``: on a busy machine a pool's threads
    mostly wait on each other, and DecoupledClassifier runs small fits on one thread too."""

    def __init__(self, estimator: BaseEstimator) -> None:
        self.estimator = estimator

    def fit(self, x: np.ndarray, y: np.ndarray) -> OneThread:
        with threadpool_limits(1):
            self.estimator.fit(x, y)
        self.classes_ = self.estimator.classes_  # fitted, as scikit-learn's check_is_fitted reads it
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.estimator.predict(x)


def measure(matrix: Matrix, seed: int, rounds: int) -> dict[str, dict[str, float]]:
    """Label -> {macro, many, medium, few, wall, cpu} of every classifier on the split of ``seed``.

    Every classifier is fitted ``rounds`` times, one after the other in table order, round after round, so
    that a shared machine's load falls on all of them alike; ``wall`` and ``cpu`` are the medians of its
    seconds, the accuracies those of its first fit (the same model every time: the seed fixes it).
    """
    x_train, y_train, x_test, y_test = matrix.split(seed)
    classes = np.arange(len(matrix.counts))
    makers = classifiers(seed, len(y_train))
    makers[BASELINE_ONE_THREAD] = one_thread_baseline
    rows: dict[str, dict[str, float]] = {}
    seconds: dict[str, list[tuple[float, float]]] = {label: [] for label in makers}
    for _ in range(rounds):
        for label, make in makers.items():
            model, wall, cpu = timed_fit(make, x_train, y_train)
            seconds[label].append((wall, cpu))
            if label not in rows:
                scores = shot_accuracy(y_test, model.predict(x_test), classes, matrix.counts)
                rows[label] = {c: scores[c] for c in COLUMNS}
                if label == AUTO:
                    rows[label]["chosen"] = model[-1].method_
    for label, pairs in seconds.items():
        rows[label]["wall"] = statistics.median(wall for wall, _ in pairs)
        rows[label]["cpu"] = statistics.median(cpu for _, cpu in pairs)
    return rows


def mean_std(values: list[float]) -> str:
    return f"{statistics.fmean(values):.1f} ± {statistics.stdev(values):.1f}" if len(values) > 1 else f"{values[0]:.1f}"


def differences(per_seed: list[dict], label: str, column: str) -> list[float]:
    return [run[label][column] - run[BASELINE][column] for run in per_seed]


def within_noise(per_seed: list[dict], label: str, column: str) -> bool:
    """Whether ``label``'s paired difference to the baseline on ``column`` is under two standard errors."""
    diffs = differences(per_seed, label, column)
    return len(diffs) > 1 and abs(statistics.fmean(diffs)) < 2 * statistics.stdev(diffs) / len(diffs) ** 0.5


def paired(per_seed: list[dict], label: str, column: str) -> str:
    """Mean ± std over seeds of ``label`` minus the baseline on ``column``; '≈' when within 2 standard errors."""
    diffs = differences(per_seed, label, column)
    if len(diffs) < 2:
        return f"{diffs[0]:+.1f}"
    noise = " ≈" if within_noise(per_seed, label, column) else ""
    return f"{statistics.fmean(diffs):+.1f} ± {statistics.stdev(diffs):.1f}{noise}"


def wins(per_seed: list[dict], label: str) -> str:
    """Seeds where ``label``'s macro accuracy is above / below the baseline's (ties, within 0.05, left out)."""
    diffs = differences(per_seed, label, "macro")
    return f"{sum(d > 0.05 for d in diffs)}/{sum(d < -0.05 for d in diffs)}"


def table(per_seed: list[dict]) -> str:
    """The Markdown table: mean ± std over seeds, the paired differences to the baseline, fit times."""
    head = (
        "| classifier | Macro | Many | Medium | Few | Δ macro vs balanced LR | seeds above/below | "
        "Δ few vs balanced LR | fit (s) | × LR |"
    )
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|"]
    for label in per_seed[0]:
        if label == BASELINE_ONE_THREAD:
            continue  # the same classifier as the baseline: it appears in the timing only
        cells = [mean_std([run[label][c] for run in per_seed]) for c in COLUMNS]
        if label == BASELINE:
            deltas = ["—", "—", "—"]
        else:
            deltas = [paired(per_seed, label, "macro"), wins(per_seed, label), paired(per_seed, label, "few")]
        seconds = statistics.median(run[label]["wall"] for run in per_seed)
        ratio = statistics.median(run[label]["wall"] / run[BASELINE]["wall"] for run in per_seed)
        lines.append(f"| {label} | {' | '.join(cells)} | {' | '.join(deltas)} | {seconds:.3f} | {ratio:.1f} |")
    return "\n".join(lines)


def reading(per_seed: list[dict]) -> str:
    """Sentences read off the table: the best rows, the rows within noise of the baseline, auto's seeds."""
    sentences = []
    for column, name in (("macro", "macro"), ("few", "few-shot")):
        labels = [label for label in per_seed[0] if label != BASELINE_ONE_THREAD]
        means = {label: statistics.fmean(run[label][column] for run in per_seed) for label in labels}
        top = max(means, key=means.get)
        tied = [label for label in means if label.startswith("Decoupled") and within_noise(per_seed, label, column)]
        sentences.append(
            f"Best {name} accuracy: {top} ({means[top]:.1f}); Decoupled rows within noise of the balanced "
            f"LogisticRegression on {name}: {', '.join(tied) if tied else 'none'}."
        )
    diffs = differences(per_seed, AUTO, "macro")
    per = ", ".join(f"{d:+.1f}" for d in diffs)
    sentences.append(f"`Decoupled(auto)` minus the balanced LogisticRegression, macro, seed by seed: {per}.")
    return " ".join(sentences)


def timing(per_seed: list[dict]) -> str:
    """Fit times of auto and the balanced LogisticRegression (its default threads, and one thread), in a sentence."""

    def median(label: str, key: str) -> float:
        return statistics.median(run[label][key] for run in per_seed)

    def ratio(label: str, key: str) -> float:
        return statistics.median(run[AUTO][key] / run[label][key] for run in per_seed)

    return (
        "Fit time, median over seeds of each seed's median, wall (CPU) seconds: LogisticRegression(balanced) "
        f"{median(BASELINE, 'wall'):.3f} ({median(BASELINE, 'cpu'):.3f}), the same with its thread pools held to "
        f"one thread (`threadpoolctl`, as DecoupledClassifier holds its own on small fits) "
        f"{median(BASELINE_ONE_THREAD, 'wall'):.3f} ({median(BASELINE_ONE_THREAD, 'cpu'):.3f}), Decoupled(auto) "
        f"{median(AUTO, 'wall'):.3f} ({median(AUTO, 'cpu'):.3f}). Decoupled(auto) / LogisticRegression(balanced), "
        f"median over seeds of the per-seed ratio: {ratio(BASELINE, 'wall'):.2f}x wall "
        f"({ratio(BASELINE, 'cpu'):.2f}x CPU) against its default threads, {ratio(BASELINE_ONE_THREAD, 'wall'):.2f}x "
        f"wall ({ratio(BASELINE_ONE_THREAD, 'cpu'):.2f}x CPU) against one thread."
    )


def section(matrix: Matrix, per_seed: list[dict], seeds: list[int], load: float, rounds: int) -> str:
    chosen = [run[AUTO]["chosen"] for run in per_seed]
    picks = ", ".join(f"{name} {chosen.count(name)}×" for name in sorted(set(chosen), key=chosen.index))
    return (
        f"{matrix.heading}\n\n"
        f"Generated by `python benchmarks/sklearn_compare.py{matrix.command} --seeds {' '.join(map(str, seeds))}`: "
        f"top-1 accuracy (%) on {matrix.description}; mean ± std over {len(seeds)} seeds (each seed draws its own "
        "test split, training subset and initialisation). "
        'Δ: the paired difference to `LogisticRegression(class_weight="balanced")` over the same seeds, '
        "mean ± std; ≈ marks a difference within noise (under two standard errors of the mean); seeds above/below: "
        "how many seeds the row's macro accuracy is above / below the balanced LogisticRegression's. "
        f"`Decoupled(auto)` chose: {picks}. fit (s): wall time of one fit, scaler included, the median of "
        f"{rounds} fits per seed (every row fitted in turn, round after round, so that the machine's load "
        "falls on all alike), then over seeds; × LR: median over seeds of its ratio to the balanced "
        "LogisticRegression's. The last five rows change `auto`'s defaults one at a time: the class-weighted "
        "probe and cRT among the candidates (`train_heads=True`); the probe's penalty chosen among C = 1, 1/3 "
        "and 3; 5 folds and τ grids of 21 points (these three: the previous defaults); selection by macro "
        'accuracy instead of held-out log-loss; and `solver="sgd"`, one held-out split, accuracy (the first '
        "recipe, every method a candidate).\n\n"
        f"{table(per_seed)}\n\n"
        f"{reading(per_seed)}\n\n"
        f"{timing(per_seed)}\n\n"
        f"Measured on {machine_line(load)}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--data", choices=("digits", "fashion"), default="digits", help="the matrix (default digits)")
    parser.add_argument("--features", type=Path, help="a longtail features .npz file instead of --data")
    parser.add_argument("--doc", type=Path, default=DOC, help=f"Markdown file whose section to write (default {DOC})")
    parser.add_argument("--rounds", type=int, default=3, help="fits of every row per seed, in turn (default 3)")
    args = parser.parse_args()
    if args.features is not None:
        matrix = features_matrix(args.features)
    else:
        matrix = digits_matrix() if args.data == "digits" else fashion_matrix()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    per_seed = []
    for seed in args.seeds:
        per_seed.append(measure(matrix, seed, args.rounds))
        auto, base, one = (per_seed[-1][label] for label in (AUTO, BASELINE, BASELINE_ONE_THREAD))
        print(
            f"seed {seed}: auto {auto['macro']:.1f} ({auto['chosen']}, {auto['wall']:.3f} s), "
            f"balanced LR {base['macro']:.1f} ({base['wall']:.3f} s; one thread {one['wall']:.3f} s)",
            flush=True,
        )
    text = section(matrix, per_seed, args.seeds, load, args.rounds)
    print(text)
    write_section(args.doc, matrix.heading, text)
    print(f"written {args.doc}")


if __name__ == "__main__":
    main()
