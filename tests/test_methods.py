"""Each stage-2 method through the method protocol (FitContext -> Fitted), on in-memory features."""

import numpy as np
import pytest
import torch
from torch import nn

from longtail.config import load_config
from longtail.engine.head_training import Features
from longtail.losses import log_prior
from longtail.methods import METHODS, FitContext, expand_methods, method_names, spec_of, train_on_features
from longtail.models.heads import LinearHead

CPU = torch.device("cpu")
COUNTS = [200, 50, 10, 4]


def blobs(counts, seed=0, spread=0.6) -> Features:
    """Gaussian blobs, one per class, ``counts[c]`` points each: (N, 8) features."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(len(counts), 8) * 3
    x = torch.cat([centres[c] + spread * torch.randn(n, 8, generator=g) for c, n in enumerate(counts)])
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    return Features(x, y)


def biased_joint_head(num_classes=4) -> LinearHead:
    """A linear classifier whose head class has the largest weight norm, as joint training leaves it."""
    head = LinearHead(8, num_classes)
    with torch.no_grad():
        head.weight.copy_(torch.eye(num_classes, 8) * torch.tensor([4.0, 1.0, 0.5, 0.3]).view(-1, 1)[:num_classes])
        head.bias.copy_(torch.tensor([1.0, 0.0, -0.5, -1.0])[:num_classes])
    return head


def context(*overrides: str, joint: nn.Module | None = None, seed: int = 0) -> FitContext:
    """A FitContext over blobs: train long-tailed (COUNTS), val 30 per class, test 50 per class."""
    splits = {"train": blobs(COUNTS), "val": blobs([30] * 4, seed=2), "test": blobs([50] * 4, seed=1)}
    config = load_config(None, [f"seed={seed}", *overrides])
    trainer = train_on_features(splits.__getitem__, config, CPU)
    return FitContext(splits.__getitem__, joint or biased_joint_head(), COUNTS, config, CPU, trainer)


def accuracy(head, data: Features) -> float:
    with torch.no_grad():
        return float((head(data.x).argmax(1) == data.y).float().mean())


def test_registry_lists_each_method_from_its_own_file():
    assert set(method_names()) >= {"ncm", "crt", "tau_norm", "lws", "logit_adjust", "auto"}
    for name in ("ncm", "crt", "tau_norm", "lws", "logit_adjust", "auto"):
        assert METHODS[name].fit.__module__ == f"longtail.methods.{name}"
    assert expand_methods(["all"]) == [n for n in method_names() if METHODS[n].in_all]
    assert expand_methods(["auto"])[-1] == "auto" and "crt" in expand_methods(["auto"])
    assert expand_methods(["crt", "crt,ncm".split(",")[1]]) == ["crt", "ncm"]


def test_unknown_method_names_the_choices():
    from longtail.errors import ConfigError

    with pytest.raises(ConfigError, match=r"--method 'bogus': expected one of .*crt"):
        spec_of("bogus")


def test_crt_learns_a_fresh_classifier():
    ctx = context("decouple.crt.epochs=20", "decouple.crt.batch_size=64")
    fitted = METHODS["crt"].fit(ctx)
    assert isinstance(fitted.head, nn.Linear) and accuracy(fitted.head, ctx.features("test")) > 0.95
    assert fitted.info == {"trainable": "classifier"} and fitted.params == {"lr": 0.2}


def test_crt_is_seeded():
    a = METHODS["crt"].fit(context("decouple.crt.epochs=2", "decouple.crt.batch_size=32", seed=7)).head
    b = METHODS["crt"].fit(context("decouple.crt.epochs=2", "decouple.crt.batch_size=32", seed=7)).head
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


def test_lr_factor_scales_the_learning_rate():
    ctx = context("decouple.crt.epochs=1").with_lr_factor(0.25)
    assert ctx.section("crt").lr == pytest.approx(0.05) and ctx.config.decouple.crt.lr == 0.2


def test_lws_only_moves_scales_and_helps_rare_classes():
    joint = biased_joint_head()
    ctx = context("decouple.lws.epochs=30", "decouple.lws.batch_size=64", joint=joint)
    lws = METHODS["lws"].fit(ctx).head
    assert torch.equal(lws.weight, joint.weight) and torch.equal(lws.bias, joint.bias)
    assert not torch.allclose(lws.scales, torch.ones(4))
    assert accuracy(lws, ctx.features("test")) > accuracy(joint, ctx.features("test"))


def test_tau_is_chosen_on_validation():
    joint = biased_joint_head()
    joint.bias.data.zero_()
    fitted = METHODS["tau_norm"].fit(context(joint=joint))
    curve = fitted.record["tau_curve"]["val"]
    assert [p["tau"] for p in curve] == pytest.approx(np.linspace(0, 2, 21).tolist())
    best = max(p["macro"] for p in curve)
    first_best = next(p["tau"] for p in curve if p["macro"] == best)
    assert float(fitted.head.tau) == pytest.approx(first_best)  # ties go to the smallest τ
    assert curve[0]["macro"] < best  # τ = 0 is the biased joint classifier
    assert fitted.record["tau_curve"]["chosen"] == pytest.approx(first_best)
    assert len(fitted.record["tau_curve"]["test"]) == 21 and fitted.info == {"tau": fitted.params["tau"]}


def test_tau_select_metric():
    fitted = METHODS["tau_norm"].fit(context("decouple.select=few", "decouple.tau.steps=3"))
    curve = fitted.record["tau_curve"]["val"]
    assert float(fitted.head.tau) == max(curve, key=lambda p: (p["few"], -p["tau"]))["tau"]


def test_ncm_head_on_blobs():
    ctx = context()
    assert accuracy(METHODS["ncm"].fit(ctx).head, ctx.features("test")) > 0.95


def test_logit_adjustment_is_chosen_on_validation_and_helps_rare_classes():
    joint = biased_joint_head()
    ctx = context("decouple.logit_adjust.steps=11", joint=joint)
    fitted = METHODS["logit_adjust"].fit(ctx)
    curve, val = fitted.record["logit_adjust_curve"]["val"], ctx.features("val")
    assert len(curve) == 11 and curve[0]["tau"] == 0.0
    with torch.no_grad():
        expected = joint(val.x) - float(fitted.head.tau) * log_prior(COUNTS)
        assert torch.allclose(fitted.head(val.x), expected, atol=1e-5)
    best = max(p["macro"] for p in curve)
    assert float(fitted.head.tau) == pytest.approx(next(p["tau"] for p in curve if p["macro"] == best))
    assert best > curve[0]["macro"]  # τ = 0 is the biased joint classifier


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_logit_adjustment_sweep_in_row_chunks_equals_the_whole_matrix(dtype: torch.dtype):
    """At 65,536 classes a chunk is 16 rows: 40 rows cross two chunk boundaries, with the same arg-max per τ."""
    from longtail.methods.logit_adjust import adjusted_predictions

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(40, 4, generator=generator).to(dtype)
    weight, bias = torch.randn(65536, 4, generator=generator), torch.randn(65536, generator=generator)
    prior = torch.log_softmax(torch.randn(65536, generator=generator), 0)
    taus = [0.0, 0.5, 1.0, 2.0]
    logits = torch.nn.functional.linear(x.float(), weight, bias)
    expected = torch.stack([(logits - tau * prior).argmax(1) for tau in taus])
    assert torch.equal(adjusted_predictions(x, weight, bias, prior, taus), expected)
    assert adjusted_predictions(x, weight, None, prior, []).shape == (0, 40)


@pytest.mark.parametrize("sampler", ["class_aware", "class", "progressive", "power"])
def test_crt_accepts_every_sampler(sampler: str):
    ctx = context("decouple.crt.epochs=10", "decouple.crt.batch_size=64", f"decouple.sampler={sampler}")
    assert accuracy(METHODS["crt"].fit(ctx).head, ctx.features("test")) > 0.9


def test_stage2_defaults_to_the_official_class_aware_sampler():
    cfg = load_config(None).decouple
    assert cfg.sampler == "class_aware" and cfg.class_aware.num_samples_cls == 4


def test_auto_picks_the_best_on_validation_among_every_method_and_lr():
    ctx = context("decouple.crt.epochs=3", "decouple.lws.epochs=3")
    for name in expand_methods(["all"]):
        ctx.fitted[name] = METHODS[name].fit(ctx)
    auto = METHODS["auto"].fit(ctx)
    candidates = auto.record["auto"]["candidates"]
    labels = [c["label"] for c in candidates]
    assert "crt (lr=0.05)" in labels and "crt (lr=0.8)" in labels and "ncm" in labels
    best = max(c["val"]["macro"] for c in candidates)
    chosen = auto.record["auto"]["chosen"]["label"]
    assert next(c for c in candidates if c["label"] == chosen)["val"]["macro"] == best
    assert auto.info["chosen"] == chosen


@pytest.mark.parametrize("name", ["ncm", "crt", "tau_norm", "lws", "logit_adjust"])
def test_every_head_is_exactly_its_linear_form(name: str):
    """``as_linear()`` (export folding, weight-norm figures) gives the head's own logits."""
    from longtail.export.fold import fold_head

    ctx = context("decouple.crt.epochs=1", "decouple.lws.epochs=2")
    head = METHODS[name].fit(ctx).head
    x = ctx.features("test").x
    with torch.no_grad():
        assert torch.allclose(fold_head(head)(x), head(x), atol=1e-4)
