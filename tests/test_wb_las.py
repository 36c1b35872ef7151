"""Weight balancing (``wb``) and MiSLAS's label-aware smoothing (``las``): on in-memory features, then on a run."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pytest
import torch

from conftest import WB_NO_GRID, copy_run
from longtail.cli import main
from longtail.config import load_config
from longtail.engine.head_training import Features
from longtail.engine.maxnorm import relative_radius
from longtail.errors import ConfigError
from longtail.losses import ClassBalancedLoss, LabelAwareSmoothingLoss
from longtail.methods import METHODS, FitContext, train_on_features
from longtail.models.heads import LinearHead, weight_norms

CPU = torch.device("cpu")
COUNTS = [200, 50, 10, 4]

# A small grid, so that the grid tests stay fast: (0.1, 0.1) configured, then 2 x 2 more.
SMALL_GRID = ("decouple.wb.weight_decay_grid=[0.001,0.1]", "decouple.wb.thresh_grid=[0.0,0.1]")


def blobs(counts: list[int], seed: int = 0, spread: float = 0.6) -> Features:
    """Gaussian blobs, one per class, ``counts[c]`` points each: (N, 8) features."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(len(counts), 8) * 3
    x = torch.cat([centres[c] + spread * torch.randn(n, 8, generator=g) for c, n in enumerate(counts)])
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    return Features(x, y)


def biased_joint_head() -> LinearHead:
    """A linear classifier whose head class has the largest weight norm (4, 1, 0.5, 0.3), as joint training leaves."""
    head = LinearHead(8, 4)
    with torch.no_grad():
        head.weight.copy_(torch.eye(4, 8) * torch.tensor([4.0, 1.0, 0.5, 0.3]).view(-1, 1))
        head.bias.copy_(torch.tensor([1.0, 0.0, -0.5, -1.0]))
    return head.requires_grad_(False)


def context(*overrides: str, joint: LinearHead | None = None) -> FitContext:
    """A FitContext over blobs: train long-tailed (COUNTS), val 30 per class, test 50 per class."""
    splits = {"train": blobs(COUNTS), "val": blobs([30] * 4, seed=2), "test": blobs([50] * 4, seed=1)}
    config = load_config(None, list(overrides))
    trainer = train_on_features(splits.__getitem__, config, CPU)
    return FitContext(splits.__getitem__, joint or biased_joint_head(), COUNTS, config, CPU, trainer)


class RecordingTrainer:
    """Wraps a context's trainer and keeps the keyword arguments of every training."""

    def __init__(self, trainer) -> None:
        self.trainer = trainer
        self.calls: list[dict] = []

    def __call__(self, head, section, how):
        self.calls.append({"section": section, **{f.name: getattr(how, f.name) for f in dataclasses.fields(how)}})
        return self.trainer(head, section, how)


def recording(ctx: FitContext) -> tuple[FitContext, RecordingTrainer]:
    ctx.trainer = RecordingTrainer(ctx.trainer)
    return ctx, ctx.trainer


def few_accuracy(ctx: FitContext, head, split: str = "test") -> float:
    with torch.no_grad():
        return ctx.summary(head(ctx.features(split).x).argmax(1), split)["few"]


# --- wb: MaxNorm, the loss, the grid ------------------------------------------------------------------------


def test_wb_keeps_every_weight_row_inside_the_radius():
    joint = biased_joint_head()  # row norms 4, 1, 0.5, 0.3
    fitted = METHODS["wb"].fit(context(*WB_NO_GRID, "decouple.wb.radius=0.8", "decouple.wb.lr=0.5", joint=joint))
    norms = weight_norms(fitted.head.weight.detach())
    assert (norms <= 0.8 + 1e-6).all()
    assert norms.max() == pytest.approx(0.8, abs=1e-5)  # the head class's row was projected onto the sphere
    assert fitted.params == {"lr": 0.5, "weight_decay": 0.1, "radius": 0.8} and "thresh" not in fitted.info
    assert not torch.equal(fitted.head.bias, joint.bias)  # the bias is fine-tuned, never projected


def test_wb_relative_radius_is_measured_on_the_joint_weights():
    joint = biased_joint_head()
    fitted = METHODS["wb"].fit(context(*WB_NO_GRID, "decouple.wb.thresh=0.25", joint=joint))
    radius = relative_radius(joint.weight, 0.25)
    assert radius == pytest.approx(0.3 + 0.25 * (4 - 0.3))
    assert fitted.info["radius"] == pytest.approx(radius, abs=1e-6) and fitted.info["thresh"] == 0.25
    assert (weight_norms(fitted.head.weight.detach()) <= radius + 1e-6).all()


