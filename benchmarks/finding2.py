"""Finding 2 on trial: is the instance-balanced representation the best to decouple from, on our data?

On the demo profile (``configs/fashion_mnist_lt.yaml``: Fashion-MNIST-LT
1000 -> 10, ResNet-8, 80 epochs, weight decay 5e-3) stage 1 is trained once
per representation (instance-, progressively- and, if asked, class-balanced
sampling) and training seed (``seed=N``; ``data.seed`` fixed), then decoupled
with every stage-2 method and ``auto`` (the best method and hyper-parameters on
validation). For each representation it reports per seed and as mean ± sample
std: Joint and the best decoupled classifier (chosen on validation), the
paired bootstrap of the best decoupled classifiers of two representations on
the same test images (``longtail compare --paired`` machinery), and what the
demo's recipe chosen on validation (instance vs progressive) picks per seed.
``--profile grid`` does the same on the paper grid's profile (``longtail grid``'s
defaults: 5000 -> 50, 20 epochs, weight decay 5e-4) and writes it as its own
section of the same page (runs ``inst20_s0`` ...).

Runs live in ``--runs`` as ``<rep><epochs>_s<seed>`` (``inst80_s0``,
``prog80_s1``, ``class80_s2``); a finished run is reused, an interrupted one
resumed, a missing one trained only with ``--train``. Stage 2 is refit where
its settings changed (``overwrite``), reused where they did not.

    PYTHONPATH=src .venv/bin/python benchmarks/finding2.py --runs /tmp/f2 --train --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _doc import machine_line, write_section  # noqa: E402

from longtail.config import load_config  # noqa: E402
from longtail.evaluation.compare import paired_rows  # noqa: E402
from longtail.fs.atomic import write_text_atomic  # noqa: E402
from longtail.grid.auto import file_run_time  # noqa: E402
from longtail.grid.run import GRID_DEFAULTS  # noqa: E402
from longtail.pipeline import decouple, resume, train  # noqa: E402
from longtail.runs import is_run_dir, read_results  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "fashion_mnist_lt.yaml"
DOC = ROOT / "docs" / "results" / "finding2.md"
SHORT = {"instance": "inst", "progressive": "prog", "class": "class", "sqrt": "sqrt"}
LABEL = {"instance": "Instance-balanced", "progressive": "Progressively-balanced", "class": "Class-balanced"}
GRID_HEADING = "## The 5000 → 50 profile (the paper grid's)"
PROFILES = {"demo": [], "grid": list(GRID_DEFAULTS)}  # overrides after the demo config
TARGET = 85.1  # issue 24: the validation-chosen result of `make demo`, mean over seeds 0-2
# The paper's numbers (Kang et al. 2020, official README; /work/shared/DESIGN.md §4), ImageNet-LT ResNeXt-50, all.
PAPER = (
    "ImageNet-LT, ResNeXt-50, 90 epochs, top-1 (all) as the paper reports it (not measured here): "
    "instance-balanced Joint 44.4, then NCM 47.3, cRT 49.6, τ-norm 49.4, LWS 49.9; joint training with "
    "class-balanced 45.1, square-root 46.8, progressively-balanced 47.2. The paper's Figure 1 has the "
    "instance-balanced representation give the best decoupled classifiers."
)


def run_dir(runs: Path, rep: str, seed: int, epochs: int) -> Path:
    return runs / f"{SHORT[rep]}{epochs}_s{seed}"


def ensure(path: Path, rep: str, seed: int, allow_train: bool, base: list[str]) -> dict[str, Any] | None:
    """The decoupled results of one run (trained, resumed or reused), or None when it is missing."""
    config = load_config(CONFIG, [*base, f"train.sampler={rep}", f"seed={seed}"])
    if not is_run_dir(path):
        if not allow_train:
            return None
        print(f"training {path}", flush=True)
        train(config, path, progress=False)
    elif "joint" not in read_results(path).get("methods", {}):
        print(f"resuming {path}", flush=True)
        resume(path, progress=False)
    print(f"decoupling {path}", flush=True)
    return decouple(path, ["all", "auto"], file_run_time(CONFIG), overwrite=True)


def scores(results: dict[str, Any]) -> dict[str, Any]:
    methods, val = results["methods"], results["val_methods"]
    return {
        "joint_val": val["joint"]["macro"],
        "joint": methods["joint"]["macro"],
        "best_val": val["auto"]["macro"],
        "best": methods["auto"]["macro"],
        "best_ci": methods["auto"].get("ci", {}).get("macro"),
        "method": results["auto"]["chosen"]["label"],
    }


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.fmean(values):.1f} ± {statistics.stdev(values):.1f}"


def paired(a: Path, b: Path) -> str:
    """A − B of the two runs' ``auto`` classifiers by paired bootstrap on the same test images."""
    row = paired_rows([], f"{a}:auto", f"{b}:auto")[0]
    result = row.result
    low, high = result["ci"]
    verdict = "within noise" if low <= 0 <= high else ("A better" if low > 0 else "B better")
    return f"{result['difference']:+.1f} [{low:+.1f}, {high:+.1f}] ({verdict})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, required=True, help="directory of the runs (<rep><epochs>_s<seed>)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--reps", nargs="+", default=["instance", "progressive", "class"])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="demo", help="demo (1000 -> 10) or grid")
    parser.add_argument("--train", action="store_true", help="train the missing runs")
    parser.add_argument("--out", type=Path, default=DOC)
    parser.add_argument("--note", default="", help="a paragraph written under the header (how the runs were made)")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    base = PROFILES[args.profile]
    epochs = load_config(CONFIG, base).train.epochs
    table: dict[str, dict[int, dict[str, Any]]] = {}
    for rep in args.reps:
        for seed in args.seeds:
            results = ensure(run_dir(args.runs, rep, seed, epochs), rep, seed, args.train, base)
            if results is not None:
                table.setdefault(rep, {})[seed] = scores(results)
    reps = [rep for rep in args.reps if rep in table]
    command = (
        f"`PYTHONPATH=src .venv/bin/python benchmarks/finding2.py --runs RUNS --profile {args.profile} "
        f"--seeds {' '.join(map(str, args.seeds))} --reps {' '.join(args.reps)}`"
    )
    note = [args.note, ""] if args.note else []
    if args.profile == "grid":
        lines = [
            GRID_HEADING,
            "",
            f"Generated by {command}: the paper grid's profile (`longtail grid`'s defaults: Fashion-MNIST-LT "
            f"5000 → 50, 12,406 training images, ResNet-8, {epochs} epochs, weight decay 5e-4), otherwise as "
            f"above. {machine_line(load)}",
            "",
            *note,
            *result_tables(table, reps, args.runs, epochs, "###"),
            *reading(table, reps, "the 5000 → 50 profile", "###"),
        ]
        write_section(args.out, GRID_HEADING, "\n".join(lines))
        print("\n".join(lines))
        return
    lines = [
        "# Finding 2 on trial: which representation to decouple from",
        "",
        f"Generated by {command}. The demo profile "
        f"(`configs/fashion_mnist_lt.yaml`: Fashion-MNIST-LT 1000 → 10, ResNet-8, {epochs} epochs, weight decay "
        "5e-3), stage 1 with each sampler, training seeds varied, data subset fixed (`data.seed=0`); each run "
        "decoupled with every stage-2 method and `auto` (stage-2 heads with `batch_size=auto`). *Best decoupled* "
        "is `auto`: the method and hyper-parameters best on validation macro, never test. Top-1 macro %, full "
        f"test set (10,000 images); 95% stratified bootstrap intervals. {machine_line(load)}",
        "",
        *note,
        *result_tables(table, reps, args.runs, epochs, "##"),
        *demo_choice(table, args.seeds),
        "",
        "## The paper's numbers, beside ours",
        "",
        PAPER,
        "",
        *reading(table, reps, "the demo profile, 1000 → 10", "##"),
        "",
    ]
    kept = grid_section(args.out)  # the 5000 -> 50 profile is written by its own invocation
    write_text_atomic(args.out, "\n".join(lines) + (f"\n{kept}" if kept else ""))
    print("\n".join(lines))


