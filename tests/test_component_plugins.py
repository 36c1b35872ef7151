"""A loss, a sampling strategy and a dataset reader defined and registered in this file, with keys of their
own, work everywhere longtail lists or configures components (train, grid, `config --help`, the docs'
generator), with no other file changed: the extension point of tests/test_method_plugin.py, for the rest."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from conftest import WB_NO_GRID
from longtail.cli import main
from longtail.config import Interval, load_config, option
from longtail.config.reference import reference_markdown
from longtail.data import DatasetSpec, register_dataset, unregister_dataset
from longtail.data.dataset import DatasetSplits
from longtail.data.features import FeatureDataset
from longtail.errors import ConfigError
from longtail.losses import Loss, LossSpec, register_loss, unregister_loss
from longtail.registry import DATASETS, LOSSES, SAMPLERS
from longtail.samplers import EpochSampler, SamplerSpec, epoch_generator, register_sampler, unregister_sampler


# --- a loss: PolyLoss (Leng et al. 2022), cross-entropy + ε (1 - p_t) ------------------------------------
@dataclass
class PolyConfig:
    """train.poly1: the weight of the first polynomial term."""

    epsilon: float = option(1.0, "ε of CE + ε (1 - p_t)", Interval(-1, None))


class PolyLoss(Loss):
    def __init__(self, epsilon: float) -> None:
        super().__init__()
        self.epsilon = epsilon

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(N, C), (N,) -> scalar."""
        ce = F.cross_entropy(logits, targets, reduction="none")
        return (ce + self.epsilon * (1 - torch.exp(-ce))).mean()


POLY = LossSpec(
    name="poly1",
    label="Poly-1",
    summary="cross-entropy + ε (1 - p_t) (Leng et al. 2022)",
    create=lambda counts, section, epochs: PolyLoss(section.epsilon),
    config=PolyConfig,
)


# --- a sampler: p_j ∝ n_j^(-exponent), the tail drawn more often than the head ------------------------------
@dataclass
class InverseConfig:
    """<train|decouple>.inverse: how strongly the rare classes are favoured."""

    exponent: float = option(1.0, "p_j ∝ n_j^(-exponent)", Interval(0, 4))


class InverseSampler(EpochSampler):
    def __init__(self, labels: Any, exponent: float, **common: Any) -> None:
        super().__init__(labels, **common)
        self._require_every_class("inverse-frequency")
        weights = self.class_counts.double().pow(-exponent)
        self.class_probs = weights / weights.sum()

    def global_indices(self) -> torch.Tensor:
        generator = epoch_generator(self.seed, self.epoch)
        return self._draw_within(self._draw_classes(self.class_probs, generator), generator)


INVERSE = SamplerSpec(
    name="inverse",
    label="Inverse-frequency",
    law="p_j ∝ n_j^(-exponent)",
    create=lambda labels, section, epochs, **common: InverseSampler(labels, section.exponent, **common),
    config=InverseConfig,
)


# --- a dataset reader: long-tailed Gaussian feature vectors, drawn from its own keys ------------------------
@dataclass
class GaussianConfig:
    """data.gaussian: the shape of the synthetic features."""

    classes: int = option(5, "number of classes", Interval(2, 1000, integer=True))
    dim: int = option(6, "feature width", Interval(1, 512, integer=True))


def gaussian_splits(cfg: Any) -> DatasetSplits:
    own = cfg.gaussian
    rng = np.random.default_rng(cfg.seed)
    centres = rng.normal(size=(own.classes, own.dim)) * 3
    sizes = [max(2, int(60 * 0.5**j)) for j in range(own.classes)]

    def draw(per_class: list[int]) -> FeatureDataset:
        y = np.repeat(np.arange(own.classes), per_class)
        x = centres[y] + rng.normal(size=(len(y), own.dim))
        return FeatureDataset(torch.tensor(x, dtype=torch.float32), torch.tensor(y))

    names = [f"g{j}" for j in range(own.classes)]
    splits = (draw(sizes), draw([5] * own.classes), draw([10] * own.classes))
    return DatasetSplits("gaussian", *splits, own.classes, names, (), (), {})


