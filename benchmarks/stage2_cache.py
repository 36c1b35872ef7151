"""Stage 2 on cached features against the official online way: time and accuracy, whole processes.

For each profile (the demo, Fashion-MNIST-LT with 2,478 training images, and
a 5,952-image one, ``data.n_max=2400``) it trains stage 1 once, then times, as
separate ``longtail`` processes on copies of that run:

- cached: one ``longtail decouple RUN --method all`` (cold cache: the features
  are extracted in that process, then every method trains on them);
- online: ``longtail decouple RUN --method M --features online`` for M = NCM,
  cRT, τ-norm and LWS one after another, as the official code runs them (cRT
  and LWS run the backbone on augmented images every epoch);
- online with ``decouple.bn=train`` (the official BatchNorm mode), for accuracy.

Wall times include process start and data loading, min and median over
``--repeats``. Accuracy is top-1 macro on the test split. It also works out
on paper the backbone passes the cache saves for ImageNet-LT with the official
stage-2 schedule. Writes the "Stage 2: cached features against online" section
of docs/performance.md (other sections are kept).

    .venv/bin/python benchmarks/stage2_cache.py [--repeats 3] [--profiles demo,6000]

``benchmarks/speed.py --only stage2`` runs the same measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _doc import machine_line, write_section

from longtail.models.backbones import create_backbone

SECTION = "## Stage 2: cached features against online"
PROFILES = {"demo": [], "6000": ["data.n_max=2400"]}
ONLINE_METHODS = ("ncm", "crt", "tau_norm", "lws")
TRAINED = ("crt", "lws")


def longtail(*args: str) -> float:
    """Run ``python -m longtail ARGS`` as its own process; return its wall time in seconds."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "longtail", *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def fresh_copy(run: Path, work: Path, name: str) -> Path:
    """A copy of the stage-1 run without classifiers or cached features."""
    target = work / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(run, target, ignore=shutil.ignore_patterns("classifiers", "features"))
    return target


def macro(run: Path, method: str) -> float:
    return json.loads((run / "results.json").read_text())["methods"][method]["macro"]


def measure(profile: list[str], work: Path, repeats: int) -> dict:
    """Stage 1 once, then ``repeats`` rounds of cached / online / online-bn=train stage 2."""
    stage1 = work / "stage1"
    train_seconds = longtail("train", *profile, "--out", str(stage1), "--overwrite", "--no-progress")
    images = sum(json.loads((stage1 / "results.json").read_text())["train_counts"])
    times: dict[str, list[float]] = {"cached": [], "online": [], "online_bn_train": []}
    accuracy: dict[str, dict[str, float]] = {}
    for _ in range(repeats):
        run = fresh_copy(stage1, work, "cached")
        times["cached"].append(longtail("decouple", str(run), "--method", "all"))
        accuracy["cached"] = {m: macro(run, m) for m in ONLINE_METHODS}
        for mode, extra in (("online", []), ("online_bn_train", ["decouple.bn=train"])):
            run = fresh_copy(stage1, work, mode)
            methods = ONLINE_METHODS if mode == "online" else TRAINED
            seconds = [longtail("decouple", str(run), "--method", m, "--features", "online", *extra) for m in methods]
            times[mode].append(sum(seconds))
            accuracy[mode] = {m: macro(run, m) for m in methods}
    return {"images": images, "train_seconds": train_seconds, "times": times, "accuracy": accuracy}


