"""Label shift at test time: every method of a run on SADE's 11 test distributions, with prior adaptation.

For each run directory (a finished ``longtail demo`` or ``decouple --method all``
run), every classifier (Joint and each stage-2 method) is scored on the
balanced test set and on its forward-F / backward-F subsets (F = 2, 5, 10, 25,
50; :mod:`longtail.shift.subsets`), each drawn ``--subsample-seeds`` times, with
``none`` (the method's argmax), ``em`` (power family), ``em-full`` (Saerens),
``known`` (the true prior) and ``bbse``, all through the method's
:class:`~longtail.shift.PriorAdapter` fitted on the validation split (see
METHOD_NOTE below for the details written into the document).

Diagnostics on the first run: the issue's plain EM, BCTS + full EM without the
validation check (Alexandari et al.'s recipe), the prior estimates' errors, and
EM accuracy against the size of the batch it sees.

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
from _doc import machine_line, write_section  # noqa: E402

from longtail.fs.atomic import write_text_atomic  # noqa: E402
from longtail.methods import display_order  # noqa: E402
from longtail.pipeline.run_state import load_run, split_features  # noqa: E402
from longtail.pipeline.stage2 import load_fitted, run_features  # noqa: E402
from longtail.shift import (  # noqa: E402
    Adapted,
    Calibration,
    PriorAdapter,
    Shift,
    adapt_prior,
    fit_calibration,
    fit_prior_adapter,
    identity_calibration,
    shifted_subset,
    standard_shifts,
)
from longtail.shift.em import em_priors  # noqa: E402

MAIN_VARIANTS = ("none", "em", "em-full", "known", "bbse")
DIAGNOSTIC_VARIANTS = ("em-plain", "em-bcts", "em-unchecked", "known-unchecked", "known-bcts")
ESTIMATORS = ("em", "em-full", "em-bcts", "bbse")  # whose prior estimates are compared with the truth
BATCH_SIZES = (16, 64, 256, 1024, 0)  # 0: the whole subset
BATCH_SHIFTS = ("forward-50", "forward-10", "uniform", "backward-10", "backward-50")
BATCH_SETTINGS = (("power", 0.0), ("full", 0.0), ("full", 100.0))  # EM family, pseudo-count

METHOD_NOTE = """Every classifier of each run (Joint and each stage-2 method; `auto` is the method chosen on validation)
is scored on the balanced test set (`uniform`) and on SADE's shifted subsets of it (`forward-F`: class sizes
following the training order with imbalance F, the largest class keeping all its test images; `backward-F`:
reversed), each shifted subset drawn {seeds} times (subsample seeds 0 to {last}).

Per method, `fit_prior_adapter` is fitted on the validation split alone (20 images per class in the demo):
the calibration (temperature, PCTS = temperature + β·log π_train, or BCTS = temperature + one bias per class)
chosen by 5-fold out-of-fold NLL (the simplest kind within one standard error of the lowest), and a check
that moving its out-of-fold posteriors to SADE's shifted priors raises the importance-weighted validation
accuracy on average; where it does not, adaptation is off for that method and its predictions stay its own.
Rows:

- `none`: the method's own argmax, as `longtail eval` reports it today;
- `em`: calibrated, then EM on the unlabeled subset over the power family π_v·π_train^θ (forward and backward
  long tails), started from the validation class shares, then the Bayes adjustment to the estimate;
- `em-full`: the same with Saerens' EM over the whole simplex;
- `known`: calibrated, adjusted to the subset's true class shares (an oracle: the ceiling of `em`);
- `bbse`: calibrated, adjusted to the prior BBSE estimates (validation confusion matrix of the method's
  argmax, least squares, clipped at 0).

