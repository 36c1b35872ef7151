"""The report of :mod:`scale`: its rows as ``docs/results/scale.md``, with the targets, the fit of time against
N·C·d, float16 against float32, and what a GPU changes on paper.

    python benchmarks/scale_report.py /tmp/scale/m/rows.jsonl [--accuracy acc.json] [--doc docs/results/scale.md]

Every number in the document is read from the rows (or the accuracy file)
or computed from them here; the GPU section is an estimate from nominal
figures, and says so. The interpreter's own peak (an empty ``python -c "import
longtail.cli"``) is measured here, once, so that the fixed cost of a process
can be told from what grows with the data.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from _doc import machine_line
from scale import DOC, LABELS, SHAPES, TRAINED, class_sizes

from longtail.fs.atomic import write_text_atomic

TARGET_RATIO = 1.3  # each trained head's loop within 1.3x the floor at ImageNet-LT's shape
TARGET_PEAK = 2.5  # peak memory at most 2.5x the bytes of the features
# H100 SXM5 nominal figures (NVIDIA's data sheet): dense, without sparsity.
H100_FP32 = 67e12  # FLOP/s, FP32 on the CUDA cores
H100_TF32 = 495e12  # FLOP/s, TF32 on the tensor cores
H100_BANDWIDTH = 3.35e12  # bytes/s, HBM3
LAUNCH_S = 5e-6  # seconds per kernel launch, the usual order of magnitude
KERNELS_PER_STEP = 12  # gather, matmul, softmax / loss, backward matmul, optimiser: about a dozen launches


TIMES = ("wall_s", "loop_s", "floor_wall_s", "floor_s")
PEAKS = ("peak_gb", "floor_peak_gb")


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_rows(paths: list[Path], peaks: list[Path]) -> list[dict]:
    """One row per (shape, d, dtype, command): the runs of every file in ``paths`` and ``peaks`` together
    (each time the fastest of them, ``*_all`` every run in order), the peaks from ``peaks`` only."""
    kept: dict[tuple, dict] = {}
    for path in [*paths, *peaks]:
        for row in read_rows(path):
            key = (row["shape"], row["d"], row["dtype"], row["what"])
            merged = kept.setdefault(key, {**row, **{f"{k}_all": [] for k in TIMES}, **dict.fromkeys(PEAKS)})
            for k in TIMES:
                merged[f"{k}_all"] += row.get(f"{k}_all", [row[k]] if k in row else [])
                merged[k] = min(merged[f"{k}_all"]) if merged[f"{k}_all"] else None
            merged.update({k: row[k] for k in ("test_macro", "test_all", "load_1min") if k in row})
    for path in peaks:
        for row in read_rows(path):
            kept[(row["shape"], row["d"], row["dtype"], row["what"])].update({k: row.get(k) for k in PEAKS})
    return list(kept.values())


def interpreter_peak_gb() -> float:
    """Peak resident GB of a process that only imports longtail's command line (torch included)."""
    process = subprocess.Popen([sys.executable, "-c", "import longtail.cli.main"])
    _, _, usage = os.wait4(process.pid, 0)
    return usage.ru_maxrss * 1024 / 1e9


def per_epoch(row: dict, key: str = "loop_s") -> float | None:
    return row[key] / row["epochs"] if row.get(key) is not None and row["epochs"] else None


def ratio(row: dict) -> float | None:
    """Fastest of ours over fastest of the floor's."""
    return row["loop_s"] / row["floor_s"] if row.get("floor_s") else None


def paired(row: dict) -> str:
    """Each run of ours over the floor's run right after it: the median, and the range when there are several."""
    if not row.get("floor_s_all"):
        return "–"
    ratios = sorted(a / b for a, b in zip(row["loop_s_all"], row["floor_s_all"], strict=True))
    if len(ratios) == 1:
        return f"{ratios[0]:.2f}"
    return f"{statistics.median(ratios):.2f} ({ratios[0]:.2f}–{ratios[-1]:.2f})"


def fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def table(rows: list[dict]) -> list[str]:
    lines = [
        "| shape (N, C) | d | dtype | command | epochs | wall s | peak GB | floor's peak GB | features GB "
        "| peak / features "
        "| loop s | loop s / epoch | floor s / epoch | ratio to floor (fastest / fastest) | paired ratios, median "
        "(range) | runs | test macro % (after 1 epoch: not the method's accuracy) |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        shape = f"{LABELS[row['shape']]} ({row['N']:,}, {row['C']:,})"
        gb = row["feature_bytes"] / 1e9
        epoch = per_epoch(row)
        floor = per_epoch(row, "floor_s") if row["epochs"] else row.get("floor_s")
        macro = row.get("test_macro")
        lines.append(
            f"| {shape} | {row['d']} | {row['dtype']} | `{row['command']}` | {row['epochs'] or '–'} | "
            f"{fmt(row['wall_s'], 1)} | {fmt(row['peak_gb'])} | {fmt(row.get('floor_peak_gb'))} | {fmt(gb, 3)} | "
            f"{fmt(row['peak_gb'] / gb if row['peak_gb'] else None, 1)} | "
            f"{fmt(row['loop_s'])} | {fmt(epoch)} | {fmt(floor)} | {fmt(ratio(row))} | {paired(row)} | "
            f"{len(row.get('loop_s_all', [1]))} | {fmt(macro, 1)} |"
        )
    return lines


def fit_growth(rows: list[dict]) -> list[str]:
    """Least squares of seconds per epoch on N·C·d, with an intercept (the fixed cost of a run), per head."""
    lines = [
        "| head | points (N·C·d from … to …) | fixed s (intercept) | s per 10¹² N·C·d (slope) | "
        "implied GFLOP/s (4·N·C·d per epoch for train, cRT; 2·N·C·d for LWS) |",
        "|---|---|---:|---:|---:|",
    ]
    for what in TRAINED:
        points = [
            (r["N"] * r["C"] * r["d"] / 1e12, per_epoch(r))
            for r in rows
            if r["what"] == what and r["dtype"] == "float32" and per_epoch(r)
        ]
        if len({x for x, _ in points}) < 2:
            continue
        xs, ys = zip(*points, strict=True)
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x in xs)
        intercept = my - slope * mx
        flops = 2 if what == "lws" else 4
        rate = f"{flops * 1e12 / slope / 1e9:.1f}" if slope > 0 else "–"
        span = f"{len(points)} ({min(xs):.3g} to {max(xs):.3g} × 10¹²)"
        lines.append(f"| {what} | {span} | {intercept:.2f} | {slope:.2f} | {rate} |")
    return lines


