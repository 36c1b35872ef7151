"""Label shift at test time: every method of a run on SADE's 11 test distributions, with prior adaptation.

For each run directory (a finished ``longtail demo`` or ``decouple --method all``
run), every classifier (Joint and each stage-2 method) is scored on the
balanced test set and on its forward-F / backward-F subsets (F = 2, 5, 10, 25,
50; :mod:`longtail.shift.subsets`), each drawn ``--subsample-seeds`` times, with

- ``none``: the method's own argmax (today's numbers);
- ``em``: BCTS fitted on validation, then EM (Saerens) on the unlabeled subset,
  started from the validation class shares;
- ``known``: BCTS, then the Bayes adjustment to the subset's true prior;
- ``bbse``: BCTS, then the prior BBSE estimates from the method's predictions
  and the validation confusion matrix.

A cell is the micro top-1 accuracy (%) averaged over the subsample seeds, with a
95% stratified bootstrap interval of that mean (each seed's images resampled
within class, the resampled accuracies averaged over seeds; predictions held
fixed, so the interval is about which test images were seen, not EM's own
variability). Diagnostics on the first run: the issue's plain EM (uncalibrated
softmax, π_s = the method's implicit prior), EM after plain temperature
scaling, BCTS alone, and EM accuracy against the size of the batch it sees.

    PYTHONPATH=src python benchmarks/label_shift.py RUN0 RUN1 RUN2 --doc docs/results/label_shift.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _doc import machine_line  # noqa: E402

from longtail.io import write_text_atomic  # noqa: E402
from longtail.methods import display_order  # noqa: E402
from longtail.pipeline.run_state import load_run, split_features  # noqa: E402
from longtail.pipeline.stage2 import load_fitted, run_features  # noqa: E402
from longtail.shift import (  # noqa: E402
    BBSEFit,
    Calibration,
    Shift,
    adapt_prior,
    fit_bbse,
    fit_calibration,
    identity_calibration,
    shifted_subset,
    standard_shifts,
)
from longtail.shift.em import em_priors  # noqa: E402

MAIN_VARIANTS = ("none", "em", "known", "bbse")
DIAGNOSTIC_VARIANTS = ("bcts", "em-plain", "em-ts", "known-raw")
BATCH_SIZES = (10, 30, 100, 300, 1000, 0)  # 0: the whole subset
BATCH_SHIFTS = ("forward-50", "forward-10", "uniform", "backward-10", "backward-50")
PSEUDO_COUNTS = (0.0, 10.0, 100.0)


@dataclass
class MethodScores:
    """One classifier's raw logits and what was fitted for it on validation."""

    val: torch.Tensor  # (N_val, C)
    test: torch.Tensor  # (N_test, C)
    bcts: Calibration
    temperature: Calibration  # plain temperature, posteriors taken for the method's implicit prior
    plain: Calibration  # identity, posteriors taken for the method's implicit prior
    bbse: BBSEFit


@dataclass
class RunData:
    name: str
    seed: int
    train_counts: list[int]
    val_labels: torch.Tensor
    test_labels: torch.Tensor
    methods: dict[str, MethodScores]


@torch.no_grad()
def read_run(run_dir: Path) -> RunData:
    """Every classifier's val and test logits, and its calibrations and BBSE fit (validation only)."""
    run = load_run(run_dir)
    fitted = load_fitted(run)
    counts = run.splits.train_counts
    num_classes = len(counts)
    features = {split: run_features(run, split) for split in ("val", "test")}
    training_prior = torch.tensor(counts, dtype=torch.float64) / sum(counts)
    uniform = torch.full((num_classes,), 1.0 / num_classes, dtype=torch.float64)
    methods = {}
    for method in display_order(fitted):
        fit = fitted[method]
        logits = {}
        for split in ("val", "test"):
            feats = features[split]
            if fit.backbone is not None:
                feats = split_features(fit.backbone, run.splits, split, config=run.config, device=run.device)
            logits[split] = fit.head.cpu().eval()(feats.x.float()).double()
        # The "implicit prior": Joint's scores are for the training prior, every re-balanced head's
        # roughly for the uniform one.
        implicit = training_prior if method == "joint" else uniform
        val_y = features["val"].y
        methods[method] = MethodScores(
            val=logits["val"],
            test=logits["test"],
            bcts=fit_calibration(logits["val"], val_y, "bcts"),
            temperature=fit_calibration(logits["val"], val_y, "temperature", implicit_prior=implicit),
            plain=identity_calibration(num_classes, implicit),
            bbse=fit_bbse(logits["val"], val_y),
        )
    return RunData(Path(run_dir).name, run.config.seed, counts, features["val"].y, features["test"].y, methods)


