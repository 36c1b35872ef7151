"""Stage 2 modes: the feature cache, online features (BatchNorm eval/train), augmented views, --method auto."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import WB_NO_GRID, tiny_overrides
from longtail.cli import main
from longtail.engine.feature_cache import feature_path
from longtail.errors import ConfigError
from longtail.methods import METHODS, Fitted, expand_methods
from longtail.methods.auto import Candidate, pick_best
from longtail.pipeline import decouple
from longtail.runs import file_sha256

NO_AUGMENTATION = ["data.hflip=false", "data.crop_padding=0"]


@pytest.fixture(scope="module")
def plain_run(tiny_fmnist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny stage-1 run without augmentation, so online and cached stage 2 see the same inputs."""
    run = tmp_path_factory.mktemp("runs") / "plain"
    args = ["train", *tiny_overrides(tiny_fmnist), *NO_AUGMENTATION, "--out", str(run), "--no-progress"]
    assert main(args) == 0
    return run


@pytest.fixture
def run(plain_run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(plain_run, copy)
    return copy


def _how(results: dict, method: str) -> dict:
    """results.json ``stage2.<method>`` less the schedule every trained head records (batch size, steps)."""
    how = dict(results["stage2"][method])
    assert isinstance(how.pop("batch_size"), int) and isinstance(how.pop("steps"), int)
    return how


def _results(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


def _classifier(run: Path, method: str) -> dict:
    return torch.load(run / "classifiers" / f"{method}.pt", weights_only=True)


def test_features_are_cached_once_and_reused(run: Path):
    first = decouple(run, ["crt", "tau_norm"])
    assert first["timing"]["feature_cache_hits"] == {"train": False, "val": False, "test": False}
    sha = file_sha256(run / "checkpoint.pt")
    for split in ("train", "val", "test"):
        stored = torch.load(feature_path(run, split), weights_only=True)
        assert stored["key"]["checkpoint_sha256"] == sha and stored["key"]["split"] == split
        assert stored["x"].dim() == 2 and len(stored["x"]) == len(stored["y"])
    assert decouple(run, ["crt", "tau_norm"])["methods"] == first["methods"]  # the same settings: reused
    second = decouple(run, ["crt", "tau_norm"], overwrite=True)  # fit again: on the cached features
    assert second["timing"]["feature_cache_hits"] == {"train": True, "val": True, "test": True}
    assert second["methods"] == first["methods"]


def test_a_stale_or_corrupt_cache_is_recomputed_not_used(run: Path):
    reference = decouple(run, ["ncm"])["methods"]["ncm"]
    path = feature_path(run, "train")
    stored = torch.load(path, weights_only=True)
    # Features of another checkpoint: same shapes, other values, other hash.
    torch.save(
        {**stored, "x": torch.randn_like(stored["x"]), "key": {**stored["key"], "checkpoint_sha256": "0" * 64}}, path
    )
    feature_path(run, "test").write_bytes(b"truncated")
    again = decouple(run, ["ncm"], overwrite=True)
    assert again["timing"]["feature_cache_hits"] == {"train": False, "val": True, "test": False}
    assert again["methods"]["ncm"] == reference
    assert torch.load(path, weights_only=True)["key"]["checkpoint_sha256"] == file_sha256(run / "checkpoint.pt")


def test_online_crt_with_eval_batchnorm_matches_cached_without_augmentation(run: Path):
    """Same images, sampler, seed and initialisation: the backbone in the loop changes nothing but time."""
    cached = decouple(run, ["crt", "lws"])
    cached_heads = {m: _classifier(run, m)["head"] for m in ("crt", "lws")}
    online = decouple(run, ["crt", "lws"], ["decouple.features=online"], overwrite=True)
    assert _how(online, "crt") == {"features": "online", "bn": "eval"}
    for method in ("crt", "lws"):
        saved = _classifier(run, method)
        assert "backbone" not in saved  # BatchNorm in eval mode: the backbone is unchanged
        for name, value in saved["head"]["state_dict"].items():
            torch.testing.assert_close(value, cached_heads[method]["state_dict"][name], atol=1e-4, rtol=1e-4)
        assert online["methods"][method]["all"] == pytest.approx(cached["methods"][method]["all"], abs=0.51)


def test_online_with_train_batchnorm_keeps_its_drifted_backbone(run: Path):
    results = decouple(run, ["crt"], ["decouple.features=online", "decouple.bn=train"])
    assert _how(results, "crt") == {"features": "online", "bn": "train"}
    saved = _classifier(run, "crt")
    stage1 = torch.load(run / "checkpoint.pt", weights_only=True)["model"]
    means = [k for k in saved["backbone"] if k.endswith("running_mean")]
    assert means and any(not torch.equal(saved["backbone"][k], stage1[f"backbone.{k}"]) for k in means)
    # The drifted statistics are what the classifier is scored with, now and on re-evaluation.
    assert main(["eval", str(run)]) == 0
    assert _results(run)["methods"]["crt"] == results["methods"]["crt"]


def test_augmented_views_are_cached_and_trained_on(run: Path, tiny_fmnist: Path):
    results = decouple(run, ["crt"], ["decouple.views=2"])
    assert _how(results, "crt") == {"features": "cached", "views": 2}
    views = torch.load(feature_path(run, "train_views2"), weights_only=True)["x"]
    plain = torch.load(feature_path(run, "train"), weights_only=True)["x"]
    assert views.shape == (2, *plain.shape)
    # This run has no stage-1 augmentation, so its "augmented" views equal the test-time view.
    torch.testing.assert_close(views[0], plain)


def test_views_differ_from_the_test_time_view_when_augmenting(tiny_fmnist: Path, tmp_path: Path):
    run = tmp_path / "aug"
    assert main(["train", *tiny_overrides(tiny_fmnist), "train.epochs=1", "--out", str(run), "--no-progress"]) == 0
    decouple(run, ["lws"], ["decouple.views=2"])
    views = torch.load(feature_path(run, "train_views2"), weights_only=True)["x"]
    plain = torch.load(feature_path(run, "train"), weights_only=True)["x"]
    assert not torch.allclose(views[0], plain) and not torch.allclose(views[0], views[1])


def test_tau_curves_hold_val_and_test_and_the_choice_follows_val(run: Path):
    results = decouple(run, ["tau_norm", "logit_adjust"])
    for key, method in (("tau_curve", "tau_norm"), ("logit_adjust_curve", "logit_adjust")):
        curve = results[key]
        assert len(curve["val"]) == len(curve["test"]) == 21
        best_val = max(point["macro"] for point in curve["val"])
        chosen = next(point for point in curve["val"] if point["macro"] == best_val)["tau"]
        assert curve["chosen"] == chosen == results["methods"][method]["tau"]
        test_at_chosen = next(p for p in curve["test"] if p["tau"] == chosen)
        assert test_at_chosen["macro"] == pytest.approx(results["methods"][method]["macro"])


def test_method_auto_keeps_the_best_candidate_on_val(run: Path, capsys: pytest.CaptureFixture):
    assert main(["decouple", str(run), "--method", "auto", "decouple.auto_lr_factors=[0.5, 1, 2]", *WB_NO_GRID]) == 0
    assert "Auto (best on val)" in capsys.readouterr().out
    results = _results(run)
    auto = results["auto"]
    candidates = auto["candidates"]
    # Every method of `all`, in table order; those with lr variants once per factor (the configured lr first).
    expected = []
    for name in expand_methods(["all"]):
        expected += [name] * (3 if METHODS[name].variants is not None else 1)
    assert [c["method"] for c in candidates] == expected and expected[:2] == ["ncm", "crt"]
    assert [c["lr"] for c in candidates if c["method"] == "crt"] == pytest.approx([0.2, 0.1, 0.4])
    best = max(c["val"]["macro"] for c in candidates)
    winner = next(c for c in candidates if c["val"]["macro"] == best)
    assert auto["chosen"]["label"] == winner["label"] == results["methods"]["auto"]["chosen"]
    for column in ("many", "medium", "few", "all", "macro"):
        assert results["methods"]["auto"][column] == pytest.approx(winner["test_display_only"][column])
        assert results["val_methods"]["auto"][column] == pytest.approx(winner["val"][column])
    assert (run / "classifiers" / "auto.pt").is_file()
    # The saved classifier is the winner and survives re-evaluation.
    assert main(["eval", str(run)]) == 0
    assert _results(run)["methods"]["auto"]["macro"] == pytest.approx(winner["test_display_only"]["macro"])


def test_auto_needs_cached_features(run: Path):
    with pytest.raises(ConfigError, match="auto"):
        decouple(run, ["auto"], ["decouple.features=online"])


def test_pick_best_reads_validation_only():
    lr = Fitted(torch.nn.Identity(), params={"lr": 0.2})
    plain = Fitted(torch.nn.Identity())
    good_on_val = Candidate("crt", lr, val={"macro": 80.0}, test={"macro": 10.0})
    good_on_test = Candidate("lws", lr, val={"macro": 79.0}, test={"macro": 99.0})
    tie_later = Candidate("ncm", plain, val={"macro": 80.0}, test={"macro": 99.0})
    assert pick_best([good_on_val, good_on_test, tie_later], "macro") is good_on_val
    assert good_on_val.label == "crt (lr=0.2)" and tie_later.label == "ncm"
    empty_group = Candidate("ncm", plain, val={"few": None}, test={})
    assert pick_best([empty_group, good_on_val], "few") is empty_group  # all None: the first
