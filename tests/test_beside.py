"""A stage-1 training in a second process (grid/beside.py): failures reported, never fatal; children stopped."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import pytest
import torch

from conftest import tiny_overrides
from longtail.demo import _collect_candidates
from longtail.grid.beside import split_cores, start_beside, torch_threads


@pytest.mark.slow  # seconds of subprocesses or training; `make test` runs it (the fast suite keeps under 3 minutes)
def test_a_child_that_fails_says_why_and_its_candidate_is_left_to_train_here(tmp_path: Path):
    child = start_beside(tmp_path / "staging" / "sweep-train.sampler=progressive", ["train.epochs=x"], threads=1)
    assert child is not None
    said: list[str] = []
    _collect_candidates([child], tmp_path / "auto", said.append)
    assert said == [
        "the second process did not finish sweep-train.sampler=progressive "
        "(longtail: error: train.epochs='x': expected int); training it here"
    ]
    assert not (tmp_path / "auto").exists()  # nothing moved: `longtail auto` trains it


def test_an_interrupted_caller_stops_its_child(tiny_fmnist: Path, tmp_path: Path):
    run = tmp_path / "run"
    child = start_beside(run, [*tiny_overrides(tiny_fmnist), "train.epochs=1000"], threads=1)
    assert child is not None and child.process.poll() is None
    child.stop()
    assert child.process.returncode is not None and child.errors.closed


def test_a_child_that_cannot_start_is_logged_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    def no_processes(*args: object, **kwargs: object) -> None:
        raise OSError("Resource temporarily unavailable")

    monkeypatch.setattr(subprocess, "Popen", no_processes)
    with caplog.at_level(logging.WARNING):
        assert start_beside(tmp_path / "run", [], threads=1) is None
    assert "could not start a second training process (Resource temporarily unavailable)" in caplog.text


def test_cores_are_split_and_torch_threads_restored():
    assert split_cores(10_000) == 0  # fewer cores than trainings: side by side is no faster
    assert split_cores(1) >= 1
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(0):  # 0: unchanged
        assert torch.get_num_threads() == before