def predict(variant: str, scores: MethodScores, logits: torch.Tensor, true_prior: np.ndarray) -> torch.Tensor:
    """(M,) predictions of one variant on a subset's (M, C) logits."""
    if variant == "none":
        return logits.argmax(dim=1)
    calibration = {"em-plain": scores.plain, "known-raw": scores.plain, "em-ts": scores.temperature}.get(
        variant, scores.bcts
    )
    method = {"bcts": "none", "em-plain": "em", "em-ts": "em", "known-raw": "known"}.get(variant, variant)
    return adapt_prior(logits, method, calibration=calibration, target_prior=true_prior, bbse=scores.bbse).predictions()


# --------------------------------------------------------------------------- cells: accuracy and interval


@dataclass
class Cell:
    """Per subsample seed, (C,) right predictions and (C,) images per class."""

    hits: list[np.ndarray]
    sizes: list[np.ndarray]

    def accuracies(self) -> list[float]:
        return [100.0 * h.sum() / s.sum() for h, s in zip(self.hits, self.sizes, strict=True)]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accuracies())

    def interval(self, resamples: int, seed: int = 0) -> tuple[float, float]:
        """95% stratified bootstrap interval of the mean over subsample seeds."""
        rng = np.random.default_rng(seed)
        total = np.zeros(resamples)
        for hits, sizes in zip(self.hits, self.sizes, strict=True):
            rate = np.where(sizes > 0, hits / np.maximum(sizes, 1), 0.0)
            drawn = rng.binomial(np.broadcast_to(sizes, (resamples, len(sizes))), rate)  # (B, C)
            total += 100.0 * drawn.sum(axis=1) / sizes.sum()
        low, high = np.percentile(total / len(self.hits), [2.5, 97.5])
        return float(low), float(high)


def per_class(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    right = (predicted == labels).long()
    hits = torch.zeros(num_classes, dtype=torch.long).index_add_(0, labels, right)
    return hits.numpy(), torch.bincount(labels, minlength=num_classes).numpy()


def score_run(data: RunData, variants: tuple[str, ...], seeds: int) -> dict[str, dict[str, dict[str, Cell]]]:
    """cells[variant][method][shift name]."""
    num_classes = len(data.train_counts)
    cells = {v: {m: {} for m in data.methods} for v in variants}
    for shift in standard_shifts():
        for seed in range(1 if shift.direction == "uniform" else seeds):
            subset = shifted_subset(data.test_labels, data.train_counts, shift, seed=seed)
            index = torch.from_numpy(subset.indices)
            labels = data.test_labels[index]
            for method, scores in data.methods.items():
                logits = scores.test[index]
                for variant in variants:
                    hits, sizes = per_class(predict(variant, scores, logits, subset.prior), labels, num_classes)
                    cell = cells[variant][method].setdefault(shift.name, Cell([], []))
                    cell.hits.append(hits)
                    cell.sizes.append(sizes)
    return cells


# --------------------------------------------------------------------------- EM vs batch size


def batched_em_accuracy(
    scores: MethodScores, logits: torch.Tensor, labels: torch.Tensor, batch: int, pseudo_count: float, seed: int
) -> float:
    """Accuracy (%) of BCTS + EM when the subset is seen in shuffled batches of ``batch`` images (0: at once)."""
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(labels)))
    log_q = scores.bcts.log_posteriors(logits[order])
    labels = labels[order]
    source = scores.bcts.prior_tensor()
    size = batch or len(labels)
    full = len(labels) // size * size
    right = 0
    for start, stop in ((0, full), (full, len(labels))):
        if stop == start:
            continue
        width = min(size, stop - start)
        chunk = log_q[start:stop].reshape(-1, width, log_q.shape[1])  # (B, n, C)
        priors, _, _ = em_priors(chunk, source, pseudo_count=pseudo_count)
        # reweight() batch by batch; the argmax needs no normalisation.
        predicted = (chunk + (priors.log() - source.log()).unsqueeze(1)).argmax(dim=2).reshape(-1)
        right += int((predicted == labels[start:stop]).sum())
    return 100.0 * right / len(labels)


