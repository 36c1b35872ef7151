"""``benchmarks/lws_ceiling.py``: LWS's objective solved exactly is its optimum, and a run is read, not changed."""

from __future__ import annotations

import hashlib
import runpy
from pathlib import Path

import torch
from torch.nn import functional as F

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "lws_ceiling.py"


def _script() -> dict:
    return runpy.run_path(str(SCRIPT), run_name="lws_ceiling")


def _loss(script: dict, logits: torch.Tensor, y: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor):
    weights = script["balanced_weights"](y, logits.shape[1])
    return (F.cross_entropy(logits * scales + offsets, y, reduction="none") * weights).sum()


def test_solved_scales_are_the_optimum_of_the_class_balanced_loss() -> None:
    script = _script()
    generator = torch.Generator().manual_seed(0)
    y = torch.cat([torch.full((n,), c) for c, n in enumerate([200, 60, 12, 4])])
    logits = (torch.randn(len(y), 4, generator=generator, dtype=torch.float64) + 2 * F.one_hot(y, 4)).double()
    logits[:, 0] += 1.5  # a head-biased joint classifier
    for form in script["FORMS"]:
        scales, offsets = script["solve"](logits, y, form)
        if form == "scales":
            assert torch.equal(offsets, torch.zeros(4, dtype=torch.float64))
        # Convex in the parameters: a vanishing gradient is the global optimum.
        s, t = scales.clone().requires_grad_(True), offsets.clone().requires_grad_(form != "scales")
        loss = _loss(script, logits, y, s, t)
        loss.backward()
        assert s.grad.abs().max() < 1e-5 and (t.grad is None or t.grad.abs().max() < 1e-5)
        ones = torch.ones(4, dtype=torch.float64)
        assert loss < _loss(script, logits, y, ones, torch.zeros(4, dtype=torch.float64))
        for _ in range(5):
            other = scales + 0.1 * torch.randn(4, generator=generator, dtype=torch.float64)
            assert loss <= _loss(script, logits, y, other, offsets)


def test_measure_reads_a_decoupled_run_without_changing_it(tiny_decoupled_run: Path) -> None:
    def digest() -> str:
        files = sorted(p for p in tiny_decoupled_run.rglob("*") if p.is_file())
        return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()

    before = digest()
    rows = _script()["measure"](tiny_decoupled_run)
    assert digest() == before
    solved = {f"LWS objective solved, {form}" for form in ("scales", "scales + offsets")}
    assert set(rows) == {"run's crt", "run's lws", *solved}
    assert all(0.0 <= cells[split] <= 100.0 for cells in rows.values() for split in ("val", "test"))
