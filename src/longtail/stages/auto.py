"""``--method auto``: every stage-2 method and its hyper-parameters, the best one chosen on validation.

Stage 2 on cached features costs seconds, so instead of guessing which
re-balancing suits a dataset, try them all: NCM, cRT and LWS at their learning
rate times each of ``decouple.auto_lr_factors``, τ-normalisation and logit
adjustment at their validation-chosen τ. The winner is the candidate with the
highest ``decouple.select`` metric on the **validation** split; ties go to the
candidate listed first (simpler methods, then the configured learning rate).
Test accuracy is computed for display only and never enters the choice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..evaluation.table import COLUMNS


@dataclass
class Candidate:
    """One fitted stage-2 classifier: its method, hyper-parameters and scores."""

    method: str
    head: nn.Module
    params: dict[str, float] = field(default_factory=dict)
    val: dict[str, Any] = field(default_factory=dict)
    test: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """E.g. ``crt (lr=0.05)`` or ``tau_norm (tau=0.8)``."""
        params = ", ".join(f"{name}={value:g}" for name, value in self.params.items())
        return f"{self.method} ({params})" if params else self.method


def lr_factors_in_order(factors: list[float]) -> list[float]:
    """The factors with 1 (the configured lr) first, so that a tie keeps the configured recipe."""
    return sorted(set(factors), key=lambda factor: (factor != 1.0, factors.index(factor)))


def pick_best(candidates: list[Candidate], select: str) -> Candidate:
    """The candidate with the highest validation ``select`` metric (``None`` counts as worst); first on ties."""
    if not candidates:
        raise ValueError("pick_best: no candidates")

    def score(candidate: Candidate) -> float:
        value = candidate.val.get(select)
        return float("-inf") if value is None else float(value)

    best = candidates[0]
    for candidate in candidates[1:]:
        if score(candidate) > score(best):
            best = candidate
    return best


def _summary(scores: dict[str, Any]) -> dict[str, Any]:
    return {key: scores.get(key) for key in COLUMNS}


def auto_record(candidates: list[Candidate], winner: Candidate, select: str) -> dict[str, Any]:
    """What results.json keeps under ``"auto"``: the rule, the choice, every candidate's scores."""
    return {
        "select": f"val {select}",
        "chosen": {"method": winner.method, **winner.params, "label": winner.label},
        "candidates": [
            {
                "method": c.method,
                **c.params,
                "label": c.label,
                "val": _summary(c.val),
                "test_display_only": _summary(c.test),
            }
            for c in candidates
        ],
    }
