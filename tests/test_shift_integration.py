"""Prior shift in the commands: ``eval.shift``, ``predict --prior``, ``export --prior``, sklearn ``prior=``."""

from __future__ import annotations

import io
import json
import pickle
import tracemalloc
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import copy_run
from longtail.cli import main
from longtail.config import load_config
from longtail.errors import ConfigError, DataError
from longtail.export import load_artifact
from longtail.pipeline import load_run, run_features
from longtail.runs import read_results
from longtail.shift import PriorAdapter, standard_shifts
from longtail.shift.prior_file import read_prior_file


@pytest.fixture(scope="module")
def run_dir(tiny_decoupled_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_run(tiny_decoupled_run, tmp_path_factory.mktemp("shift") / "run")


# --- the config key ----------------------------------------------------------------------------------


def test_eval_shift_is_off_by_default_and_takes_factors_above_one():
    assert load_config(None, []).eval.shift == []
    assert load_config(None, ["eval.shift=[2,5,10,25,50]"]).eval.shift == [2, 5, 10, 25, 50]
    assert load_config(None, ["eval.shift=2"]).eval.shift == [2]  # one factor: a list of one, as 2,5 is of two
    for bad in ("[1]", "[0.5]", "1", "[]x"):
        with pytest.raises(ConfigError, match="eval.shift"):
            load_config(None, [f"eval.shift={bad}"])


def test_an_adapter_is_refused_beyond_its_budget_of_logits_before_any_copy():
    """Beyond 250 million validation logits (iNaturalist 2018's 24,426 x 8,142 are within) an adapter is refused in
    one line, read from the shape (an expanded tensor: no memory behind it)."""
    from longtail.shift import MAX_ADAPTER_VALUES, fit_prior_adapter

    rows = MAX_ADAPTER_VALUES // 5000 + 1
    logits = torch.zeros(1, 1).expand(rows, 5000)
    with pytest.raises(DataError, match=r"^50,001 validation samples x 5,000 classes = 250,005,000 logits, beyond"):
        fit_prior_adapter(logits, torch.zeros(rows, dtype=torch.long), [10] * 5000)


def test_eval_shift_beyond_the_budget_is_refused_before_anything_is_fit(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
):
    """decouple with eval.shift on data too large for it stops up front, not after fitting every method; export
    still exports (the prior adapter is left out, and --prior says why)."""
    import longtail.shift.adapter

    monkeypatch.setattr(longtail.shift.adapter, "MAX_ADAPTER_VALUES", 10)  # the tiny run's 20 x 10 exceed it
    run = copy_run(run_dir, tmp_path / "run")
    before = sorted(p.name for p in (run / "classifiers").iterdir())
    assert main(["decouple", str(run), "--method", "lws", "--overwrite", "eval.shift=[2]"]) == 1
    assert "eval.shift: " in capsys.readouterr().err
    assert sorted(p.name for p in (run / "classifiers").iterdir()) == before
    assert main(["export", str(run), "--method", "crt", "--out", str(tmp_path / "crt.pt2")]) == 0
    assert load_artifact(tmp_path / "crt.pt2")[1]["prior_adapter"] is None
    prior = tmp_path / "prior.txt"
    np.savetxt(prior, np.ones(10))
    assert main(["export", str(run), "--method", "crt", "--out", str(tmp_path / "p.pt2"), "--prior", str(prior)]) == 1
    assert "logits, beyond the 10 a prior adapter is fitted on" in capsys.readouterr().err


# --- longtail eval ---------------------------------------------------------------------------------------


@pytest.mark.slow  # every classifier's calibration fitted by 5-fold cross-validation: ~20 s on 2 busy cores
def test_eval_writes_and_prints_the_methods_by_distributions_table(run_dir: Path, capsys):
    assert main(["eval", str(run_dir), "eval.shift=[10,2]"]) == 0
    out = capsys.readouterr().out
    results = read_results(run_dir)
    shift = results["shift"]
    names = [s.name for s in standard_shifts([2, 10])]
    assert shift["distributions"] == names == ["forward-10", "forward-2", "uniform", "backward-2", "backward-10"]
    assert set(shift["methods"]) == set(results["methods"])
    assert shift["sizes"]["uniform"] == len(run_features(load_run(run_dir), "test").y)
    for method, row in shift["methods"].items():
        assert row["adapter"]["calibration"]["kind"] in ("temperature", "pcts", "bcts")
        for prior in ("none", "em", "known"):
            assert set(row[prior]) == set(names)
            for cell in row[prior].values():
                low, high = cell["ci"]
                # A degenerate interval (every resample alike) may differ from the point in the last bit.
                assert 0 <= low <= cell["accuracy"] + 1e-9 and cell["accuracy"] - 1e-9 <= high <= 100
        # none on the balanced test set is the results table's micro accuracy.
        assert row["none"]["uniform"]["accuracy"] == pytest.approx(results["methods"][method]["all"], abs=1e-6)
    assert "Shifted test distributions" in out and "F10" in out and "B10" in out and "em − none" in out
    # A later eval without the key keeps the table (same classifiers) ...
    assert main(["eval", str(run_dir)]) == 0
    assert read_results(run_dir)["shift"] == shift
    # ... and a refit classifier makes it stale: removed, never shown.
    assert main(["decouple", str(run_dir), "--method", "crt", "--overwrite", "decouple.crt.epochs=1"]) == 0
    assert "shift" not in read_results(run_dir)


@pytest.mark.slow  # decouples with eval.shift, each fitting adapters by cross-validation
def test_a_later_decouple_keeps_the_shift_rows_of_unchanged_classifiers(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Every decouple with eval.shift fitted every classifier's adapter again (minutes each at iNaturalist's
    size); rows of unchanged classifiers on the same shifted sets are now kept, while a refit classifier and a
    hand-edited row are computed again, and other shifted sets or validation data keep nothing."""
    import longtail.pipeline.shift_scores as shift_scores

    run = copy_run(run_dir, tmp_path / "run")
    refit = ["decouple", str(run), "--method", "crt", "--overwrite", "eval.shift=[2]"]
    assert main(refit) == 0
    first = read_results(run)["shift"]
    fitted: list[int] = []
    real = shift_scores.adapter_for
    monkeypatch.setattr(shift_scores, "adapter_for", lambda *a, **k: fitted.append(1) or real(*a, **k))
    assert main(refit) == 0  # the same seed refits the same file (its SHA-256): nothing is fitted again
    assert not fitted and read_results(run)["shift"] == first
    results = read_results(run)
    results["shift"]["methods"]["joint"]["em"]["uniform"]["accuracy"] = 250.0  # a hand edit
    (run / "results.json").write_text(json.dumps(results))
    assert main([*refit, "decouple.crt.epochs=1"]) == 0  # another crt
    second = read_results(run)["shift"]
    assert len(fitted) == 2 and set(second["methods"]) == set(first["methods"])  # crt and the edited joint
    assert all(second["methods"][m] == first["methods"][m] for m in first["methods"] if m != "crt")
    settings = {key: second[key] for key in ("imbalances", "distributions", "sizes", "seed", "priors", "val_data")}
    settings["reliability_edges"] = second["reliability_edges"]
    record = second["scored"]["lws"]
    assert shift_scores.kept_row(second, "lws", record, settings) == second["methods"]["lws"]
    for key, other in (("imbalances", [2.0, 5.0]), ("seed", 1), ("val_data", "another")):
        assert shift_scores.kept_row(second, "lws", record, {**settings, key: other}) is None


# --- prior files -----------------------------------------------------------------------------------------


def test_prior_files_are_read_checked_and_normalised(tmp_path: Path):
    text = tmp_path / "prior.txt"
    text.write_text("# counts\n1, 1 2\n4\n")
    assert read_prior_file(text, 4).tolist() == [0.125, 0.125, 0.25, 0.5]
    (tmp_path / "p.json").write_text("[1, 3]")
    assert read_prior_file(tmp_path / "p.json", 2).tolist() == [0.25, 0.75]
    np.save(tmp_path / "p.npy", np.array([2.0, 2.0]))
    assert read_prior_file(tmp_path / "p.npy", 2).tolist() == [0.5, 0.5]
    np.savez(tmp_path / "p.npz", prior=np.array([0, 1]))
    assert read_prior_file(tmp_path / "p.npz", 2).tolist() == [0.0, 1.0]
    cases = {
        "short.txt": ("1 2 3", "3 weights, expected one per class"),
        "negative.txt": ("1 -1", "class 1 has weight -1.0"),
        "nan.txt": ("1 nan", "class 1 has weight nan"),
        "zero.txt": ("0 0", "sum to 0"),
        "words.txt": ("a b", "expected numbers"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_text(content)
        with pytest.raises(DataError, match=message):
            read_prior_file(tmp_path / name, 2)
    with pytest.raises(DataError, match="not found"):
        read_prior_file(tmp_path / "absent.txt", 2)
    for empty in ("", " "):  # `--prior ""` was reported as ".: prior file not found"
        with pytest.raises(DataError, match=f"prior file '{empty}': expected the name of a file"):
            read_prior_file(empty, 2)


def test_a_planted_pickle_is_refused_unread(tmp_path: Path):
    class Boom:
        def __reduce__(self):  # would run on unpickling
            return (Path(tmp_path / "ran").write_text, ("ran",))

    np.save(tmp_path / "p.npy", np.array([Boom(), Boom()], dtype=object), allow_pickle=True)
    (tmp_path / "p.pkl").write_bytes(pickle.dumps([Boom(), Boom()]))
    with pytest.raises(DataError, match="Python objects"):
        read_prior_file(tmp_path / "p.npy", 2)
    with pytest.raises(DataError, match=r"p\.pkl"):
        read_prior_file(tmp_path / "p.pkl", 2)
    assert not (tmp_path / "ran").exists()


def test_weights_near_the_largest_float_are_normalised_not_overflowed(tmp_path: Path):
    (tmp_path / "huge.txt").write_text("1e308 1e308 0")  # their sum overflows to inf: the prior came out all 0
    assert read_prior_file(tmp_path / "huge.txt", 3).tolist() == [0.5, 0.5, 0.0]


def test_an_npz_prior_of_the_wrong_size_is_refused_before_it_is_decompressed(tmp_path: Path):
    # 64 MiB of zeros that deflate to 64 KiB: they were inflated, then cast to 512 MiB of float64, before
    # the length was checked.
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": (1 << 26,)})
    member = header.getvalue() + bytes(1 << 26)
    with zipfile.ZipFile(tmp_path / "bomb.npz", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("prior.npy", member)
    del member
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"bomb\.npz: 67108864 weights, expected one per class \(10\)"):
            read_prior_file(tmp_path / "bomb.npz", 10)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"{peak >> 20} MiB"


# --- export --prior and predict --prior ------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """cRT exported as it is and with a known prior folded in; the prior; a few test images as .npy files."""
    out = tmp_path_factory.mktemp("models")
    prior = np.array([1.0 + 3 * c for c in range(10)])  # backward-like: the rare training classes common
    np.savetxt(out / "prior.txt", prior)
    assert main(["export", str(run_dir), "--method", "crt", "--out", str(out / "plain")]) == 0
    folded = ["--out", str(out / "folded"), "--prior", str(out / "prior.txt")]
    assert main(["export", str(run_dir), "--method", "crt", *folded]) == 0
    test = load_run(run_dir).splits.split("test")
    images = []
    for i in range(0, len(test.labels), 7):
        path = out / f"img{i}.npy"
        np.save(path, test.images[i].numpy().squeeze(0).astype(np.uint8))
        images.append(str(path))
    return {"plain": out / "plain.pt2", "folded": out / "folded.pt2", "prior": out / "prior.txt", "images": images}


def test_export_records_the_adapter_and_folds_a_known_prior_into_the_bias(models: dict, run_dir: Path):
    plain, plain_meta = load_artifact(models["plain"])
    folded, folded_meta = load_artifact(models["folded"])
    assert plain_meta["prior"] == {"kind": "none"}
    record = folded_meta["prior"]
    assert record["kind"] == "known" and record["prior"] == pytest.approx(read_prior_file(models["prior"], 10).tolist())
    adapter = PriorAdapter.from_dict(plain_meta["prior_adapter"])
    assert adapter.bbse is None and adapter.num_classes == 10
    test = load_run(run_dir).splits.split("test")
    images = test.images.float() / 255.0
    with torch.no_grad():
        raw, moved = plain(images), folded(images)
    expected = adapter.adapt(raw.double(), "known", target_prior=record["prior"]).predictions()
    assert torch.equal(moved.argmax(dim=1), expected)  # the exported argmax is adapt(known)'s
    if record["applied"]:  # and its logits are the calibrated, moved ones up to a constant per row
        log_p = adapter.adapt(raw.double(), "known", target_prior=record["prior"]).log_posteriors
        torch.testing.assert_close(moved.double().log_softmax(1), log_p, atol=1e-3, rtol=1e-4)


def test_predict_prior_em_prints_the_estimate_and_a_file_prior_moves_the_posteriors(models: dict, capsys):
    images = models["images"]
    assert main(["predict", str(models["plain"]), *images, "--prior", "em", "--topk", "1"]) == 0
    out = capsys.readouterr().out
    assert f"estimated prior from {len(images)} images" in out
    assert main(["predict", str(models["plain"]), *images, "--prior", "em", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["predictions"]) == len(images) and sum(data["prior"]["prior"]) == pytest.approx(1.0)
    assert main(["predict", str(models["plain"]), *images, "--prior", str(models["prior"]), "--json"]) == 0
    moved = json.loads(capsys.readouterr().out)
    assert main(["predict", str(models["folded"]), *images, "--json"]) == 0
    folded = json.loads(capsys.readouterr().out)
    top = [[c["index"] for c in p["top"][:1]] for p in moved["predictions"]]
    assert top == [[c["index"] for c in p["top"][:1]] for p in folded]  # FILE at prediction = folded at export


def test_predict_prior_errors_are_one_line_and_name_the_file(models: dict, tmp_path: Path, capsys):
    image = models["images"][0]
    short, negative = tmp_path / "short.txt", tmp_path / "negative.txt"
    short.write_text("1 2 3")
    negative.write_text(" ".join(["1"] * 9 + ["-2"]))
    np.save(tmp_path / "pickled.npy", np.array([object()] * 10, dtype=object), allow_pickle=True)
    cases = [
        (models["plain"], short, "short.txt: 3 weights, expected one per class (10)"),
        (models["plain"], negative, "negative.txt: class 9 has weight -2.0"),
        (models["plain"], tmp_path / "pickled.npy", "pickled.npy: holds Python objects"),
        (models["folded"], "em", "a known prior is folded into this model"),
    ]
    for model, prior, message in cases:
        assert main(["predict", str(model), image, "--prior", str(prior)]) != 0
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_predict_prior_em_refuses_a_lone_image_and_words_and_files_are_checked_first(
    models: dict, tmp_path: Path, capsys
):
    """One image "estimated" its own prior and moved itself (a top-1 changed), though --help says EM needs a
    batch; ``--prior EM`` said only "EM: prior file not found"; a bad prior file was found after every image had
    been read and run through the model."""
    image, other = models["images"][:2]
    assert main(["predict", str(models["plain"]), image, "--prior", "em"]) == 1
    err = capsys.readouterr().err.strip()
    assert "--prior em: 1 image; EM estimates the class prior of a batch and needs at least 2" in err
    assert len(err.splitlines()) == 1
    assert main(["predict", str(models["plain"]), image, other, "--prior", "em", "--topk", "1"]) == 0
    assert "estimated prior from 2 images" in capsys.readouterr().out
    for word in ("EM", "None"):
        assert main(["predict", str(models["plain"]), image, other, "--prior", word]) == 1
        assert f"--prior {word}: expected none, em (lower case) or the name of a prior file" in capsys.readouterr().err
    short = tmp_path / "short.txt"
    short.write_text("1 2 3")
    assert main(["predict", str(models["plain"]), str(tmp_path / "missing.png"), "--prior", str(short)]) == 1
    assert "short.txt: 3 weights" in capsys.readouterr().err  # the prior is refused before the images are read
    assert main(["predict", str(models["plain"]), image, other, "--prior", str(tmp_path)]) == 1
    assert f"{tmp_path}: not a regular file (a directory, pipe or device); expected a prior file" in (
        capsys.readouterr().err
    )  # "prior file not found" before, for a folder or /dev/stdin


# --- the scikit-learn estimator ----------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:prior not applied")  # said where adaptation is off; not what this tests
def test_decoupled_classifier_predicts_for_a_prior():
    from longtail.sklearn import DecoupledClassifier

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(10, 16)) * 3

    def draw(per_class: list[int]) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(10), per_class)
        return centres[y] + rng.normal(size=(len(y), 16)), y

    X, y = draw([int(200 * 0.6**c) + 4 for c in range(10)])  # long-tailed training set
    X_val, y_val = draw([10] * 10)
    X_test, _ = draw([5 + 5 * c for c in range(10)])  # a backward-shifted batch
    clf = DecoupledClassifier(method="crt", epochs=3, random_state=0).fit(X, y, X_val=X_val, y_val=y_val)
    assert clf.prior_calibration_ == "validation"
    assert np.array_equal(clf.predict(X_test, prior=None), clf.predict(X_test))
    weights = np.arange(1.0, 11.0)
    adapted = clf.adapt_prior(X_test, weights)
    expected = adapted.predictions().numpy() if adapted.applied else clf.predict(X_test)
    assert np.array_equal(clf.predict(X_test, prior=weights), clf.classes_[expected])
    proba = clf.predict_proba(X_test, prior="em")
    assert proba.shape == (len(X_test), 10) and np.allclose(proba.sum(axis=1), 1.0)
    assert clf.adapt_prior(X_test, "em").prior.shape == (10,)
    for bad in ([1.0, 2.0], "bbse", -weights):
        with pytest.raises(ValueError, match="prior"):
            clf.predict(X_test, prior=bad)


@pytest.mark.filterwarnings("ignore:prior not applied")  # said where adaptation is off; not what this tests
def test_decoupled_classifier_refuses_a_prior_of_the_wrong_shape_or_kind_in_one_message():
    from longtail.sklearn import DecoupledClassifier

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), [60, 30, 12, 6])
    X = rng.normal(size=(4, 8))[y] * 3 + rng.normal(size=(len(y), 8))
    clf = DecoupledClassifier(method="crt", epochs=2, random_state=0).fit(X, y)
    # A matrix of C entries was flattened, text and ragged lists raised NumPy's messages (a dict a TypeError),
    # complex weights lost their imaginary part with a warning.
    bad = (np.ones((2, 2)), ["a"] * 4, {"a": 1}, [[1, 2], [3]], [None] * 4, np.ones(4, complex))
    for prior in bad:
        with pytest.raises(ValueError, match=r"^prior: expected 4 finite non-negative weights"):
            clf.predict(X[:3], prior=prior)
    # Weights near the largest float are normalised, not summed to infinity (then a DataError about 0).
    huge = clf.predict_proba(X[:3], prior=[1e308, 1e308, 1e308, 1e308])
    assert np.allclose(huge, clf.predict_proba(X[:3], prior=torch.ones(4)))


def test_decoupled_classifier_says_where_the_calibration_could_not_be_fitted():
    """Fitted without a validation split, the message spoke of a "validation split" and of "image(s)"."""
    from longtail.sklearn import DecoupledClassifier

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), [40, 10, 1])  # one sample in the last class: nothing can be held out
    X = rng.normal(size=(3, 8))[y] * 3 + rng.normal(size=(len(y), 8))
    clf = DecoupledClassifier(method="crt", epochs=2, random_state=0).fit(X, y)
    assert clf.prior_calibration_ == "training data"
    with pytest.raises(ValueError) as error:
        clf.predict(X[:3], prior="em")
    message = str(error.value)
    assert message.startswith("prior: the calibration cannot be fitted on the training data: a class has 1 sample")
    assert "validation split" not in message and "image" not in message


def test_decoupled_classifier_says_when_a_prior_is_not_applied_and_refuses_em_on_one_row():
    """A prior the validation check turned off was ignored in silence (``predict --prior`` says so), and
    ``prior="em"`` on one row let that row's own posterior "estimate" the prior that moved it."""
    from longtail.sklearn import DecoupledClassifier, PriorNotAppliedWarning

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), [150, 75, 37, 18])
    X = rng.normal(size=(len(y), 8)) + y[:, None]
    clf = DecoupledClassifier(random_state=0).fit(X, y)
    with pytest.warns(PriorNotAppliedWarning) as caught:
        assert not clf.adapt_prior(X[:5], [1, 1, 1, 1]).applied  # this data: adaptation turned off
    assert caught[0].filename == __file__
    for prior in ([1, 2, 3, 4], "em"):
        with pytest.warns(PriorNotAppliedWarning, match="^prior not applied: the validation check found") as caught:
            proba = clf.predict_proba(X[:5], prior=prior)
        assert caught[0].filename == __file__  # pointed at the caller's line
        assert np.allclose(proba, clf.predict_proba(X[:5]))  # the classifier's own, as the warning says
    with pytest.raises(ValueError, match=r"^prior='em': 1 row of X; EM estimates the class prior of a batch"):
        clf.predict(X[:1], prior="em")
    applied = DecoupledClassifier("crt", epochs=2, random_state=0).fit(X, y)
    assert applied.adapt_prior(X[:5], [1, 1, 1, 1]).applied
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # applied: nothing to say
        applied.predict(X[:5], prior=[1, 2, 3, 4])