A cell is the micro top-1 accuracy (%) averaged over the subsample seeds, with the 95% stratified bootstrap
interval of that mean (each seed's subset resampled within class, predictions held fixed: the interval is
about which test images were seen, not about EM's own variability). `shifted mean`: the mean over the 10
shifted distributions. Across training seeds: mean ± standard deviation of the cell means."""

DIAGNOSTIC_NOTE = """- `em-plain`: the issue's first attempt: the raw softmax taken as posteriors for the method's
  implicit prior (the training prior for Joint, uniform for the others), Saerens' EM, no check;
- `em-bcts`: BCTS on validation (always), Saerens' EM, no check (Alexandari et al. 2020's recipe);
- `em-unchecked`: `em` with the validation check ignored (adaptation forced on for every method);
- `known-unchecked`: `known` with the validation check ignored: the true prior applied to every method's
  calibrated scores, the ceiling of any prior estimate with this calibration;
- `known-bcts`: BCTS, adjusted to the true prior (the oracle of `em-bcts`)."""

BATCH_NOTE = """EM estimates the prior from the images it is given. Here each subset is shuffled (per subsample seed)
and cut into batches of the given size; EM runs on each batch alone (the remainder forms one smaller batch),
and the accuracy is over the whole subset. Calibration and the validation check as in `em`. α is the Dirichlet
pseudo-count of `em_prior(pseudo_count=α)`: α pseudo-images of the validation prior added to every M-step."""


@dataclass
class MethodScores:
    """One classifier's raw logits and what was fitted for it on validation."""

    val: torch.Tensor  # (N_val, C)
    test: torch.Tensor  # (N_test, C)
    adapter: PriorAdapter
    bcts: Calibration  # for the em-bcts diagnostic
    plain: Calibration  # identity, posteriors taken for the method's implicit prior (em-plain)


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
    """Every classifier's val and test logits, and what is fitted on validation for it."""
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
            adapter=fit_prior_adapter(logits["val"], val_y, counts),
            bcts=fit_calibration(logits["val"], val_y, "bcts"),
            plain=identity_calibration(num_classes, implicit),
        )
    return RunData(Path(run_dir).name, run.config.seed, counts, features["val"].y, features["test"].y, methods)


def adapted(variant: str, scores: MethodScores, logits: torch.Tensor, true_prior: np.ndarray) -> Adapted:
    """One variant's adaptation of a subset's (M, C) logits."""
    adapter = scores.adapter
    if variant in ("none", "em", "known", "bbse"):
        return adapter.adapt(logits, variant, target_prior=true_prior)  # type: ignore[arg-type]
    if variant == "em-full":
        return adapter.adapt(logits, "em", family="full")
    if variant == "em-unchecked":
        return adapter.adapt(logits, "em", force=True)
    if variant == "known-unchecked":
        return adapter.adapt(logits, "known", target_prior=true_prior, force=True)
    calibration = scores.plain if variant == "em-plain" else scores.bcts
    method = "known" if variant == "known-bcts" else "em"
    return adapt_prior(logits, method, calibration=calibration, target_prior=true_prior)


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


def score_run(
    data: RunData, variants: tuple[str, ...], seeds: int
) -> tuple[dict[str, dict[str, dict[str, Cell]]], dict[str, dict[str, list[float]]]]:
    """cells[variant][method][shift name], and errors[estimator][method]: total-variation distance (points)
    between the estimated and the true prior on every shifted subset."""
    num_classes = len(data.train_counts)
    cells: dict = {v: {m: {} for m in data.methods} for v in variants}
    errors: dict = {v: {m: [] for m in data.methods} for v in ESTIMATORS if v in variants}
    for shift in standard_shifts():
        for seed in range(1 if shift.direction == "uniform" else seeds):
            subset = shifted_subset(data.test_labels, data.train_counts, shift, seed=seed)
            index = torch.from_numpy(subset.indices)
            labels = data.test_labels[index]
            for method, scores in data.methods.items():
                logits = scores.test[index]
                for variant in variants:
                    out = adapted(variant, scores, logits, subset.prior)
                    hits, sizes = per_class(out.predictions(), labels, num_classes)
                    cell = cells[variant][method].setdefault(shift.name, Cell([], []))
                    cell.hits.append(hits)
                    cell.sizes.append(sizes)
                    if variant in errors and shift.direction != "uniform":
                        distance = 50.0 * float((out.prior - torch.as_tensor(subset.prior)).abs().sum())
                        errors[variant][method].append(distance)
    return cells, errors


# --------------------------------------------------------------------------- EM vs batch size