GAUSSIAN = DatasetSpec(
    name="gaussian",
    label="Gaussian features",
    summary="long-tailed Gaussian feature vectors drawn from data.seed",
    create=gaussian_splits,
    config=GaussianConfig,
    holds_features=True,
)


@pytest.fixture
def registered():
    specs = (register_loss(POLY), register_sampler(INVERSE), register_dataset(GAUSSIAN))
    yield specs
    unregister_loss("poly1")
    unregister_sampler("inverse")
    unregister_dataset("gaussian")


FAST = [
    "data.name=gaussian",
    "data.gaussian.dim=8",
    "train.epochs=2",
    "train.batch_size=32",
    "eval.many=40",
    "eval.few=10",
    "decouple.crt.epochs=1",
    "decouple.lws.epochs=1",
    "decouple.las.epochs=1",
    *WB_NO_GRID,
]


def test_their_keys_exist_are_checked_and_documented(registered, capsys: pytest.CaptureFixture[str]):
    config = load_config(None, ["train.loss=poly1", "train.poly1.epsilon=2", "decouple.inverse.exponent=0.5"])
    assert config.train.poly1.epsilon == 2.0 and config.decouple.inverse.exponent == 0.5
    assert config.data.gaussian.dim == 6  # every registered section has its defaults
    with pytest.raises(ConfigError, match=r"train\.inverse\.exponent=9\.0: expected a number in \[0, 4\]"):
        load_config(None, ["train.inverse.exponent=9"])
    with pytest.raises(ConfigError, match="train.loss='poly2': expected one of .*poly1"):
        load_config(None, ["train.loss=poly2"])
    reference = reference_markdown()
    for text in ("`train.poly1.epsilon`", "`decouple.inverse.exponent`", "`data.gaussian.dim`", "Leng et al."):
        assert text in reference
    with pytest.raises(SystemExit):
        main(["config", "--help"])
    help_text = capsys.readouterr().out
    assert "poly1: cross-entropy + ε (1 - p_t)" in help_text and "train.poly1.epsilon = 1.0" in help_text
    assert "inverse: p_j ∝ n_j^(-exponent)" in help_text and "gaussian: long-tailed Gaussian" in help_text


def test_train_with_them(registered, tmp_path: Path):
    args = [*FAST, "train.loss=poly1", "train.poly1.epsilon=0.5", "train.sampler=inverse"]
    assert main(["train", *args, "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["dataset"] == "gaussian" and 0 <= results["methods"]["joint"]["macro"] <= 100
    config = load_config(tmp_path / "run" / "config.yaml")  # the run's config reloads with its sections
    assert config.train.poly1.epsilon == 0.5 and config.train.sampler == "inverse"
    assert main(["decouple", str(tmp_path / "run"), "--method", "crt", "decouple.sampler=inverse"]) == 0


@pytest.mark.slow
def test_the_grid_takes_them_as_rows(registered, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    doc = tmp_path / "grid.md"
    args = ["--samplers", "instance,inverse", "--losses", "poly1", "--trainable", "none", "--doc", str(doc)]
    assert main(["grid", *args, "--out", str(tmp_path / "grid"), *FAST]) == 0
    text = doc.read_text()
    assert "| Inverse-frequency |" in text and "| Poly-1 |" in text


def test_unregistered_they_are_gone(registered):
    unregister_loss("poly1")
    unregister_sampler("inverse")
    unregister_dataset("gaussian")
    assert "poly1" not in LOSSES and "inverse" not in SAMPLERS and "gaussian" not in DATASETS
    assert "train.poly1.epsilon" not in reference_markdown()
    with pytest.raises(ConfigError, match="unknown config key"):
        load_config(None, ["train.poly1.epsilon=2"])
    register_loss(POLY), register_sampler(INVERSE), register_dataset(GAUSSIAN)  # for the fixture's teardown