def forward_gmacs(backbone: str, size: int) -> float:
    """Multiply-accumulates (10^9) of one forward pass of ``backbone`` (our implementation) on a size x size image,
    counted over its convolutions and linear layers."""
    model = create_backbone(backbone, in_channels=3).eval()
    total = 0

    def count(module: torch.nn.Module, _inputs: object, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            height, width = module.kernel_size
            total += output.numel() * height * width * module.in_channels // module.groups
        elif isinstance(module, torch.nn.Linear):
            total += output.numel() * module.in_features

    for module in model.modules():
        module.register_forward_hook(count)
    with torch.no_grad():
        model.forward_features(torch.zeros(1, 3, size, size))
    return total / 1e9


def imagenet_lt_passes() -> list[str]:
    """Backbone forward passes of stage 2 on ImageNet-LT, online (official schedule) against cached."""
    train, val, test = 115_846, 20_000, 50_000
    crt_epochs, lws_epochs = 10, 5  # the official stage-2 schedules
    evaluation = val + test  # every official run scores val and test with its own backbone pass
    online = {
        "cRT": crt_epochs * train + evaluation,
        "LWS": lws_epochs * train + evaluation,
        "NCM": train + evaluation,
        "τ-norm": evaluation,
    }
    cached = train + val + test
    total = sum(online.values())
    gmacs = forward_gmacs("resnext50_32x4d", 224)
    lines = [
        "Worked out on paper for ImageNet-LT with ResNeXt-50 (official stage 2: cRT 10 epochs, LWS 5,",
        f"train {train:,}, val {val:,}, test {test:,} images; one 224 px forward of our ResNeXt-50 32x4d",
        f"backbone is {gmacs:.2f} G multiply-accumulates, counted over its layers):",
        "",
        "| stage 2 | backbone forward passes | backbone multiply-accumulates (10^15) |",
        "|---|---:|---:|",
    ]
    for method, passes in online.items():
        lines.append(f"| online {method} | {passes:,} | {passes * gmacs / 1e6:.2f} |")
    lines.append(f"| online, all four | {total:,} | {total * gmacs / 1e6:.2f} |")
    lines.append(f"| cached, all methods | {cached:,} | {cached * gmacs / 1e6:.2f} |")
    lines += ["", f"The cache saves {total - cached:,} passes, {total / cached:.1f}× fewer; the rest of stage 2"]
    lines.append("(linear layers on 2,048-wide features) is negligible beside them.")
    return lines


def markdown(results: dict[str, dict], repeats: int, load: float | None = None) -> str:
    """The section: the measured table, then the ImageNet-LT estimate; ``load``: the load average at the start."""
    lines = [
        SECTION,
        "",
        "Written by `benchmarks/stage2_cache.py`. " + machine_line(load),
        f"Whole `longtail decouple` processes, wall seconds, min / median of {repeats}; cached is one",
        "`--method all` process with a cold cache (it extracts the features), online is NCM, cRT, τ-norm",
        "and LWS each run with `--features online` one after another. Accuracy: test macro top-1 (%).",
        "",
        "| profile | train images | cached s | online s | speed-up (median) | cRT cached / online / bn=train |"
        " LWS cached / online / bn=train |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for name, r in results.items():
        t, acc = r["times"], r["accuracy"]
        cached = f"{min(t['cached']):.1f} / {statistics.median(t['cached']):.1f}"
        online = f"{min(t['online']):.1f} / {statistics.median(t['online']):.1f}"
        speedup = statistics.median(t["online"]) / statistics.median(t["cached"])
        cells = [" / ".join(f"{acc[mode][m]:.1f}" for mode in ("cached", "online", "online_bn_train")) for m in TRAINED]
        lines.append(f"| {name} | {r['images']:,} | {cached} | {online} | {speedup:.1f}× | {cells[0]} | {cells[1]} |")
    lines += ["", *imagenet_lt_passes(), ""]
    return "\n".join(lines)


def section(profiles: list[str], repeats: int) -> str:
    """Measure ``profiles`` (names of :data:`PROFILES`) and return the Markdown section."""
    load = os.getloadavg()[0]
    results = {}
    with tempfile.TemporaryDirectory(prefix="stage2-cache-") as tmp:
        for name in profiles:
            work = Path(tmp) / name
            work.mkdir()
            results[name] = measure(PROFILES[name], work, repeats)
            print(name, json.dumps(results[name]), flush=True)
    return markdown(results, repeats, load)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profiles", default="demo,6000", help="comma-separated: demo, 6000")
    parser.add_argument("--doc", type=Path, default=Path("docs/performance.md"))
    args = parser.parse_args()
    text = section(args.profiles.split(","), args.repeats)
    print(text)
    write_section(args.doc, SECTION, text)
    print(f"written to {args.doc}")


if __name__ == "__main__":
    main()