def batched_em_accuracy(
    scores: MethodScores, logits: torch.Tensor, labels: torch.Tensor, batch: int, setting: tuple, seed: int
) -> float:
    """Accuracy (%) of ``em`` when the subset is seen in shuffled batches of ``batch`` images (0: at once)."""
    family, pseudo_count = setting
    adapter = scores.adapter
    if not adapter.enabled:  # the validation check keeps this method's own predictions
        return 100.0 * float((logits.argmax(dim=1) == labels).double().mean())
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(labels)))
    log_q = adapter.calibration.log_posteriors(logits[order])
    labels = labels[order]
    source = adapter.calibration.prior_tensor()
    direction = adapter.direction if family == "power" else None
    size = batch or len(labels)
    full = len(labels) // size * size
    right = 0
    for start, stop in ((0, full), (full, len(labels))):
        if stop == start:
            continue
        chunk = log_q[start:stop].reshape(-1, min(size, stop - start), log_q.shape[1])  # (B, n, C)
        priors, _, _ = em_priors(chunk, source, pseudo_count=pseudo_count, direction=direction)
        # reweight() batch by batch; the argmax needs no normalisation.
        predicted = (chunk + (priors.log() - source.log()).unsqueeze(1)).argmax(dim=2).reshape(-1)
        right += int((predicted == labels[start:stop]).sum())
    return 100.0 * right / len(labels)


def batch_study(data: RunData, seeds: int) -> dict:
    """study[setting][method][batch][shift] = em accuracy minus none accuracy (points), mean over seeds."""
    study: dict = {st: {m: {b: {} for b in BATCH_SIZES} for m in data.methods} for st in BATCH_SETTINGS}
    for name in BATCH_SHIFTS:
        shift = Shift.parse(name)
        draws = 1 if shift.direction == "uniform" else seeds
        for method, scores in data.methods.items():
            gains: dict = {(st, b): [] for st in BATCH_SETTINGS for b in BATCH_SIZES}
            for seed in range(draws):
                subset = shifted_subset(data.test_labels, data.train_counts, shift, seed=seed)
                index = torch.from_numpy(subset.indices)
                logits, labels = scores.test[index], data.test_labels[index]
                base = 100.0 * float((logits.argmax(dim=1) == labels).double().mean())
                for st in BATCH_SETTINGS:
                    for b in BATCH_SIZES:
                        gains[st, b].append(batched_em_accuracy(scores, logits, labels, b, st, seed) - base)
            for (st, b), values in gains.items():
                study[st][method][b][name] = statistics.fmean(values)
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


def targets(cells: dict[str, dict[str, dict[str, Cell]]], variant: str = "em") -> list[str]:
    """The issue's targets for ``variant`` on one run: (a) never more than 0.5 below none; (b) best of it vs best
    none (+1.5), and vs known (within 1.0), on the mean of the 10 shifted distributions."""
    return target_lines(means(cells["none"]), means(cells[variant]), means(cells["known"]), variant)


def target_lines(none: dict, em: dict, known: dict, variant: str) -> list[str]:
    worst = {m: min(em[m][s] - none[m][s] for s in none[m]) for m in none}
    worst_method = min(worst, key=worst.get)
    worst_shift = min(none[worst_method], key=lambda s: em[worst_method][s] - none[worst_method][s])
    best_none = max(none, key=lambda m: shifted_mean(none[m]))
    best_em = max(em, key=lambda m: shifted_mean(em[m]))
    gain = shifted_mean(em[best_em]) - shifted_mean(none[best_none])
    gap = shifted_mean(known[best_em]) - shifted_mean(em[best_em])
    return [
        f"- `{variant}` (a) worst {variant} − none over methods and distributions: {worst[worst_method]:+.2f} points "
        f"({worst_method}, {worst_shift}); target ≥ −0.5: {'met' if worst[worst_method] >= -0.5 else 'NOT met'}. "
        "Per method: " + ", ".join(f"{m} {v:+.2f}" for m, v in worst.items()) + ".",
        f"- `{variant}` (b) best with none: {best_none} {shifted_mean(none[best_none]):.2f}; best with {variant}: "
        f"{best_em} {shifted_mean(em[best_em]):.2f} (mean of the 10 shifted distributions): gain {gain:+.2f} points "
        f"(target ≥ +1.5: {'met' if gain >= 1.5 else 'NOT met'}); known for {best_em} "
        f"{shifted_mean(known[best_em]):.2f}, {variant} {gap:.2f} below it (target ≤ 1.0: "
        f"{'met' if gap <= 1.0 else 'NOT met'}).",
    ]