def test_wb_leaves_rows_inside_a_large_ball_untouched():
    """A radius no row reaches changes nothing, bit for bit: the same training as without MaxNorm."""
    free = METHODS["wb"].fit(context(*WB_NO_GRID, "decouple.wb.radius=0")).head  # radius 0: no projection
    loose = METHODS["wb"].fit(context(*WB_NO_GRID, "decouple.wb.radius=1000")).head
    assert torch.equal(free.weight, loose.weight) and torch.equal(free.bias, loose.bias)
    tight = METHODS["wb"].fit(context(*WB_NO_GRID, "decouple.wb.radius=0.5")).head
    assert not torch.equal(free.weight, tight.weight)


def test_wb_fine_tunes_the_joint_classifier_with_the_class_balanced_loss_and_instance_sampling():
    ctx, trainer = recording(context(*WB_NO_GRID, "decouple.wb.beta=0.99", "decouple.wb.gamma=1.5"))
    METHODS["wb"].fit(ctx)
    (call,) = trainer.calls
    assert call["method"] == "wb" and call["sampler"] == "instance" and call["bn"] is None
    criterion = call["criterion"]
    assert isinstance(criterion, ClassBalancedLoss) and criterion.beta == 0.99 and criterion.gamma == 1.5
    assert call["section"].weight_decay == 0.1 and call["section"].lr == 0.01


def test_wb_grid_is_chosen_on_validation_and_each_point_is_its_own_training():
    ctx, trainer = recording(context(*SMALL_GRID))
    fitted = METHODS["wb"].fit(ctx)
    grid = fitted.record["wb_grid"]
    points = grid["points"]
    # The configured point first, then the product, without repeats.
    assert [(p["weight_decay"], p["thresh"]) for p in points] == [(0.1, 0.1), (0.1, 0.0), (0.001, 0.1), (0.001, 0.0)]
    tags = [call["method"] for call in trainer.calls]
    assert tags[0] == "wb" and len(set(tags)) == 4
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", tag) for tag in tags)  # names files and TensorBoard runs
    assert [call["section"].weight_decay for call in trainer.calls] == [0.1, 0.1, 0.001, 0.001]
    best = max(round(p["val"]["macro"], 6) for p in points)
    first_best = next(p for p in points if round(p["val"]["macro"], 6) == best)
    assert grid["chosen"] == {"lr": 0.01, **{k: first_best[k] for k in ("weight_decay", "thresh", "radius")}}
    assert fitted.params == grid["chosen"] and grid["select"] == "val macro"
    assert all(set(p["test_display_only"]) >= {"many", "medium", "few", "all", "macro"} for p in points)


def test_wb_grid_choice_never_reads_test():
    overrides = (*SMALL_GRID, "decouple.wb.epochs=2")
    clean = METHODS["wb"].fit(context(*overrides))
    ctx = context(*overrides)
    features = ctx.features
    g = torch.Generator().manual_seed(3)

    def garbage_test(split: str) -> Features:
        data = features(split)
        if split != "test":
            return data
        return Features(torch.randn(data.x.shape, generator=g) * 100, data.y[torch.randperm(len(data.y), generator=g)])

    ctx.features = garbage_test
    noisy = METHODS["wb"].fit(ctx)
    assert noisy.params == clean.params
    assert torch.equal(noisy.head.weight, clean.head.weight)
    val_curve = [p["val"] for p in clean.record["wb_grid"]["points"]]
    assert [p["val"] for p in noisy.record["wb_grid"]["points"]] == val_curve


def test_wb_config_is_checked():
    with pytest.raises(ConfigError, match=r"^decouple.wb.thresh_grid=\[0.1, -1.0\]: expected a list of numbers >= 0$"):
        load_config(None, ["decouple.wb.thresh_grid=[0.1,-1]"])
    with pytest.raises(ConfigError, match=r"^decouple.wb.radius=-1.0: expected null or a number >= 0$"):
        load_config(None, ["decouple.wb.radius=-1"])
    with pytest.raises(ConfigError, match=r"^decouple.wb.beta=1.0: expected a number in \[0, 1\)$"):
        load_config(None, ["decouple.wb.beta=1"])


# --- las: label-aware smoothing -----------------------------------------------------------------------------