def test_the_validation_reliability_bins_are_log_spaced_at_many_classes():
    """At 8,142 classes every uncalibrated top-1 probability fell in the first of 10 equal-width bins (figure 10's
    'before' curve a single point); beyond 100 classes the bins are log-spaced from 1/C, as figure 7's, and the
    ECE stays the equal-width one (comparable across class counts)."""
    from longtail.evaluation.calibration import reliability
    from longtail.pipeline.shift_scores import validation_reliability
    from longtail.shift import fit_prior_adapter

    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(200).repeat_interleave(3)
    logits = torch.randn(len(labels), 200, generator=generator)
    logits[torch.arange(len(labels)), labels] += 3.0
    counts = [max(2, int(500 * 0.01 ** (k / 199))) for k in range(200)]
    adapter = fit_prior_adapter(logits, labels, counts, candidates=["temperature"])
    record = validation_reliability(adapter, logits, labels, counts)
    edges = np.asarray(record["edges"])
    assert edges[0] == pytest.approx(1 / 200) and edges[-1] == pytest.approx(1.0) and len(edges) == 11
    assert np.allclose(edges[1:] / edges[:-1], edges[1] / edges[0])  # geometric
    confidence, predicted = torch.softmax(logits.double(), 1).max(1)
    assert sum(record["before"]["count"]) == len(labels)
    expected = reliability(confidence, predicted == labels, 10).ece
    assert record["before"]["ece"] == pytest.approx(expected)