def result_tables(
    table: dict[str, dict[int, dict[str, Any]]], reps: list[str], runs: Path, epochs: int, level: str
) -> list[str]:
    """Per seed, mean ± std over seeds, and the paired bootstrap against instance-balanced, headed ``level``."""
    lines = [
        f"{level} Per seed",
        "",
        "| Stage-1 sampling | Seed | Joint (test) | Best decoupled, chosen on val | Val | Test [95% CI] |",
        "|---|---|---|---|---|---|",
    ]
    for rep in reps:
        for seed, s in table[rep].items():
            ci = f" [{s['best_ci'][0]:.1f}, {s['best_ci'][1]:.1f}]" if s["best_ci"] else ""
            lines.append(
                f"| {LABEL.get(rep, rep)} | {seed} | {s['joint']:.1f} | {s['method']} | {s['best_val']:.1f} | "
                f"{s['best']:.1f}{ci} |"
            )
    lines += [
        "",
        f"{level} Mean ± sample std over seeds",
        "",
        "| Stage-1 sampling | n | Joint (test) | Best decoupled (val) | Best decoupled (test) |",
        "|---|---|---|---|---|",
    ]
    for rep in reps:
        done = list(table[rep].values())
        lines.append(
            f"| {LABEL.get(rep, rep)} | {len(done)} | {mean_std([r['joint'] for r in done])} | "
            f"{mean_std([r['best_val'] for r in done])} | {mean_std([r['best'] for r in done])} |"
        )
    lines += ["", f"{level} Paired bootstrap of the best decoupled classifiers (A − B, test macro, points)", ""]
    lines += ["| A | B | Seed | A − B [95% interval] |", "|---|---|---|---|"]
    for rep in reps:
        if rep == "instance" or "instance" not in table:
            continue
        for seed in table[rep]:
            if seed in table["instance"]:
                a, b = run_dir(runs, rep, seed, epochs), run_dir(runs, "instance", seed, epochs)
                lines.append(f"| {LABEL[rep]} | Instance-balanced | {seed} | {paired(a, b)} |")
    return [*lines, ""]


