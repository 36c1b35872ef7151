"""Prior adaptation at the benchmarks' sizes: one method's adapter fitted on validation logits, and EM on a batch.

For each shape of :mod:`scale` (its classes and validation / test images per
class) a child process builds synthetic long-tailed logits (float32, as a head
computes them: a class signal, noise, and ``0.7 · log π_train`` as a joint
classifier carries) and times

- ``fit_prior_adapter`` on the validation logits: the calibration candidates by
  5-fold cross-validation (fewer folds where a class has fewer images), the
  chosen one refitted, the validation check of adaptation, BBSE where fitted;
- ``adapter.adapt(test_logits, "em")``: EM on the whole balanced test set;

with the child's peak resident memory (``ru_maxrss`` from ``os.wait4``) beside
the bytes of the validation logits themselves. Rows are kept in ``WORK/rows.jsonl``:
a later run of some shapes replaces theirs and keeps the others. With ``--eval-shift`` it also
runs the whole ``eval.shift`` path as a user would, as its own processes:
``longtail train data.name=features model.joint=file`` then ``longtail
decouple RUN --method tau_norm eval.shift=[2,5,10,25,50]`` (Joint and τ-norm,
11 test distributions, none / em / known, bootstrap intervals, reliability).
Writes ``docs/results/prior_adapter_scale.md``.

    OMP_NUM_THREADS=1 python benchmarks/prior_adapter_scale.py [--shapes places_lt,imagenet_lt,inat2018]
        [--eval-shift imagenet_lt] [--work /tmp/prior_adapter_scale] [--doc docs/results/prior_adapter_scale.md]

``--shapes tiny`` is a smoke run of a few seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _doc import machine_line  # noqa: E402
from scale import LABELS, SHAPES, class_sizes, longtail_args, run_child  # noqa: E402

from longtail.fs.atomic import write_text_atomic  # noqa: E402

DOC = HERE.parent / "docs" / "results" / "prior_adapter_scale.md"
SHIFT_KEY = "eval.shift=[2,5,10,25,50]"


def child(name: str, out: Path) -> None:
    """In its own process: time one adapter fit and one EM at shape ``name``; write a JSON line to ``out``."""
    import torch

    from longtail.shift import fit_prior_adapter

    shape = SHAPES[name]
    counts = class_sizes(shape).tolist()
    generator = torch.Generator().manual_seed(0)
    log_prior = torch.tensor(counts, dtype=torch.float64).log()
    carried = (0.7 * (log_prior - log_prior.mean())).float()  # a joint classifier's pull toward the head

    def logits(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:  # (N, C) float32, (N,)
        labels = torch.arange(shape.classes).repeat_interleave(per_class)
        table = torch.randn(len(labels), shape.classes, generator=generator).mul_(2.0)
        table[torch.arange(len(labels)), labels] += 4.0
        return table.add_(carried), labels

    val, val_y = logits(shape.val)
    start = time.perf_counter()
    adapter = fit_prior_adapter(val, val_y, counts)
    fit_s = time.perf_counter() - start
    del val
    test, _ = logits(shape.test)
    start = time.perf_counter()
    adapted = adapter.adapt(test, "em")
    em_s = time.perf_counter() - start
    row = {
        "fit_s": round(fit_s, 1),
        "em_s": round(em_s, 1),
        "em_steps": adapted.iterations,
        "kind": adapter.calibration.kind,
        "candidates": sorted(adapter.cv_nll),
        "bbse": adapter.bbse is not None,
        "test_rows": len(test),
    }
    out.write_text(json.dumps(row))


def adapter_row(name: str, work: Path) -> dict:
    """One shape's adapter fit and EM, measured in a child process."""
    shape = SHAPES[name]
    result = work / f"adapter_{name}.json"
    wall, peak = run_child([sys.executable, __file__, "--child", name, "--out", str(result)], work / "adapter.log")
    row = json.loads(result.read_text())
    val_rows = shape.val * shape.classes
    return {
        "shape": name,
        "classes": shape.classes,
        "val_rows": val_rows,
        "val_gb": round(val_rows * shape.classes * 4 / 1e9, 2),
        "wall_s": round(wall, 1),
        "peak_gb": round(peak, 2),
        **row,
    }


def eval_shift_row(name: str, work: Path) -> dict:
    """The whole ``eval.shift`` path at shape ``name``: features file, joint from the file, decouple τ-norm."""
    features, run, log = work / f"{name}.npz", work / f"run_{name}", work / f"eval_shift_{name}.log"
    writer = [sys.executable, str(HERE / "scale.py"), "--write", str(features), "--shapes", name]
    run_child([*writer, "--dims", "512", "--dtype", "float16"], log)
    shutil.rmtree(run, ignore_errors=True)
    train = ["train", "--no-progress", "data.name=features", f"data.path={features}", "model.joint=file"]
    run_child(longtail_args(*train, "--out", str(run)), log)
    wall, peak = run_child(longtail_args("decouple", str(run), "--method", "tau_norm", SHIFT_KEY), log)
    shift = json.loads((run / "results.json").read_text())["shift"]
    best = {
        prior: max(
            sum(shift["methods"][m][prior][d]["accuracy"] for d in shift["distributions"] if d != "uniform") / 10
            for m in shift["methods"]
        )
        for prior in ("none", "em", "known")
    }
    features.unlink()
    return {"shape": name, "wall_s": round(wall, 1), "peak_gb": round(peak, 2), "shifted_mean": best}