def test_label_aware_smoothing_per_class_epsilons():
    """Concave from eps_head (largest class) to eps_tail (smallest): eps_tail + (eps_head - eps_tail) sin(π/2 t)."""
    counts = [100, 10, 1]
    t_middle = (10 - 1) / (100 - 1)
    eps = LabelAwareSmoothingLoss(counts, 0.3, 0.0).epsilons
    assert eps.tolist() == pytest.approx([0.3, 0.3 * math.sin(math.pi / 2 * t_middle), 0.0])
    assert eps[1].item() == pytest.approx(0.0426945, abs=1e-6)
    eps = LabelAwareSmoothingLoss(counts, 0.4, 0.1).epsilons  # MiSLAS's CIFAR-100-LT setting
    assert eps.tolist() == pytest.approx([0.4, 0.1 + 0.3 * math.sin(math.pi / 2 * t_middle), 0.1])


def test_las_trains_with_label_aware_smoothing_from_its_section():
    ctx, trainer = recording(context("decouple.las.eps_head=0.4", "decouple.las.eps_tail=0.1", "decouple.las.epochs=1"))
    fitted = METHODS["las"].fit(ctx)
    (call,) = trainer.calls
    criterion = call["criterion"]
    assert isinstance(criterion, LabelAwareSmoothingLoss) and call["method"] == "las"
    t = [(n - 4) / (200 - 4) for n in (200, 50, 10, 4)]
    assert criterion.epsilons.tolist() == pytest.approx([0.1 + 0.3 * math.sin(math.pi / 2 * x) for x in t])
    assert call["bn"] is None and call["sampler"] is None  # decouple.sampler: class-balanced, as MiSLAS
    assert fitted.info == {"init": "joint", "eps_head": 0.4, "eps_tail": 0.1, "shift_bn": False}
    assert fitted.params == {"lr": 0.05}


def test_las_improves_few_shot_accuracy_over_joint():
    joint = biased_joint_head()
    ctx = context("decouple.las.epochs=20", joint=joint)
    las = METHODS["las"].fit(ctx).head
    assert few_accuracy(ctx, las) > few_accuracy(ctx, joint) + 10


def test_las_starts_from_the_joint_classifier_or_afresh():
    joint = biased_joint_head()
    tiny_lr = ("decouple.las.lr=1e-12", "decouple.las.epochs=1")
    kept = METHODS["las"].fit(context(*tiny_lr, joint=joint)).head
    assert torch.allclose(kept.weight, joint.weight) and torch.allclose(kept.bias, joint.bias)
    fresh = METHODS["las"].fit(context(*tiny_lr, "decouple.las.init=fresh", joint=joint)).head
    assert not torch.allclose(fresh.weight, joint.weight)


def test_las_shift_bn_needs_images_and_is_not_an_auto_candidate():
    ctx = context("decouple.las.shift_bn=true", "decouple.las.epochs=1")
    with pytest.raises(ValueError, match=r"^las: bn='train' needs images; features are all there is here$"):
        METHODS["las"].fit(ctx)
    with pytest.raises(ConfigError, match=r"^--method auto: .*decouple.las.shift_bn=true"):
        METHODS["las"].variants(ctx, None)


def test_auto_refuses_las_shift_bn_before_fitting_any_method(tiny_run: Path, tmp_path: Path, capsys):
    """It was refused when auto asked LAS for its variants: after ncm, crt, ..., las had been fitted and saved."""
    run = copy_run(tiny_run, tmp_path / "run")
    assert main(["decouple", str(run), "--method", "auto", "decouple.las.shift_bn=true"]) == 1
    assert "--method auto: compares classifiers on the frozen backbone" in capsys.readouterr().err
    assert not list(run.glob("classifiers/*.pt"))


def test_las_shift_bn_is_refused_on_precomputed_features():
    """Accepted and without effect before: a features file has no BatchNorm to re-estimate."""
    features = ["data.name=features", "data.path=f.npz"]
    with pytest.raises(ConfigError, match="decouple.las.shift_bn=true: data.name=features holds precomputed"):
        METHODS["las"].check(load_config(None, [*features, "decouple.las.shift_bn=true"]))
    METHODS["las"].check(load_config(None, features))  # off: fine
    METHODS["las"].check(load_config(None, ["decouple.las.shift_bn=true"]))  # on images: fine