def mean_targets(per_run: list[dict], variant: str) -> list[str]:
    """:func:`target_lines` on the cell means averaged over training seeds."""
    averaged = {}
    for v in ("none", variant, "known"):
        averaged[v] = {
            m: {s: statistics.fmean(means(run[v])[m][s] for run in per_run) for s in shift_names()}
            for m in per_run[0][v]
        }
    return target_lines(averaged["none"], averaged[variant], averaged["known"], variant)


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
            mean = statistics.fmean(values)
            row[name] = f"{mean:.1f} ± {statistics.stdev(values):.1f}" if len(values) > 1 else f"{mean:.1f}"
        rows[method] = row
    return table(rows, [*shift_names(), "shifted mean"])


def difference_table(per_run: list[dict[str, dict[str, dict[str, Cell]]]], variant: str = "em") -> str:
    """``variant`` − none per method and distribution (points): each run's difference of cell means, then the
    mean ± std over training seeds (the mean alone with one seed)."""
    rows = {}
    for method in per_run[0][variant]:
        row = {}
        for name in [*shift_names(), "shifted mean"]:
            values = []
            for run in per_run:
                em, none = means(run[variant])[method], means(run["none"])[method]
                values.append(
                    shifted_mean(em) - shifted_mean(none) if name == "shifted mean" else em[name] - none[name]
                )
            mean = statistics.fmean(values)
            row[name] = f"{mean:+.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{mean:+.2f}"
        rows[method] = row
    return table(rows, [*shift_names(), "shifted mean"])


def batch_tables(study: dict, best: str) -> list[str]:
    out = []
    for (family, alpha), by_method in study.items():
        rows = {}
        for b in BATCH_SIZES:
            row = {name: f"{by_method[best][b][name]:+.2f}" for name in BATCH_SHIFTS}
            average = {name: statistics.fmean(by_method[m][b][name] for m in by_method) for name in BATCH_SHIFTS}
            worst = {name: min(by_method[m][b][name] for m in by_method) for name in BATCH_SHIFTS}
            row["all methods: mean"] = f"{statistics.fmean(average.values()):+.2f}"
            row["all methods: worst cell"] = f"{min(worst.values()):+.2f}"
            rows[str(b) if b else "all"] = row
        out.append(
            f"**EM family {family}, pseudo-count α = {alpha:g}.** Cells: em − none for **{best}** (points); the "
            f"last two columns: mean of em − none over every method and the {len(BATCH_SHIFTS)} distributions, "
            "and the worst single (method, distribution).\n\n"
            + table(rows, [*BATCH_SHIFTS, "all methods: mean", "all methods: worst cell"], first="batch")
            + "\n"
        )
    return out


def calibration_table(data: RunData) -> str:
    rows = {}
    for method, scores in data.methods.items():
        adapter = scores.adapter
        cal = adapter.calibration
        shape = f"β = {cal.exponent:+.2f}" if cal.kind == "pcts" else ""
        if cal.kind == "bcts":
            shape = f"bias {min(cal.bias):+.2f} … {max(cal.bias):+.2f}"
        rows[method] = {
            "chosen": cal.kind,
            "T": f"{cal.temperature:.3f}",
            "bias": shape,
            "5-fold NLL: temperature / pcts / bcts": " / ".join(f"{v:.3f}" for v in adapter.cv_nll.values()),
            "val-simulated gain (points)": f"{statistics.fmean(adapter.shift_gain.values()):+.2f}",
            "adaptation": "on" if adapter.enabled else "**off**",
        }
    columns = list(next(iter(rows.values())))
    return table(rows, columns)


