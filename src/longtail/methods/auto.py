"""``--method auto``: every stage-2 method and its hyper-parameters, the best one chosen on validation.

Stage 2 on cached features costs seconds, so instead of guessing which
re-balancing suits a dataset, try them all: every method of ``--method all``
and what each offers to try (its ``variants``: cRT and LWS at their learning
rate times each of ``decouple.auto_lr_factors``; τ-normalisation and logit
adjustment at their validation-chosen τ). The winner is the candidate with the
highest ``decouple.select`` metric on the **validation** split; ties go to the
candidate listed first (methods in table order, then the configured learning
rate). Test accuracy is computed for display only and never enters the choice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from ..config import Config
from ..engine.feature_rows import predicted_classes
from ..errors import ConfigError
from ..evaluation.metrics import SUMMARY_KEYS
from . import method_names, register_method, spec_of
from .base import FitContext, Fitted, MethodSpec

log = logging.getLogger(__name__)


@dataclass
class Candidate:
    """One fitted stage-2 classifier that auto compares: its method, fit and scores."""

    method: str
    fitted: Fitted
    val: dict[str, Any]
    test: dict[str, Any]

    @property
    def label(self) -> str:
        """E.g. ``crt (lr=0.05)`` or ``tau_norm (tau=0.8)``."""
        return f"{self.method} ({self.fitted.label})" if self.fitted.params else self.method


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


@torch.no_grad()
def _scores(context: FitContext, fitted: Fitted, split: str) -> dict[str, Any]:
    head = fitted.head.cpu().eval()
    return context.summary(predicted_classes(head, context.features(split).x), split)


def _record(candidates: list[Candidate], winner: Candidate, select: str) -> dict[str, Any]:
    """What results.json keeps under ``"auto"``: the rule, the choice, every candidate's scores."""

    def summary(scores: dict[str, Any]) -> dict[str, Any]:
        return {key: scores.get(key) for key in SUMMARY_KEYS}

    def entry(candidate: Candidate) -> dict[str, Any]:
        return {"method": candidate.method, **candidate.fitted.params, "label": candidate.label}

    return {
        "select": f"val {select}",
        "chosen": entry(winner),
        "candidates": [{**entry(c), "val": summary(c.val), "test_display_only": summary(c.test)} for c in candidates],
    }


def check(config: Config) -> None:
    """auto compares classifiers on the cached features of the frozen backbone: refuse anything else at once,
    also what a method it compares cannot do under it (its ``check_for_auto``)."""
    cfg = config.decouple
    if cfg.features != "cached" or cfg.trainable != "classifier":
        raise ConfigError(
            "--method auto: works on cached features with a frozen backbone; "
            f"got decouple.features={cfg.features}, decouple.trainable={cfg.trainable}"
        )
    for name in method_names():
        spec = spec_of(name)
        if spec.in_all and spec.check_for_auto is not None:
            spec.check_for_auto(config)


def fit(context: FitContext) -> Fitted:
    """The best of ``context.fitted`` and their variants on validation (``decouple.select``)."""
    check(context.config)
    cfg = context.config.decouple
    candidates: list[Candidate] = []
    for method, fitted in context.fitted.items():
        spec = spec_of(method)
        tried = spec.variants(context, fitted) if spec.variants is not None else [fitted]
        for variant in tried:
            # Test is scored for the record only; pick_best below reads val alone.
            val, test = _scores(context, variant, "val"), _scores(context, variant, "test")
            candidates.append(Candidate(method, variant, val, test))
    winner = pick_best(candidates, cfg.select)
    log.info("auto: %s is best on val %s (%.1f)", winner.label, cfg.select, winner.val[cfg.select] or 0.0)
    record = _record(candidates, winner, cfg.select)
    info = {**winner.fitted.info, "chosen": winner.label}
    settings = {"features": "cached", "chosen": winner.label}
    params = dict(winner.fitted.params)
    return Fitted(winner.fitted.head, params=params, info=info, record={"auto": record}, settings=settings)


SPEC = register_method(
    MethodSpec(
        name="auto",
        summary="every method and its hyper-parameters, the best on validation kept",
        label="Auto (best on val)",
        color="tab:brown",
        fit=fit,
        order=1000,
        in_all=False,
        chooses_among_others=True,
        check=check,
    )
)