def test_las_variants_try_its_learning_rate():
    ctx = context("decouple.las.epochs=1")
    fitted = METHODS["las"].fit(ctx)
    tried = METHODS["las"].variants(ctx, fitted)
    assert [v.params["lr"] for v in tried] == pytest.approx([0.05, 0.0125, 0.2])


# --- on a run: decouple, auto, export -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def decoupled(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared tiny run after `longtail decouple --method wb,las`."""
    run = copy_run(tiny_run, tmp_path_factory.mktemp("wb_las") / "run")
    assert main(["decouple", str(run), "--method", "wb,las", "decouple.las.epochs=3", "decouple.wb.epochs=3"]) == 0
    return run


def test_decouple_writes_wb_and_las(decoupled: Path):
    import json

    assert (decoupled / "classifiers" / "wb.pt").is_file() and (decoupled / "classifiers" / "las.pt").is_file()
    results = json.loads((decoupled / "results.json").read_text())
    for split in ("methods", "val_methods"):
        assert {"joint", "wb", "las"} <= set(results[split])
    assert results["methods"]["wb"]["radius"] == results["wb_grid"]["chosen"]["radius"]
    assert len(results["wb_grid"]["points"]) == 9
    assert results["methods"]["las"]["init"] == "joint"
    assert results["stage2"]["wb"]["features"] == "cached" and results["stage2"]["wb"]["grid_points"] == 9
    assert not list((decoupled / "classifiers").glob("*.partial"))  # finished trainings leave no state


@pytest.mark.slow  # seconds of subprocesses or training; `make test` runs it (the fast suite keeps under 3 minutes)
def test_export_works_for_wb_and_las(decoupled: Path, tmp_path: Path):
    from longtail.export import export_run

    for method in ("wb", "las"):
        result = export_run(decoupled, method, tmp_path / method)
        assert result.path.is_file() and result.metadata["classifier"]["params"]["lr"] > 0


@pytest.mark.slow  # seconds of subprocesses or training; `make test` runs it (the fast suite keeps under 3 minutes)
def test_las_shift_bn_trains_on_images_with_batch_statistics(tiny_run: Path, tmp_path: Path):
    import json

    from longtail.export import export_run

    run = copy_run(tiny_run, tmp_path / "run")
    assert main(["decouple", str(run), "--method", "las", "decouple.las.shift_bn=true", "decouple.las.epochs=2"]) == 0
    saved = torch.load(run / "classifiers" / "las.pt", weights_only=True)
    stage1 = torch.load(run / "checkpoint.pt", weights_only=True)["model"]
    means = [k for k in saved["backbone"] if k.endswith("running_mean")]
    assert means and any(not torch.equal(saved["backbone"][k], stage1[f"backbone.{k}"]) for k in means)
    weights = [k for k in saved["backbone"] if k.endswith(".weight")]  # no BatchNorm or conv parameter trains
    assert all(torch.equal(saved["backbone"][k], stage1[f"backbone.{k}"]) for k in weights)
    results = json.loads((run / "results.json").read_text())
    assert results["stage2"]["las"] == {"features": "online", "bn": "train", "batch_size": 128, "steps": 2 * 3}
    assert results["methods"]["las"]["shift_bn"] is True
    export_run(run, "las", tmp_path / "las")  # exported with its re-estimated backbone (checked inside)


def test_auto_includes_wb_and_las_candidates(tiny_decoupled_run: Path):
    import json

    results = json.loads((tiny_decoupled_run / "results.json").read_text())
    labels = [c["label"] for c in results["auto"]["candidates"]]
    assert sum(label.startswith("wb (") for label in labels) == 1  # its grid is its own tuning
    assert sum(label.startswith("las (lr=") for label in labels) == 3  # lr x decouple.auto_lr_factors
    assert (tiny_decoupled_run / "classifiers" / "wb.pt").is_file()


def test_wb_grid_refuses_a_backbone_changed_by_batchnorm_in_train_mode(tiny_run: Path, tmp_path: Path, capsys):
    run = copy_run(tiny_run, tmp_path / "run")
    online = ["decouple.features=online", "decouple.bn=train", "decouple.wb.epochs=1"]
    assert main(["decouple", str(run), "--method", "wb", *online]) != 0
    assert "decouple.wb: its validation grid needs the frozen backbone" in capsys.readouterr().err
    assert main(["decouple", str(run), "--method", "wb", *online, *WB_NO_GRID]) == 0  # one point: nothing to choose
    assert "backbone" in torch.load(run / "classifiers" / "wb.pt", weights_only=True)