def grid_section(doc: Path) -> str:
    """The 5000 -> 50 profile's section of ``doc`` as it stands ('' when there is none)."""
    text = doc.read_text() if doc.is_file() else ""
    return text[text.index(GRID_HEADING) :] if GRID_HEADING in text else ""


def demo_choice(table: dict[str, dict[int, dict[str, Any]]], seeds: list[int]) -> list[str]:
    """What the demo's recipe chosen on validation (instance vs progressive stage 1) picks, per seed."""
    pair = [rep for rep in ("instance", "progressive") if rep in table]
    both = [seed for seed in seeds if all(seed in table[rep] for rep in pair)]
    if len(pair) < 2 or not both:
        return ["The demo's choice needs instance- and progressively-balanced runs of the same seeds."]
    picks = []
    for seed in both:
        rep = max(pair, key=lambda r: table[r][seed]["best_val"])  # validation only
        picks.append((seed, rep, table[rep][seed]))
    tests = [s["best"] for _, _, s in picks]
    mean = statistics.fmean(tests)
    cells = "; ".join(
        f"seed {seed}: {rep} + {s['method']}, val {s['best_val']:.1f}, test {s['best']:.1f}" for seed, rep, s in picks
    )
    met = "met" if mean >= TARGET else f"not met, {TARGET - mean:.1f} points short"
    return [
        "## What the demo's recipe chosen on validation picks",
        "",
        f"`longtail demo` chooses between instance- and progressively-balanced stage 1 on validation ({cells}). "
        f"Its test macro over seeds {', '.join(map(str, both))}: **{mean_std(tests)}**; issue 24's target "
        f"{TARGET} (mean over seeds 0-2): {met}.",
    ]


def reading(table: dict[str, dict[int, dict[str, Any]]], reps: list[str], profile: str, level: str) -> list[str]:
    """Where the finding holds and where not, computed from the means (noise: the spreads over seeds)."""
    if "instance" not in table or len(reps) < 2:
        return [f"{level} Reading", "", "The reading needs the instance-balanced row and another."]
    best = {rep: statistics.fmean(r["best"] for r in table[rep].values()) for rep in reps}
    spread = {
        rep: statistics.stdev([r["best"] for r in table[rep].values()]) if len(table[rep]) > 1 else 0.0 for rep in reps
    }
    winner = max(reps, key=best.get)
    gap = best[winner] - best["instance"]
    noise = spread[winner] + spread["instance"]
    if winner == "instance":
        text = "the instance-balanced representation gives the best decoupled classifier: Finding 2 **holds** here"
    else:
        within = " (within the seed spreads)" if gap <= noise else ""
        text = (
            f"the {LABEL[winner].lower()} representation gives the best decoupled classifier, {gap:+.1f} points "
            f"over instance-balanced{within}: Finding 2 **does not hold** here"
        )
    joint = {rep: statistics.fmean(r["joint"] for r in table[rep].values()) for rep in reps}
    joint_best = max(reps, key=joint.get)
    first = (
        f"Joint training alone, {LABEL[joint_best].lower()} sampling is best ({joint[joint_best]:.1f} against "
        f"{joint['instance']:.1f} instance-balanced): Finding 1 "
        + ("**holds**." if joint_best != "instance" else "**does not hold**.")
    )
    return [f"{level} Reading", "", f"On {profile} ({len(table['instance'])} seeds), {text}. {first}", ""]


if __name__ == "__main__":
    main()