def batch_study(data: RunData, seeds: int) -> dict[float, dict[str, dict[int, dict[str, float]]]]:
    """study[pseudo_count][method][batch][shift] = em accuracy minus none accuracy (points), mean over seeds."""
    study: dict = {a: {m: {b: {} for b in BATCH_SIZES} for m in data.methods} for a in PSEUDO_COUNTS}
    for name in BATCH_SHIFTS:
        shift = Shift.parse(name)
        draws = 1 if shift.direction == "uniform" else seeds
        for method, scores in data.methods.items():
            gains: dict = {(a, b): [] for a in PSEUDO_COUNTS for b in BATCH_SIZES}
            for seed in range(draws):
                subset = shifted_subset(data.test_labels, data.train_counts, shift, seed=seed)
                index = torch.from_numpy(subset.indices)
                logits, labels = scores.test[index], data.test_labels[index]
                base = 100.0 * float((logits.argmax(dim=1) == labels).double().mean())
                for a in PSEUDO_COUNTS:
                    for b in BATCH_SIZES:
                        gains[a, b].append(batched_em_accuracy(scores, logits, labels, b, a, seed) - base)
            for (a, b), values in gains.items():
                study[a][method][b][name] = statistics.fmean(values)
    return study


# --------------------------------------------------------------------------- tables


def shift_names() -> list[str]:
    return [s.name for s in standard_shifts()]


def shifted_mean(row: dict[str, float]) -> float:
    return statistics.fmean(v for k, v in row.items() if k != "uniform")


