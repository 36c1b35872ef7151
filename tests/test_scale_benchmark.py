"""benchmarks/scale.py: the class-size profiles of the real sets, and a tiny end-to-end run with its report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import scale  # noqa: E402  (the benchmarks are scripts, not a package)

REAL = {  # N, C, largest, smallest class of each training set
    "cifar100_lt": (10_847, 100, 500, 5),
    "places_lt": (62_500, 365, 4_980, 5),
    "imagenet_lt": (115_846, 1_000, 1_280, 5),
    "inat2018": (437_513, 8_142, 1_000, 2),
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_class_sizes_have_the_real_sets_total_classes_and_extremes(name: str) -> None:
    counts = scale.class_sizes(scale.SHAPES[name])
    assert (int(counts.sum()), len(counts), int(counts.max()), int(counts.min())) == REAL[name]
    assert np.all(np.diff(counts[: len(counts) // 2]) <= 0)  # long-tailed: non-increasing (rounding aside)


@pytest.mark.slow
def test_tiny_scale_run_measures_every_command_beside_its_floor_and_reports(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, str(BENCHMARKS / "scale.py"), "--shapes", "tiny", "--dims", "16"]
    command += ["--methods", "crt,ncm", "--dtype", "float16", "--work", str(tmp_path)]
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert [row["what"] for row in rows] == ["train", "crt", "ncm"]
    for row in rows:
        assert row["wall_s"] > 0 and row["peak_gb"] > 0 and row["floor_s"] > 0 and row["floor_peak_gb"] > 0
        assert row["feature_bytes"] == (585 + 50 + 100) * 16 * 2  # float16: 2 bytes a value
    doc = tmp_path / "scale.md"
    report = [sys.executable, str(BENCHMARKS / "scale_report.py"), "--peaks", str(tmp_path / "rows.jsonl")]
    report += ["--doc", str(doc)]
    subprocess.run(report, check=True, env=env, stdout=subprocess.DEVNULL)
    text = doc.read_text()
    assert "| tiny (585, 10) | 16 | float16 | `longtail decouple RUN --method crt decouple.crt.epochs=1` |" in text


@pytest.mark.slow  # seconds of subprocesses or training; `make test` runs it (the fast suite keeps under 3 minutes)
def test_tiny_prior_adapter_scale_run_times_the_fit_em_and_eval_shift(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    doc = tmp_path / "doc.md"
    command = [sys.executable, str(BENCHMARKS / "prior_adapter_scale.py"), "--shapes", "tiny"]
    command += ["--eval-shift", "tiny", "--work", str(tmp_path), "--doc", str(doc)]
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    fit = json.loads((tmp_path / "adapter_tiny.json").read_text())
    assert fit["candidates"] == ["bcts", "pcts", "temperature"] and fit["bbse"] and fit["test_rows"] == 100
    assert fit["fit_s"] > 0 and fit["em_steps"] >= 1
    text = doc.read_text()
    assert "| tiny | 10 | 50 | 0.00 |" in text
    assert "`eval.shift=[2,5,10,25,50]` end to end" in text and not (tmp_path / "tiny.npz").exists()
    subprocess.run(command[:4] + command[6:], check=True, env=env, stdout=subprocess.DEVNULL)  # the fit alone again
    again = doc.read_text()
    assert again.count("| tiny |") == 2 and "`eval.shift=[2,5,10,25,50]` end to end" in again  # its rows are kept