class RowsFile:
    """The measured rows of a work folder (one JSON object a line, with its ``table``): a later run of some shapes
    replaces their rows and keeps the others, so a long measurement can be redone alone."""

    def __init__(self, path: Path) -> None:
        self.path = path
        lines = path.read_text().splitlines() if path.is_file() else []
        self.rows = [json.loads(line) for line in lines if line.strip()]

    def put(self, table: str, row: dict) -> dict:
        self.rows = [r for r in self.rows if (r["table"], r["shape"]) != (table, row["shape"])] + [
            {"table": table, **row}
        ]
        write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in self.rows))
        return row

    def table(self, table: str) -> list[dict]:
        order = list(SHAPES)
        return sorted((r for r in self.rows if r["table"] == table), key=lambda r: order.index(r["shape"]))


def render(adapters: list[dict], shifts: list[dict], load: float) -> str:
    """The Markdown document."""
    lines = [
        "# Prior adaptation at the benchmarks' sizes",
        "",
        f"Generated by `benchmarks/prior_adapter_scale.py`. {machine_line(load)}",
        "",
        "Synthetic long-tailed logits at each benchmark's number of classes and validation / test images per class "
        "(float32, as a head computes them). *fit*: `fit_prior_adapter` on the validation logits (calibration "
        "candidates by cross-validation, the chosen one refitted, the validation check of adaptation, BBSE where "
        'fitted); *EM*: `adapter.adapt(test, "em")` on the whole test set. Peak: the child process\'s resident '
        "memory (torch itself is about 0.3 GB); *logits*: the bytes of the validation logits.",
        "",
        "| shape | classes | val rows | logits (GB) | fit (s) | candidates | chosen | BBSE | EM (s) | EM steps "
        "| peak (GB) |",
        "|---|---:|---:|---:|---:|---|---|---|---:|---:|---:|",
    ]
    for row in adapters:
        lines.append(
            f"| {LABELS[row['shape']]} | {row['classes']:,} | {row['val_rows']:,} | {row['val_gb']:.2f} "
            f"| {row['fit_s']:.1f} | {', '.join(row['candidates'])} | {row['kind']} | "
            f"{'yes' if row['bbse'] else 'no'} | {row['em_s']:.1f} | {row['em_steps']} | {row['peak_gb']:.2f} |"
        )
    if shifts:
        lines += [
            "",
            f"## `{SHIFT_KEY}` end to end",
            "",
            "`longtail train data.name=features model.joint=file` on `benchmarks/scale.py`'s features (d = 512, "
            f'float16), then `longtail decouple RUN --method tau_norm "{SHIFT_KEY}"`: Joint and τ-norm, each '
            "with its adapter, on the 11 test distributions with `none`, `em` and `known` and their bootstrap "
            "intervals, and the reliability before / after calibration. *shifted mean*: the best classifier's mean "
            "over the 10 shifted distributions.",
            "",
            "| shape | decouple wall (s) | peak (GB) | shifted mean none | em | known |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for row in shifts:
            mean = row["shifted_mean"]
            lines.append(
                f"| {LABELS[row['shape']]} | {row['wall_s']:.0f} | {row['peak_gb']:.2f} | {mean['none']:.1f} "
                f"| {mean['em']:.1f} | {mean['known']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="places_lt,imagenet_lt,inat2018")
    parser.add_argument("--eval-shift", default="", help="shapes to also run eval.shift on end to end")
    parser.add_argument("--work", default="/tmp/prior_adapter_scale")
    parser.add_argument("--doc", default=str(DOC))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, Path(args.out))
        return
    unknown = [s for s in f"{args.shapes},{args.eval_shift}".split(",") if s and s not in SHAPES]
    if unknown:
        raise SystemExit(f"--shapes {unknown[0]!r}: expected some of {', '.join(SHAPES)}")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    rows = RowsFile(work / "rows.jsonl")
    for name in (s for s in args.shapes.split(",") if s):
        print(json.dumps(rows.put("adapter", adapter_row(name, work))), flush=True)
    for name in (s for s in args.eval_shift.split(",") if s):
        print(json.dumps(rows.put("eval_shift", eval_shift_row(name, work))), flush=True)
    text = render(rows.table("adapter"), rows.table("eval_shift"), load)
    print(text)
    write_text_atomic(Path(args.doc), text)


if __name__ == "__main__":
    main()