def gpu_estimate(rows: list[dict]) -> list[str]:
    """FLOPs and bytes of one epoch of cRT at each measured shape, and the H100's bound on its time."""
    lines = [
        "| shape (N, C, d) | FLOPs per cRT epoch (4·N·C·d) | bytes moved per epoch | H100 FP32 bound s | "
        "H100 TF32 bound s | launch overhead s | measured CPU s per epoch (this machine) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    seen = set()
    for row in rows:
        key = (row["shape"], row["d"])
        if key in seen or row["shape"] == "tiny":
            continue
        seen.add(key)
        n, c, d = row["N"], row["C"], row["d"]
        steps = max(1, n // 512)
        flops = 4 * n * c * d  # forward x·Wᵀ and the weight gradient gᵀ·x (no input gradient: features are leaves)
        # features once, logits written and read ~6 times (forward, softmax, loss, gradient, matmul), and the
        # parameters (weight, gradient, momentum) read and written ~7 times a step.
        moved = n * d * 4 + 6 * n * c * 4 + steps * 7 * c * d * 4
        memory_s = moved / H100_BANDWIDTH
        crt = next((r for r in rows if (r["shape"], r["d"], r["what"], r["dtype"]) == (*key, "crt", "float32")), None)
        measured = fmt(per_epoch(crt)) if crt else "not measured"
        lines.append(
            f"| {LABELS[row['shape']]} ({n:,}, {c:,}, {d:,}) | {flops:.2e} | {moved / 1e9:.2f} GB | "
            f"{max(flops / H100_FP32, memory_s):.4f} | {max(flops / H100_TF32, memory_s):.4f} | "
            f"{steps * KERNELS_PER_STEP * LAUNCH_S:.4f} | {measured} |"
        )
    return lines


def half_memory(rows: list[dict]) -> list[str]:
    """Peak of each command with a float32 and a float16 file of the same shape."""
    lines = [
        "| shape, d | command | features GB float32 → float16 | peak GB float32 → float16 | peak saved |",
        "|---|---|---:|---:|---:|",
    ]
    by_key = {(r["shape"], r["d"], r["what"], r["dtype"]): r for r in rows if r.get("peak_gb")}
    for (shape, d, what, dtype), full in by_key.items():
        half = by_key.get((shape, d, what, "float16"))
        if dtype != "float32" or half is None:
            continue
        lines.append(
            f"| {LABELS[shape]}, {d} | {what} | {full['feature_bytes'] / 1e9:.3f} → {half['feature_bytes'] / 1e9:.3f} "
            f"| {full['peak_gb']:.2f} → {half['peak_gb']:.2f} | {full['peak_gb'] - half['peak_gb']:.2f} GB |"
        )
    return lines if len(lines) > 2 else ["(no shape measured in both dtypes)"]


def accuracy(path: Path | None) -> list[str]:
    if path is None or not path.is_file():
        return ["(not measured)"]
    runs = json.loads(path.read_text())
    seeds = sorted({key.split("_")[1] for key in runs})
    methods = list(next(iter(runs.values())))
    lines = [
        "| method | float32 macro % (mean ± std) | float16 macro % (mean ± std) | paired float16 − float32 |",
        "|---|---:|---:|---:|",
    ]
    for method in methods:
        f32 = [runs[f"f32_{s}"][method] for s in seeds]
        f16 = [runs[f"f16_{s}"][method] for s in seeds]
        diff = [b - a for a, b in zip(f32, f16, strict=True)]
        lines.append(
            f"| {method} | {statistics.fmean(f32):.2f} ± {statistics.stdev(f32):.2f} | "
            f"{statistics.fmean(f16):.2f} ± {statistics.stdev(f16):.2f} | "
            f"{statistics.fmean(diff):+.2f} ± {statistics.stdev(diff):.2f} |"
        )
    lines.append(f"\n({len(seeds)} seeds: {', '.join(seeds)}.)")
    return lines


def inprocess(path: Path | None) -> list[str]:
    """The steady-state comparison of :mod:`scale_inprocess`, when measured."""
    if path is None or not path.is_file():
        return []
    lines = ["| head | ours s (each round) | floor s (each round) | paired ratio, mean ± std |", "|---|---|---|---:|"]
    for what, result in json.loads(path.read_text()).items():
        ours = ", ".join(f"{a:.2f}" for a, _ in result["pairs"])
        floor = ", ".join(f"{b:.2f}" for _, b in result["pairs"])
        r = result["ratios"]
        spread = statistics.stdev(r) if len(r) > 1 else 0.0
        lines.append(f"| {what} | {ours} | {floor} | {statistics.fmean(r):.2f} ± {spread:.2f} |")
    return lines


def targets(rows: list[dict], interpreter_gb: float) -> list[str]:
    lines = []
    for row in rows:
        if row["shape"] == "imagenet_lt" and row["what"] in TRAINED and row.get("floor_s") and row["epochs"]:
            ratios = [a / b for a, b in zip(row["loop_s_all"], row["floor_s_all"], strict=True)]
            median = statistics.median(ratios)
            verdict = "met" if median <= TARGET_RATIO else "NOT met"
            runs = f"{len(ratios)} paired run{'s' if len(ratios) > 1 else ''}"
            lines.append(
                f"- {row['what']} at ImageNet-LT, d = {row['d']}, {row['dtype']}: median ratio {median:.2f} over "
                f"{runs} (ours over the floor run right after it; {paired(row)}); fastest over fastest "
                f"{ratio(row):.2f} (target ≤ {TARGET_RATIO}): {verdict} by the median."
            )
    for row in rows:
        largest = row["shape"] == "inat2018" or (row["shape"] == "imagenet_lt" and row["d"] == 2048)
        if largest and row["peak_gb"]:
            gb = row["feature_bytes"] / 1e9
            net = (row["peak_gb"] - interpreter_gb) / gb
            verdict = "met" if row["peak_gb"] / gb <= TARGET_PEAK else "NOT met"
            lines.append(
                f"- peak of `{row['what']}` at {LABELS[row['shape']]}, d = {row['d']}, {row['dtype']}: "
                f"{row['peak_gb']:.2f} GB for {gb:.2f} GB of features, {row['peak_gb'] / gb:.2f}× "
                f"(target ≤ {TARGET_PEAK}×): {verdict}; "
                f"{net:.2f}× above the interpreter's own {interpreter_gb:.2f} GB."
            )
    return lines


def profile_line(shape: str) -> str:
    counts = class_sizes(SHAPES[shape])
    return (
        f"{LABELS[shape]}: {counts.sum():,} training vectors over {len(counts):,} classes, "
        f"{counts.max():,} to {counts.min():,}, median {int(sorted(counts)[len(counts) // 2]):,}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rows", nargs="*", type=Path, help="rows whose times count (their peaks do not)")
    parser.add_argument("--peaks", nargs="+", type=Path, required=True, help="rows whose times and peaks count")
    parser.add_argument("--accuracy", type=Path)
    parser.add_argument("--notes", type=Path, help="a Markdown file of findings, inserted before the table")
    parser.add_argument(
        "--inprocess", nargs="*", default=[], metavar="JSON=LABEL", help="results of benchmarks/scale_inprocess.py"
    )
    parser.add_argument("--doc", type=Path, default=DOC)
    args = parser.parse_args()
    order = list(SHAPES)
    rows = sorted(load_rows(args.rows, args.peaks), key=lambda r: (order.index(r["shape"]), r["d"], r["dtype"]))
    interpreter = interpreter_peak_gb()
    loads = [r["load_1min"] for r in rows if "load_1min" in r]
    text = [
        "# Scale: longtail at the shapes of the long-tailed benchmarks, beside the floor",
        "",
        "Generated by `python benchmarks/scale.py` (the measurements, each command a process of its own) and "
        "`python benchmarks/scale_report.py` (this page).",
        "",
        machine_line(max(loads) if loads else None).replace("1-minute load average", "highest 1-minute load average"),
        "",
        "Synthetic long-tailed features (class means plus Gaussian noise), class sizes shaped like the real "
        "training sets: " + "; ".join(profile_line(s) for s in SHAPES if s != "tiny") + ".",
        "",
        f"The interpreter alone (an empty `python -c 'import longtail.cli.main'`) peaks at {interpreter:.2f} GB: "
        "a fixed cost in every row, which dominates the small shapes' peak / features.",
        "",
    ]
    if args.notes and args.notes.is_file():
        text += [args.notes.read_text().rstrip(), ""]
    text += ["## Every command", "", *table(rows), ""]
    text += ["## Targets", "", *targets(rows, interpreter), ""]
    for entry in args.inprocess:
        path, _, label = entry.partition("=")
        steady = inprocess(Path(path))
        if steady:
            text += [
                f"Steady state, one process ({label}; `benchmarks/scale_inprocess.py`: one epoch each, alternating, "
                "after a warm-up round of both):",
                "",
                *steady,
                "",
            ]
    text += ["## How time grows with N·C·d", "", "Seconds per epoch = fixed + slope · N·C·d, fit by least squares on "
             "the float32 rows (the fixed part: what a run pays whatever its size, e.g. torch.optim's first import "
             "of torch._dynamo):", "", *fit_growth(rows), ""]  # fmt: skip
    text += ["## float16 against float32: memory", "", *half_memory(rows), ""]
    text += [
        "## float16 against float32: accuracy",
        "",
        "The same vectors (CIFAR-100-LT's shape, d = 128; the float16 file is the float32 one rounded), stage 1 "
        "10 epochs, then cRT, LWS, τ-norm and NCM with their default epochs, macro accuracy on test, per seed:",
        "",
        *accuracy(args.accuracy),
        "",
    ]
    text += [
        "## What a GPU changes (an estimate on paper, not measured)",
        "",
        "One cRT epoch (batch 512) at each shape: FLOPs are exact for the arithmetic (forward and weight "
        "gradient, 2·N·C·d each); bytes moved are an approximation (stated in `benchmarks/scale_report.py`). "
        f"The bound is max(FLOPs / peak, bytes / bandwidth) with an H100 SXM's nominal {H100_FP32 / 1e12:.0f} "
        f"TFLOP/s FP32, {H100_TF32 / 1e12:.0f} TFLOP/s TF32 (tensor cores, dense) and "
        f"{H100_BANDWIDTH / 1e12:.2f} TB/s HBM3, plus ~{LAUNCH_S * 1e6:.0f} µs for each of ~{KERNELS_PER_STEP} "
        "kernel launches a step. Real runs reach a fraction of nominal peaks: read these as lower bounds.",
        "",
        *gpu_estimate(rows),
        "",
        "So, on paper: the arithmetic of a cRT epoch drops from seconds or minutes on this CPU to milliseconds "
        "(ImageNet-LT) or a tenth of a second (iNaturalist, d = 512), and the bound becomes the steps themselves: "
        "kernel launches, and whatever Python does per step (the sampler's indices, the DataLoader's batch, the "
        "bookkeeping). On a GPU the ratio to a bare loop is therefore decided by per-step overhead, which on "
        "this CPU hides behind the matrix products; it was not measured here.",
        "",
    ]
    write_text_atomic(args.doc, "\n".join(text))
    print(f"wrote {args.doc}")


if __name__ == "__main__":
    main()
