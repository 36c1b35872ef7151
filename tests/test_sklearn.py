"""longtail.sklearn.DecoupledClassifier: scikit-learn's own estimator checks, the validation rules, the API."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from longtail.methods import expand_methods, method_names  # noqa: E402
from longtail.sklearn import DecoupledClassifier, HoldoutWarning, shot_accuracy  # noqa: E402
from longtail.sklearn.fitting import auto_batch_size, probe_config, validation_split  # noqa: E402

METHODS = ["joint", *method_names()]  # every method value: the probe alone and each registered method
COUNTS = [150, 60, 20, 8]


def long_tailed_blobs(counts=COUNTS, seed=0, spread=1.0) -> tuple[np.ndarray, np.ndarray]:
    """(N, 6) Gaussian blobs, ``counts[c]`` points of class ``c``, labels 0..C-1."""
    rng = np.random.default_rng(seed)
    centres = 2.5 * np.eye(len(counts), 6)
    x = np.concatenate([centres[c] + spread * rng.standard_normal((n, 6)) for c, n in enumerate(counts)])
    y = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    return x, y


def fast(method="auto", **params) -> DecoupledClassifier:
    """A classifier whose fit costs milliseconds (few epochs, one-point grids)."""
    return DecoupledClassifier(method, **{"epochs": 5, "random_state": 0, "config": ONE_POINT_GRIDS, **params})


# --- scikit-learn's estimator checks -------------------------------------------------------------------------
# No check needed an expected failure: every one applies and passes, for every method. The two checks that
# skip do so by themselves when an optional library is missing (pandas; SCIPY_ARRAY_API for array-API input).
# ``auto`` fits every other method on each check's data, so it stands for all of them, with
# its grids cut to one point each (WB's weight decay x radius grid, the lr factors): the checks test the
# estimator's contract, not the grids. Every method value with its default grids is checked by the slow run.
ONE_POINT_GRIDS = {
    "decouple.auto_lr_factors": [1.0],
    "decouple.wb.weight_decay_grid": [],
    "decouple.wb.thresh_grid": [],
}


@pytest.mark.slow  # about 80 checks, each fitting every method: make test runs them
@parametrize_with_checks([DecoupledClassifier("auto", config=ONE_POINT_GRIDS)])
def test_sklearn_checks_auto(estimator, check):
    check(estimator)


@pytest.mark.slow
@parametrize_with_checks([DecoupledClassifier(m) for m in METHODS])
def test_sklearn_checks_each_method(estimator, check):
    check(estimator)


# --- labels, attributes, predictions ------------------------------------------------------------------------


def test_any_labels_come_back_as_given():
    x, y = long_tailed_blobs()
    codes = fast("crt").fit(x, y).predict(x)
    # Labels in the order of 0..3 map to the same classes: the very same classifier.
    for labels in (np.array(["cat", "dog", "eel", "yak"]), np.array([-3, 10, 42, 77])):
        clf = fast("crt").fit(x, labels[y])
        assert list(clf.classes_) == list(labels)
        np.testing.assert_array_equal(clf.predict(x), labels[codes])
    shuffled = np.array([3, 10, 42, 7])
    clf = fast("crt").fit(x, shuffled[y])
    assert list(clf.classes_) == [3, 7, 10, 42] and set(clf.predict(x)) == set(shuffled)


def test_fitted_attributes():
    x, y = long_tailed_blobs()
    clf = fast("tau_norm", many=100, few=20).fit(x, y)
    assert clf.n_features_in_ == 6 and clf.method_ == "tau_norm" and clf.validation_ == "held out"
    assert clf.tau_ == clf.params_["tau"] and 0 <= clf.tau_ <= 2
    assert list(clf.class_counts_) == COUNTS
    assert {k: list(v) for k, v in clf.shot_groups_.items()} == {"many": [0], "medium": [1, 2], "few": [3]}
    assert clf.candidates_ is None and fast("crt").fit(x, y).tau_ is None


def test_auto_says_what_it_chose_among_every_method():
    x, y = long_tailed_blobs()
    clf = fast("auto").fit(x, y)
    tried = {c["method"] for c in clf.candidates_}
    assert tried == set(expand_methods(["all"]))
    assert clf.method_ in tried and all("val" in c and "test_display_only" not in c for c in clf.candidates_)
    best = max(c["val"]["macro"] for c in clf.candidates_)
    assert next(c for c in clf.candidates_ if c["method"] == clf.method_)["val"]["macro"] == best


def test_probabilities_are_the_softmax_of_the_scores():
    x, y = long_tailed_blobs()
    clf = fast("crt").fit(x, y)
    scores = clf.decision_function(x)
    expected = np.exp(scores - scores.max(1, keepdims=True))
    np.testing.assert_allclose(clf.predict_proba(x), expected / expected.sum(1, keepdims=True))
    np.testing.assert_allclose(clf.predict_log_proba(x), np.log(clf.predict_proba(x)))
    assert clf.predict_proba(x).dtype == np.float64


def test_ncm_probabilities_are_a_softmax_of_negative_squared_distances():
    x, y = long_tailed_blobs()
    clf = DecoupledClassifier("ncm").fit(x, y)  # no training: the centroids are exact
    z = x - x.mean(0)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    centroids = np.stack([z[y == c].mean(0) for c in range(4)])
    logits = -((z[:, None, :] - centroids[None]) ** 2).sum(-1)
    expected = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(clf.predict_proba(x), expected, atol=1e-6)


def test_shot_scores_and_shot_accuracy_agree():
    x, y = long_tailed_blobs()
    clf = fast("crt").fit(x, y)
    scores = clf.shot_scores(x, y)
    assert set(scores) == {"many", "medium", "few", "all", "macro"}
    assert scores["all"] == pytest.approx(100 * clf.score(x, y))
    assert scores == shot_accuracy(y, clf.predict(x), clf.classes_, clf.class_counts_)
    assert shot_accuracy(y, y, clf.classes_, clf.class_counts_, many=1000, few=0)["many"] is None  # empty group


# --- where choices are made ---------------------------------------------------------------------------------


def test_the_held_out_split_is_class_balanced_and_seeded():
    _, y = long_tailed_blobs()
    train, val = validation_split(y, 4, val_per_class=None, validation_fraction=0.2, seed=0)
    assert np.intersect1d(train, val).size == 0 and len(train) + len(val) == len(y)
    # 0.2 * 238 / 4 -> 12 per class, but never more than a fifth of a class: 12, 12, 4, 1.
    assert np.bincount(y[val]).tolist() == [12, 12, 4, 1]
    again, _ = validation_split(y, 4, val_per_class=None, validation_fraction=0.2, seed=0)
    assert np.array_equal(train, again)
    _, val = validation_split(y, 4, val_per_class=3, validation_fraction=0.2, seed=0)
    assert np.bincount(y[val]).tolist() == [3, 3, 3, 1]


@pytest.mark.parametrize("method", ["tau_norm", "auto"])
def test_choices_read_only_the_held_out_split(method):
    """Fitting on X with a held-out split equals fitting on its training part with that split given:
    the choice sees the validation samples and nothing else."""
    x, y = long_tailed_blobs()
    train, val = validation_split(y, 4, val_per_class=None, validation_fraction=0.2, seed=0)
    held_out = fast(method).fit(x, y)
    given = fast(method).fit(x[train], y[train], X_val=x[val], y_val=y[val])
    assert held_out.validation_ == "held out" and given.validation_ == "given"
    assert held_out.method_ == given.method_ and held_out.params_ == given.params_
    np.testing.assert_array_equal(held_out.decision_function(x), given.decision_function(x))


def test_given_validation_split_is_checked():
    x, y = long_tailed_blobs()
    with pytest.raises(ValueError, match="give both or neither"):
        fast().fit(x, y, X_val=x)
    with pytest.raises(ValueError, match="label 9 is not in y"):
        fast().fit(x, y, X_val=x[:2], y_val=[0, 9])
    with pytest.raises(ValueError, match="X has 5 features"):
        fast().fit(x, y, X_val=x[:2, :5], y_val=[0, 1])


def test_methods_that_choose_nothing_train_on_all_of_x():
    x, y = long_tailed_blobs()
    joint = fast("joint").fit(x, y)
    assert joint.validation_ == "none"
    # Given a validation split, a method that chooses trains its probe on all of X too: the same probe.
    given = fast("tau_norm").fit(x, y, X_val=x[:10], y_val=y[:10])
    np.testing.assert_array_equal(joint.joint_.weight.numpy(), given.joint_.weight.numpy())


def test_tiny_data_chooses_on_training_data_and_says_so():
    x = np.array([[0.0, 1.0], [1.0, 0.0], [0.1, 0.9], [0.9, 0.2]])
    with pytest.warns(HoldoutWarning, match="no validation sample could be held out"):
        clf = fast("auto").fit(x, ["a", "b", "a", "b"])
    assert clf.validation_ == "training data" and list(clf.predict(x)) == ["a", "b", "a", "b"]
    with pytest.warns(HoldoutWarning):
        clf = fast("auto").fit(x[:2], ["a", "b"])  # one sample per class
    assert set(clf.predict(x[:2])) <= {"a", "b"}


def test_one_class_is_a_clear_error():
    with pytest.raises(ValueError, match=r"needs at least 2 classes in y; got 1 class \(1\)"):
        fast().fit(np.ones((5, 3)), [1] * 5)
    with pytest.raises(ValueError, match=r"got 1 class \('a'\)"):
        fast().fit(np.ones((5, 3)), np.array(["a"] * 5, dtype=object))


# --- parameters and config ----------------------------------------------------------------------------------


def test_config_overrides_reach_the_method():
    x, y = long_tailed_blobs()
    clf = fast("tau_norm", config={"decouple.tau.min": 0.5, "decouple.tau.max": 0.5, "decouple.tau.steps": 1})
    assert clf.fit(x, y).tau_ == 0.5
    slow_lr = fast("crt", config={"decouple.crt.lr": 0.01}).fit(x, y)
    assert slow_lr.params_ == {"lr": 0.01}


def test_batch_size_reaches_every_trained_head_unless_configured():
    assert [auto_batch_size(n) for n in (10, 405, 3200, 10**6)] == [32, 32, 100, 512]
    common = {"seed": 0, "epochs": 1, "lr": 0.1, "weight_decay": 0.0, "many": 100, "few": 20}
    config = probe_config(batch_size=24, overrides=["decouple.lws.batch_size=64"], **common)
    assert config.train.batch_size == 24 and config.train.sampler == "instance"
    assert config.decouple.crt.batch_size == 24 and config.decouple.lws.batch_size == 64


@pytest.mark.parametrize(
    "params, message",
    [
        ({"method": "bogus"}, r"method='bogus': expected one of .*crt"),
        ({"epochs": 0}, r"epochs=0: expected an integer >= 1"),
        ({"batch_size": "big"}, r"batch_size='big': expected an integer >= 1"),
        ({"lr": -1.0}, r"lr=-1.0: expected a number > 0"),
        ({"validation_fraction": 1.0}, r"validation_fraction=1.0: expected a number in \[0, 1\)"),
        ({"few": 50, "many": 10}, r"few=50: expected at most many=10"),
        ({"config": {"train.epochs": 3}}, r"only decouple\.\* keys"),
        ({"config": {"decouple.trainable": "all"}}, r"needs images"),
        ({"config": {"decouple.bogus": 1}}, r"decouple\.bogus"),
        ({"device": "cuda:99"}, r"device='cuda:99'"),
        ({"device": "gpu"}, r"device='gpu': expected cpu, cuda"),
    ],
)
def test_bad_parameters_are_one_line_errors_at_fit(params, message):
    x, y = long_tailed_blobs()
    clf = DecoupledClassifier(**params)  # the constructor stores them as given
    with pytest.raises(ValueError, match=message) as error:
        clf.fit(x, y)
    assert "\n" not in str(error.value)


def test_fit_is_seeded_and_leaves_the_global_random_streams_alone():
    x, y = long_tailed_blobs()
    torch.manual_seed(123)
    np.random.seed(123)
    # cRT draws from every stream a fit uses (initialisation, sampler, shuffling); scikit-learn's
    # check_fit_idempotent (above, fast suite) refits auto, and with it every method, on the same data.
    a = fast("crt").fit(x, y)
    after = torch.rand(1), np.random.rand()
    torch.manual_seed(123)
    np.random.seed(123)
    assert (torch.rand(1), np.random.rand()) == after
    b = fast("crt").fit(x, y)
    np.testing.assert_array_equal(a.decision_function(x), b.decision_function(x))
    c = fast("crt", random_state=1).fit(x, y)
    assert not np.array_equal(a.joint_.weight.numpy(), c.joint_.weight.numpy())


def test_feature_names_from_a_dataframe():
    pd = pytest.importorskip("pandas")
    x, y = long_tailed_blobs()
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(6)])
    clf = fast("crt").fit(frame, y)
    assert list(clf.feature_names_in_) == list(frame.columns)


# --- scikit-learn's tools -----------------------------------------------------------------------------------


def test_clone_and_pickle():
    x, y = long_tailed_blobs()
    clf = fast("lws", config={"decouple.lws.epochs": 2})
    copy = clone(clf)
    assert copy.get_params() == clf.get_params() and copy.config is not clf.config
    fitted = clf.fit(x, y)
    restored = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(restored.predict_proba(x), fitted.predict_proba(x))


def test_pipeline_grid_search_and_cross_validation():
    x, y = long_tailed_blobs()
    labels = np.array(["head", "mid", "low", "tail"])[y]
    pipe = make_pipeline(StandardScaler(), fast())
    pipe.fit(x, labels)
    assert set(pipe.predict(x)) == set(labels) and 0.7 < pipe.score(x, labels) <= 1
    grid = GridSearchCV(pipe, {"decoupledclassifier__method": ["crt", "tau_norm"]}, cv=3, scoring="balanced_accuracy")
    grid.fit(x, labels)
    assert grid.best_params_["decoupledclassifier__method"] in ("crt", "tau_norm")
    scores = cross_val_score(fast("ncm"), x, labels, cv=3, scoring="balanced_accuracy")
    assert scores.shape == (3,) and scores.min() > 0.7
