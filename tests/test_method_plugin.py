"""A stage-2 method defined and registered in this file works through every command, no other file touched.

This is the worked example of docs/architecture.md: ``debias`` keeps the joint
classifier and scales its bias by ``1 - decouple.debias.strength``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from conftest import copy_run
from longtail.cli import main
from longtail.config import load_config, option
from longtail.errors import ConfigError
from longtail.methods import METHODS, FitContext, Fitted, MethodSpec, register_method, unregister_method
from longtail.models.heads import LinearHead


@dataclass
class DebiasConfig:
    """decouple.debias: how much of the joint bias to remove."""

    strength: float = option(1.0, "share of the joint classifier's bias removed (1: none left)")

    def check(self, prefix: str) -> None:
        if not 0 <= self.strength <= 1:
            raise ConfigError(f"{prefix}.strength={self.strength!r}: expected a number in [0, 1]")


def fit(context: FitContext) -> Fitted:
    strength = context.config.decouple.debias.strength
    joint = context.joint
    head = LinearHead(joint.in_features, joint.out_features)
    with torch.no_grad():
        head.weight.copy_(joint.weight)
        head.bias.copy_(joint.bias * (1 - strength))
    return Fitted(head, params={"strength": strength}, info={"strength": strength})


SPEC = MethodSpec(
    name="debias",
    label="Debiased",
    color="tab:cyan",
    fit=fit,
    order=60,
    section="debias",
    config=DebiasConfig,
    needs_linear_joint=True,
)


@pytest.fixture(scope="module")
def registered():
    register_method(SPEC)
    yield SPEC
    unregister_method(SPEC.name)


def test_its_config_keys_exist_and_are_checked(registered):
    assert load_config(None, ["decouple.debias.strength=0.25"]).decouple.debias.strength == 0.25
    with pytest.raises(ConfigError, match=r"decouple\.debias\.strength=2\.0: expected a number in \[0, 1\]"):
        load_config(None, ["decouple.debias.strength=2"])


@pytest.mark.slow  # 5-6 s: make test runs it (keeps plain pytest under 3 minutes)
def test_decouple_report_and_export_take_it(registered, tiny_run: Path, tmp_path: Path, capsys):
    run = copy_run(tiny_run, tmp_path / "run")
    assert main(["decouple", str(run), "--method", "debias", "decouple.debias.strength=0.5"]) == 0
    table = capsys.readouterr().out
    assert "Debiased" in table
    results = json.loads((run / "results.json").read_text())
    row = results["methods"]["debias"]
    assert row["strength"] == 0.5 and 0 <= row["macro"] <= 100 and "debias" in results["val_methods"]
    assert (run / "classifiers" / "debias.pt").is_file()
    # --method all includes it (at its default strength: the saved one is fit again, with --overwrite)
    assert main(["decouple", str(run), "--method", "all", "--overwrite"]) == 0
    assert "Debiased" in capsys.readouterr().out
    # the report shows it in its table and figures
    assert main(["report", str(run)]) == 0
    assert "Debiased" in (run / "report.md").read_text()
    # export folds it (a linear head) and checks itself against the pipeline
    assert main(["export", str(run), "--method", "debias", "--out", str(tmp_path / "debias.pt2")]) == 0
    out = capsys.readouterr().out
    assert "exported debias (strength=1)" in out, out  # `--method all` refitted it at its default
    assert METHODS["debias"] is registered