def table(rows: dict[str, dict[str, str]], columns: list[str], first: str = "method") -> str:
    lines = [f"| {first} | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(row.get(c, "") for c in columns) + " |" for name, row in rows.items()]
    return "\n".join(lines)


def cell_table(cells: dict[str, dict[str, Cell]], resamples: int) -> str:
    rows = {}
    for method, by_shift in cells.items():
        row = {}
        for name, cell in by_shift.items():
            low, high = cell.interval(resamples)
            row[name] = f"{cell.mean:.1f} [{low:.1f}, {high:.1f}]"
        row["shifted mean"] = f"{shifted_mean({k: c.mean for k, c in by_shift.items()}):.2f}"
        rows[method] = row
    return table(rows, [*shift_names(), "shifted mean"])


def means(cells: dict[str, dict[str, Cell]]) -> dict[str, dict[str, float]]:
    return {m: {s: c.mean for s, c in row.items()} for m, row in cells.items()}


def targets(cells: dict[str, dict[str, dict[str, Cell]]]) -> list[str]:
    """The issue's targets on one run: (a) em never more than 0.5 below none; (b) best em vs best none, vs known."""
    none, em, known = means(cells["none"]), means(cells["em"]), means(cells["known"])
    worst = {m: min(em[m][s] - none[m][s] for s in none[m]) for m in none}
    worst_method = min(worst, key=worst.get)
    worst_shift = min(none[worst_method], key=lambda s: em[worst_method][s] - none[worst_method][s])
    best_none = max(none, key=lambda m: shifted_mean(none[m]))
    best_em = max(em, key=lambda m: shifted_mean(em[m]))
    gain = shifted_mean(em[best_em]) - shifted_mean(none[best_none])
    gap = shifted_mean(known[best_em]) - shifted_mean(em[best_em])
    lines = [
        f"- (a) worst em − none over methods and distributions: {worst[worst_method]:+.2f} points "
        f"({worst_method}, {worst_shift}); target ≥ −0.5: {'met' if worst[worst_method] >= -0.5 else 'NOT met'}.",
        "  Per method, the worst em − none: " + ", ".join(f"{m} {v:+.2f}" for m, v in worst.items()) + ".",
        f"- (b) best with none: {best_none} {shifted_mean(none[best_none]):.2f}; best with em: {best_em} "
        f"{shifted_mean(em[best_em]):.2f} (mean of the 10 shifted distributions): gain {gain:+.2f} points "
        f"(target ≥ +1.5: {'met' if gain >= 1.5 else 'NOT met'}); known for {best_em} "
        f"{shifted_mean(known[best_em]):.2f}, em {gap:.2f} below it (target ≤ 1.0: "
        f"{'met' if gap <= 1.0 else 'NOT met'}).",
    ]
    return lines


def over_runs(per_run: list[dict[str, dict[str, dict[str, Cell]]]], variant: str) -> str:
    """Mean ± std over training seeds of each cell's mean."""
    methods = list(per_run[0][variant])
    rows = {}
    for method in methods:
        row = {}
        for name in [*shift_names(), "shifted mean"]:
            if name == "shifted mean":
                values = [shifted_mean(means(c[variant])[method]) for c in per_run if method in c[variant]]
            else:
                values = [c[variant][method][name].mean for c in per_run if method in c[variant]]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            row[name] = f"{statistics.fmean(values):.1f} ± {spread:.1f}"
        rows[method] = row
    return table(rows, [*shift_names(), "shifted mean"])


def batch_tables(study: dict, best: str) -> list[str]:
    out = []
    for a, by_method in study.items():
        rows = {}
        for b in BATCH_SIZES:
            row = {name: f"{by_method[best][b][name]:+.2f}" for name in BATCH_SHIFTS}
            average = {name: statistics.fmean(by_method[m][b][name] for m in by_method) for name in BATCH_SHIFTS}
            worst = {name: min(by_method[m][b][name] for m in by_method) for name in BATCH_SHIFTS}
            row["all methods: mean"] = f"{statistics.fmean(average.values()):+.2f}"
            row["all methods: worst cell"] = f"{min(worst.values()):+.2f}"
            rows[str(b) if b else "all"] = row
        out.append(
            f"EM pseudo-count α = {a:g}. Cells: em − none for **{best}** (points); the last two columns: mean of "
            f"em − none over every method and the {len(BATCH_SHIFTS)} distributions, and the worst single "
            "(method, distribution).\n\n"
            + table(rows, [*BATCH_SHIFTS, "all methods: mean", "all methods: worst cell"], first="batch")
        )
    return out


def calibration_table(data: RunData) -> str:
    rows = {}
    for method, scores in data.methods.items():
        cal = scores.bcts
        rows[method] = {
            "T (bcts)": f"{cal.temperature:.3f}",
            "bias range (bcts)": f"{min(cal.bias):+.2f} … {max(cal.bias):+.2f}",
            "val NLL raw → bcts": f"{cal.nll_before:.3f} → {cal.nll_after:.3f}",
            "T (temperature)": f"{scores.temperature.temperature:.3f}",
            "val NLL → temperature": f"{scores.temperature.nll_after:.3f}",
        }
    columns = ["T (bcts)", "bias range (bcts)", "val NLL raw → bcts", "T (temperature)", "val NLL → temperature"]
    return table(rows, columns)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (the first one gets the diagnostics)")
    parser.add_argument("--doc", type=Path, help="Markdown file to write")
    parser.add_argument("--subsample-seeds", type=int, default=5, help="draws of each shifted subset (default 5)")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples per cell (default 1000)")
    parser.add_argument("--no-batch-study", action="store_true", help="skip EM accuracy vs batch size")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    start = time.perf_counter()
    per_run, sections = [], []
    first: RunData | None = None
    diagnostics = None
    for index, run_dir in enumerate(args.runs):
        data = read_run(run_dir)
        variants = MAIN_VARIANTS + (DIAGNOSTIC_VARIANTS if index == 0 else ())
        cells = score_run(data, variants, args.subsample_seeds)
        per_run.append({v: cells[v] for v in MAIN_VARIANTS})
        text = [f"### training seed {data.seed} (`{run_dir}`)\n", *targets(cells), ""]
        for variant in MAIN_VARIANTS:
            text += [f"**{variant}**\n", cell_table(cells[variant], args.resamples), ""]
        section = "\n".join(text)
        print(section, flush=True)
        sections.append(section)
        if index == 0:
            first, diagnostics = data, cells
    assert first is not None and diagnostics is not None
    summary = []
    for variant in MAIN_VARIANTS:
        summary += [f"**{variant}**\n", over_runs(per_run, variant), ""]
    diag = ["### Calibration fitted on validation (first run)\n", calibration_table(first), ""]
    for variant in DIAGNOSTIC_VARIANTS:
        diag += [f"**{variant}**\n", cell_table(diagnostics[variant], args.resamples), ""]
    batch = []
    if not args.no_batch_study:
        study = batch_study(first, args.subsample_seeds)
        best = max(means(diagnostics["em"]), key=lambda m: shifted_mean(means(diagnostics["em"])[m]))
        batch = ["### EM accuracy vs batch size (first run)\n", *batch_tables(study, best)]
    seconds = time.perf_counter() - start
    header = (
        "# Label shift at test time, measured\n\n"
        f"Generated by `benchmarks/label_shift.py {' '.join(map(str, args.runs))} --subsample-seeds "
        f"{args.subsample_seeds} --resamples {args.resamples}` in {seconds:.0f} s. {machine_line(load)}\n"
    )
    body = "\n".join(
        [
            header,
            "## Mean ± std over training seeds\n",
            *summary,
            "## Per training seed\n",
            *sections,
            "## Diagnostics\n",
            *diag,
            *batch,
        ]
    )
    print("\n".join(summary + diag + batch))
    if args.doc:
        args.doc.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.doc, body + "\n")
        print(f"written {args.doc}")


if __name__ == "__main__":
    main()
