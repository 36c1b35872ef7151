"""Same config and seed, same numbers on CPU (with and without DataLoader workers); memory flat over epochs."""

import json
from pathlib import Path

import pytest
import torch

from conftest import tiny_overrides
from longtail.cli import main


def _train(root: Path, out: Path, *extra: str) -> Path:
    assert main(["train", *tiny_overrides(root), "train.epochs=2", *extra, "--out", str(out), "--no-progress"]) == 0
    return out


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]


def _numbers(run: Path) -> tuple[list[dict], dict]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    records = [{k: v for k, v in r.items() if k not in ("seconds", "rss_mb")} for r in records]
    return records, json.loads((run / "results.json").read_text())["methods"]


def _assert_identical(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert _numbers(a) == _numbers(b)


def test_same_seed_same_weights_and_metrics(tiny_fmnist: Path, tmp_path: Path):
    _assert_identical(_train(tiny_fmnist, tmp_path / "a"), _train(tiny_fmnist, tmp_path / "b"))


@pytest.mark.slow
def test_dataloader_workers_change_nothing(tiny_fmnist: Path, tmp_path: Path):
    """Two worker processes give the very numbers of none, run after run."""
    plain = _train(tiny_fmnist, tmp_path / "plain")
    workers = _train(tiny_fmnist, tmp_path / "workers", "data.num_workers=2")
    again = _train(tiny_fmnist, tmp_path / "again", "data.num_workers=2")
    _assert_identical(plain, workers)
    _assert_identical(workers, again)


def test_another_seed_changes_the_weights(tiny_fmnist: Path, tmp_path: Path):
    a = _train(tiny_fmnist, tmp_path / "a")
    b = _train(tiny_fmnist, tmp_path / "b", "seed=1")
    assert not torch.equal(_weights(a)["head.weight"], _weights(b)["head.weight"])


@pytest.mark.slow
def test_memory_stays_flat_over_epochs(tiny_fmnist: Path, tmp_path: Path):
    """Resident memory per epoch (metrics.jsonl ``rss_mb``) does not climb once the first epochs warmed up."""
    run = tmp_path / "long"
    argv = ["train", *tiny_overrides(tiny_fmnist), "train.epochs=14", "data.num_workers=2", "--out", str(run)]
    assert main([*argv, "--no-progress"]) == 0
    rss = [json.loads(line)["rss_mb"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(r is not None and r > 0 for r in rss)
    warm = rss[3]
    # A leak of even 2 MiB per epoch would add 20 MiB over the last ten epochs.
    assert max(rss[4:]) - warm < 16, rss