def error_table(errors: dict[str, dict[str, list[float]]]) -> str:
    rows = {m: {v: f"{statistics.fmean(errors[v][m]):.1f}" for v in errors} for m in next(iter(errors.values()))}
    return table(rows, list(errors))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (the first one gets the diagnostics)")
    parser.add_argument("--doc", type=Path, help="Markdown file to write")
    parser.add_argument("--subsample-seeds", type=int, default=5, help="draws of each shifted subset (default 5)")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples per cell (default 1000)")
    parser.add_argument("--no-batch-study", action="store_true", help="skip EM accuracy vs batch size")
    args = parser.parse_args()
    torch.set_num_threads(1)  # small tensors: threads only contend (EM steps were 100x slower on 2 busy cores)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    per_run, sections = [], []
    first: RunData | None = None
    diagnostics = first_errors = None
    for index, run_dir in enumerate(args.runs):
        data = read_run(run_dir)
        variants = MAIN_VARIANTS + (DIAGNOSTIC_VARIANTS if index == 0 else ())
        cells, errors = score_run(data, variants, args.subsample_seeds)
        per_run.append({v: cells[v] for v in MAIN_VARIANTS})
        text = [f"### training seed {data.seed} (`{run_dir}`)\n", *targets(cells), *targets(cells, "em-full"), ""]
        for variant in MAIN_VARIANTS:
            text += [f"**{variant}**\n", cell_table(cells[variant], args.resamples), ""]
        text += ["**em − none** (points, mean over the subsample seeds)\n", difference_table([cells]), ""]
        section = "\n".join(text)
        print(section, flush=True)
        sections.append(section)
        if index == 0:
            first, diagnostics, first_errors = data, cells, errors
    assert first is not None and diagnostics is not None and first_errors is not None
    summary = ["Targets on the cell means averaged over training seeds:\n", *mean_targets(per_run, "em"), ""]
    summary += ["**em − none** (points; per training seed the difference of the cell means)\n"]
    summary += [difference_table(per_run), ""]
    for variant in MAIN_VARIANTS:
        summary += [f"**{variant}**\n", over_runs(per_run, variant), ""]
    diag = ["### What was fitted on validation\n", calibration_table(first), ""]
    diag += [
        "### Error of the prior estimates\n",
        "Total-variation distance between the estimated and the true prior (points: 100 × ½ Σ|π̂ − π|), mean "
        "over the shifted subsets.\n",
        error_table(first_errors),
        "",
        "### Other recipes\n",
        DIAGNOSTIC_NOTE,
        "",
    ]
    for variant in DIAGNOSTIC_VARIANTS:
        diag += [f"**{variant}**\n", cell_table(diagnostics[variant], args.resamples), ""]
    batch = []
    if not args.no_batch_study:
        study = batch_study(first, args.subsample_seeds)
        best = max(means(diagnostics["em"]), key=lambda m: shifted_mean(means(diagnostics["em"])[m]))
        batch = [BATCH_NOTE, *batch_tables(study, best)]
    seconds = time.perf_counter() - start
    generated = {
        "## How it was measured": (
            f"Generated by `benchmarks/label_shift.py {' '.join(map(str, args.runs))} --subsample-seeds "
            f"{args.subsample_seeds} --resamples {args.resamples}` in {seconds:.0f} s. {machine_line(load)}\n\n"
            + METHOD_NOTE.format(seeds=args.subsample_seeds, last=args.subsample_seeds - 1)
        ),
        "## Mean ± std over training seeds": "\n".join(summary),
        "## Per training seed": "\n".join(sections),
        "## Diagnostics (first run)": "\n".join(diag),
        "## EM accuracy vs batch size (first run)": "\n".join(batch),
    }
    print("\n".join(summary + diag + batch))
    if args.doc:
        args.doc.parent.mkdir(parents=True, exist_ok=True)
        if not args.doc.is_file():
            write_text_atomic(args.doc, "# Label shift at test time, measured\n")
        for heading, text in generated.items():
            if text:  # a section the hand-written text keeps (e.g. "## Findings") is left alone
                write_section(args.doc, heading, f"{heading}\n\n{text.strip()}\n")
        print(f"written {args.doc}")


if __name__ == "__main__":
    main()
