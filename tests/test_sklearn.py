"""longtail.sklearn.DecoupledClassifier: scikit-learn's own estimator checks, the validation rules, the API."""

from __future__ import annotations

import copy
import pickle
import re
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from longtail.engine.exact_linear import fit_linear_exact  # noqa: E402
from longtail.errors import ConfigError  # noqa: E402
from longtail.evaluation.metrics import accuracy_summary  # noqa: E402
from longtail.methods import expand_methods, method_names  # noqa: E402
from longtail.sklearn import DecoupledClassifier, HoldoutWarning, PriorNotAppliedWarning, shot_accuracy  # noqa: E402
from longtail.sklearn.exact_heads import class_probabilities  # noqa: E402
from longtail.sklearn.fitting import auto_batch_size, probe_config, validation_split  # noqa: E402
from longtail.sklearn.selection import (  # noqa: E402
    accuracy_summaries,
    calibrated_log_loss,
    clearly_better,
    sample_log_losses,
    stratified_folds,
)

METHODS = ["joint", "joint_balanced", *method_names()]  # every method value: the probes alone, each registered method
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
# Each method is checked with cheap parameters: the checks test the estimator's contract (about 80 of them,
# each fitting several times), not the recipe, so a well-conditioned fixed penalty, 2 folds, a 2-point τ grid,
# one epoch for the heads SGD trains and one-point grids for WB and the lr factors.
ONE_POINT_GRIDS = {
    "decouple.auto_lr_factors": [1.0],
    "decouple.wb.weight_decay_grid": [],
    "decouple.wb.thresh_grid": [],
}
CHEAP = {
    "weight_decay": 0.1,
    "max_iter": 200,
    "cv": 2,
    "epochs": 2,
    "config": {
        **ONE_POINT_GRIDS,
        **{f"decouple.{m}.epochs": 1 for m in ("crt", "lws", "wb", "las")},
        "decouple.tau.steps": 2,
        "decouple.logit_adjust.steps": 2,
    },
}


@pytest.mark.slow  # about 80 checks per method, each fitting several times: make test runs them
@parametrize_with_checks([DecoupledClassifier(m, **CHEAP) for m in METHODS])
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
    assert clf.n_features_in_ == 6 and clf.method_ == "tau_norm" and clf.validation_ == "cross-validated"
    assert clf.tau_ == clf.params_["tau"] and 0 <= clf.tau_ <= 2
    assert list(clf.class_counts_) == COUNTS
    assert {k: list(v) for k, v in clf.shot_groups_.items()} == {"many": [0], "medium": [1, 2], "few": [3]}
    # tau_norm chooses τ among candidates (the estimator's grid: 0, 0.5, ..., 2); cRT chooses nothing.
    assert [(c["method"], c["tau"]) for c in clf.candidates_] == [("tau_norm", t) for t in (0, 0.5, 1, 1.5, 2)]
    crt = fast("crt").fit(x, y)
    assert crt.tau_ is None and crt.candidates_ is None and crt.validation_ == "none"


def test_auto_says_what_it_chose_among_every_method():
    x, y = long_tailed_blobs()
    clf = fast("auto").fit(x, y)
    tried = {c["method"] for c in clf.candidates_}
    # Under lbfgs, auto leaves out every candidate that needs a solve of its own on each fold, and says why.
    assert set(clf.skipped_) == {"joint_balanced", "crt", "lws", "wb", "las"}
    assert "weight decay" in clf.skipped_["lws"] and "train_heads=True adds it" in clf.skipped_["crt"]
    assert tried == {"joint", *expand_methods(["all"])} - set(clf.skipped_)
    # train_heads=True adds the class-weighted probe and the heads solved exactly, not those only SGD trains.
    heads = fast("auto", train_heads=True).fit(x, y)
    assert set(heads.skipped_) == {"lws", "wb", "las"}
    assert {c["method"] for c in heads.candidates_} == tried | {"joint_balanced", "crt"}
    assert clf.method_ in tried and all("val" in c and "log_loss" in c for c in clf.candidates_)
    assert "joint_weight_decay" not in clf.params_  # one probe (C=1): nothing to say about it
    # The lowest log-loss wins, or the reference (logit adjustment at τ = 1) when that is within noise of it.
    best = min(c["log_loss"] for c in clf.candidates_)
    chosen = next(c for c in clf.candidates_ if c["label"] == _label(clf))
    assert chosen["log_loss"] == best or (clf.method_, clf.tau_) == ("logit_adjust", 1.0)
    # Under sgd every method is a candidate; by accuracy, the chosen one has the best macro accuracy.
    sgd = fast("auto", solver="sgd", selection="accuracy").fit(x, y)
    assert {c["method"] for c in sgd.candidates_} == {"joint", "joint_balanced", *expand_methods(["all"])}
    assert sgd.skipped_ == {} and all("log_loss" not in c for c in sgd.candidates_)
    best = max(c["val"]["macro"] for c in sgd.candidates_)
    assert next(c for c in sgd.candidates_ if c["label"] == _label(sgd))["val"]["macro"] == best


def test_a_list_of_penalties_is_a_grid_of_probes_to_choose_among():
    x, y = long_tailed_blobs()
    clf = fast("logit_adjust", weight_decay=[0.01, 0.1]).fit(x, y)
    assert {c["joint_weight_decay"] for c in clf.candidates_} == {0.01, 0.1}
    assert clf.params_["joint_weight_decay"] in (0.01, 0.1) and len(clf.candidates_) == 10
    # A method that chooses nothing takes the first value: the probe at 0.01.
    joint = fast("joint", weight_decay=[0.01, 0.1]).fit(x, y)
    np.testing.assert_array_equal(joint.joint_.weight.numpy(), fast("joint", weight_decay=0.01).fit(x, y).joint_.weight)


def test_penalties_as_a_numpy_array_are_a_grid_too():
    """``weight_decay=np.logspace(...)`` raised NumPy's "truth value of an array ... is ambiguous" traceback
    (``value == "auto"`` compared element-wise)."""
    x, y = long_tailed_blobs()
    as_array = fast("logit_adjust", weight_decay=np.array([0.01, 0.1])).fit(x, y)
    as_list = fast("logit_adjust", weight_decay=[0.01, 0.1]).fit(x, y)
    assert as_array.params_ == as_list.params_ and len(as_array.candidates_) == len(as_list.candidates_)
    np.testing.assert_array_equal(as_array.predict_proba(x), as_list.predict_proba(x))
    for bad in (np.array([]), np.array([-1.0]), np.full((2, 2), 0.1)):
        with pytest.raises(ConfigError, match="^weight_decay=.*expected 'auto', a number >= 0 or a list of them"):
            fast(weight_decay=bad).fit(x, y)


def _label(clf: DecoupledClassifier) -> str:
    """The label of the chosen candidate in ``candidates_``, from ``method_`` and ``params_``."""
    text = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in clf.params_.items())
    return f"{clf.method_} ({text})" if text else clf.method_


def test_the_class_weighted_joint_classifier_is_the_balanced_logistic_regression():
    x, y = long_tailed_blobs()
    balanced = DecoupledClassifier("joint_balanced", tol=1e-8).fit(x, y)
    reference = LogisticRegression(class_weight="balanced", tol=1e-10, max_iter=10_000).fit(x, y)
    assert balanced.validation_ == "none" and balanced.params_ == {} and balanced.method_ == "joint_balanced"
    np.testing.assert_allclose(balanced.head_.weight.numpy(), reference.coef_, atol=1e-5)
    np.testing.assert_array_equal(balanced.predict(x), reference.predict(x))


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


def test_shot_accuracy_names_what_does_not_fit_in_one_line():
    """Unknown labels were LabelEncoder's "y contains previously unseen labels: [np.int64(5)]" (naming neither
    y_true nor y_pred); other lengths torch's size-mismatch RuntimeError or an IndexError."""
    cases = [
        (([0, 1, 5], [0, 1, 1], [0, 1], [10, 3]), r"^y_true: label 5 is not among the classes"),
        (([0, 1, 1], [0, 1, 7], [0, 1], [10, 3]), r"^y_pred: label 7 is not among the classes"),
        ((["a", "b"], [0, 1], [0, 1], [10, 3]), r"^y_true: label 'a' is not among the classes"),
        (([0, 1], [0, 1, 1], [0, 1], [10, 3]), r"^y_pred: 3 labels for 2 in y_true"),
        (([0, 1], [0, 1], [0, 1], [10]), r"^train_counts: 1 counts for 2 classes"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            shot_accuracy(*args)
    x, y = long_tailed_blobs()
    with pytest.raises(ValueError, match=r"^y_true: label 99 is not among the classes"):
        fast("joint").fit(x, y).shot_scores(x[:3], [99, 0, 0])


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
    held_out = fast(method, cv=None).fit(x, y)
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


@pytest.mark.parametrize("solver", ["lbfgs", "sgd"])
def test_methods_that_choose_nothing_train_on_all_of_x(solver):
    x, y = long_tailed_blobs()
    joint = fast("joint", solver=solver, weight_decay=0.01).fit(x, y)
    assert joint.validation_ == "none"
    # Given a validation split, a method that chooses trains its probe on all of X too: the same probe.
    given = fast("tau_norm", solver=solver, weight_decay=0.01).fit(x, y, X_val=x[:10], y_val=y[:10])
    np.testing.assert_array_equal(joint.joint_.weight.numpy(), given.joint_.weight.numpy())


def test_k_fold_choice_then_refit_on_all_of_x():
    """The chosen classifier is refit on all of X: logit adjustment at the chosen τ on the probe fit on all of X."""
    x, y = long_tailed_blobs()
    two_taus = {"decouple.logit_adjust.min": 0.0, "decouple.logit_adjust.max": 1.0, "decouple.logit_adjust.steps": 2}
    chosen = fast("logit_adjust", weight_decay=0.01, config=two_taus).fit(x, y)
    probe = fast("joint", weight_decay=0.01).fit(x, y)
    assert chosen.validation_ == "cross-validated" and [c["tau"] for c in chosen.candidates_] == [0.0, 1.0]
    np.testing.assert_array_equal(chosen.joint_.weight.numpy(), probe.joint_.weight.numpy())
    prior = np.log(np.array(COUNTS) / sum(COUNTS))
    expected = probe.decision_function(x) - chosen.tau_ * prior
    np.testing.assert_allclose(chosen.decision_function(x), expected, atol=1e-5)
    # One τ and a fixed penalty: a single candidate, nothing to choose, no folds to fit.
    one_tau = {**two_taus, "decouple.logit_adjust.min": 1.0, "decouple.logit_adjust.steps": 1}
    single = fast("logit_adjust", weight_decay=0.01, config=one_tau).fit(x, y)
    assert single.validation_ == "none" and single.candidates_ is None and single.params_ == {"tau": 1.0}
    np.testing.assert_allclose(single.decision_function(x), probe.decision_function(x) - prior, atol=1e-5)


def test_k_fold_selection_works_on_a_tail_of_two_samples():
    x, y = long_tailed_blobs(counts=[60, 20, 2])
    clf = fast("auto").fit(x, y)
    assert clf.validation_ == "cross-validated"
    # Both samples of the 2-sample class were held out (in two different folds), so it is scored.
    assert all(c["val"]["few"] is not None for c in clf.candidates_)
    folds = stratified_folds(y, 5, seed=0)
    tail = folds[y == 2]
    assert len(set(tail)) == 2 and (tail >= 0).all()


def test_stratified_folds_deal_each_class_round_the_folds():
    y = np.repeat(np.arange(5), [23, 9, 5, 2, 1])
    folds = stratified_folds(y, 5, seed=3)
    assert np.array_equal(folds, stratified_folds(y, 5, seed=3))  # seeded
    assert folds[y == 4].tolist() == [-1]  # a class's only sample is never held out
    for cls, n in enumerate([23, 9, 5, 2]):
        per_fold = np.bincount(folds[y == cls], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1 and per_fold.sum() == n  # dealt evenly, all held out once
        assert (n - per_fold).min() >= 1  # every training fold keeps the class
    sizes = np.bincount(folds[folds >= 0])
    assert sizes.max() - sizes.min() <= 1  # folds of even size


def test_tiny_data_chooses_on_training_data_and_says_so():
    x = np.array([[0.0, 1.0], [1.0, 0.0], [0.1, 0.9], [0.9, 0.2]])
    clf = fast("auto").fit(x, ["a", "b", "a", "b"])  # two samples per class: each held out in turn
    assert clf.validation_ == "cross-validated" and list(clf.predict(x)) == ["a", "b", "a", "b"]
    with pytest.warns(HoldoutWarning, match="a class's only sample is never held out"):
        clf = fast("auto").fit(x[:2], ["a", "b"])  # one sample per class
    assert clf.validation_ == "training data" and set(clf.predict(x[:2])) <= {"a", "b"}
    with pytest.warns(HoldoutWarning, match="a class gives one only from 5 samples"):
        clf = fast("auto", cv=None).fit(x, ["a", "b", "a", "b"])
    assert clf.validation_ == "training data" and list(clf.predict(x)) == ["a", "b", "a", "b"]


def test_one_class_is_a_clear_error():
    with pytest.raises(ValueError, match=r"needs at least 2 classes in y; got 1 class \(1\)"):
        fast().fit(np.ones((5, 3)), [1] * 5)
    with pytest.raises(ValueError, match=r"got 1 class \('a'\)"):
        fast().fit(np.ones((5, 3)), np.array(["a"] * 5, dtype=object))


def test_features_beyond_float32_are_refused_not_trained_as_infinity():
    """Finite float64 beyond float32's range became inf in the float32 heads: every solve NaN, a model at
    chance, and only L-BFGS's "stopped after 0 iterations" warnings."""
    X = np.ones((8, 3))
    X[5, 1] = 1e200
    y = [0, 1] * 4
    with pytest.raises(ValueError, match=r"^X row 5 holds values beyond float32's range \(3.403e\+38\)"):
        fast().fit(X, y)
    with pytest.raises(ValueError, match=r"^X_val row 5 holds values beyond float32's range"):
        fast().fit(np.ones((8, 3)), y, X_val=X, y_val=y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # L-BFGS cannot make progress on such values; they are taken, though
        fast().fit(np.full((8, 3), 3e38), y)  # within float32


# --- parameters and config ----------------------------------------------------------------------------------


def test_config_overrides_reach_the_method():
    x, y = long_tailed_blobs()
    clf = fast("tau_norm", config={"decouple.tau.min": 0.5, "decouple.tau.max": 0.5, "decouple.tau.steps": 1})
    assert clf.fit(x, y).tau_ == 0.5
    slow_lr = fast("crt", solver="sgd", config={"decouple.crt.lr": 0.01}).fit(x, y)
    assert slow_lr.params_ == {"lr": 0.01}
    assert fast("crt", config={"decouple.crt.lr": 0.01}).fit(x, y).params_ == {}  # solved exactly: no lr


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
        ({"batch_size": "big"}, r"batch_size='big': expected 'auto' or an integer >= 1"),
        ({"epochs": None}, r"epochs=None: expected an integer >= 1"),
        ({"many": np.int64(5), "few": 2.5}, r"few=2.5: expected an integer in \[0, many\]"),
        ({"lr": -1.0}, r"lr=-1.0: expected a number > 0"),
        ({"validation_fraction": 1.0}, r"validation_fraction=1.0: expected a number in \[0, 1\)"),
        ({"few": 50, "many": 10}, r"few=50: expected an integer in \[0, many\]"),
        ({"config": {"train.epochs": 3}}, r"only decouple\.\* keys"),
        ({"config": {"decouple.trainable": "all"}}, r"needs images"),
        ({"config": {"decouple.bogus": 1}}, r"decouple\.bogus"),
        ({"device": "cuda:99"}, r"device='cuda:99'"),
        ({"device": "gpu"}, r"device='gpu': expected cpu, cuda"),
        ({"solver": "adam"}, r"solver='adam': expected one of lbfgs, sgd"),
        ({"selection": "macro"}, r"selection='macro': expected one of log_loss, accuracy"),
        ({"cv": 1}, r"cv=1: expected an integer >= 2"),
        ({"cv": 2.5}, r"cv=2.5: expected an integer >= 2"),
        ({"tol": 0}, r"tol=0: expected a number > 0"),
        ({"max_iter": 0}, r"max_iter=0: expected an integer >= 1"),
        ({"train_heads": "yes"}, r"train_heads='yes': expected True or False"),
        ({"weight_decay": "big"}, r"weight_decay='big': expected 'auto', a number >= 0 or a list of them"),
        ({"weight_decay": -1.0}, r"weight_decay=-1.0: expected 'auto', a number >= 0 or a list"),
        ({"weight_decay": []}, r"weight_decay=\[\]: expected 'auto', a number >= 0 or a list"),
        ({"weight_decay": [0.1, -1]}, r"weight_decay=\[0.1, -1\]: expected"),
        # A negative int was refused as "seed=-1", a name the estimator does not have.
        ({"random_state": -1}, r"random_state=-1: expected None, an integer in \[0, 2\*\*63\) or a numpy"),
        ({"random_state": 2**63}, r"random_state=9223372036854775808: expected None"),
        ({"random_state": "x"}, r"random_state='x': expected None"),
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
    # cRT by SGD draws from every stream a fit uses (initialisation, sampler, shuffling); scikit-learn's
    # check_fit_idempotent (above) refits auto, and with it every method, on the same data.
    a = fast("crt", solver="sgd").fit(x, y)
    after = torch.rand(1), np.random.rand()
    torch.manual_seed(123)
    np.random.seed(123)
    assert (torch.rand(1), np.random.rand()) == after
    b = fast("crt", solver="sgd").fit(x, y)
    np.testing.assert_array_equal(a.decision_function(x), b.decision_function(x))
    c = fast("crt", solver="sgd", random_state=1).fit(x, y)
    assert not np.array_equal(a.joint_.weight.numpy(), c.joint_.weight.numpy())
    # Solved exactly, the probe and cRT do not depend on the seed at all (the folds of auto do).
    exact = [fast("crt", random_state=seed).fit(x, y) for seed in (0, 1)]
    np.testing.assert_array_equal(exact[0].decision_function(x), exact[1].decision_function(x))


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


@pytest.mark.filterwarnings("ignore:prior not applied")  # whether this data's check passes is not the point
def test_a_fitted_estimator_keeps_no_copy_of_x(monkeypatch):
    """The fitted model held, and pickled, a float32 copy of all of X for ``predict(prior=...)``'s calibration:
    its size grew with n_samples x n_features. It keeps the head's scores now (n_samples x n_classes), and
    nothing beyond what a prior adapter is fitted on."""
    from longtail.sklearn import estimator

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), [200, 100, 50, 25])
    x = rng.normal(size=(len(y), 1000)) + y[:, None]
    fitted = fast("joint").fit(x, y)
    assert len(pickle.dumps(fitted)) < x.astype(np.float32).nbytes / 20
    held = [v for v in vars(fitted).values() if isinstance(v, torch.Tensor | np.ndarray)]
    assert all(v.size(-1) != 1000 if isinstance(v, torch.Tensor) else v.shape[-1] != 1000 for v in held)
    adapted = fitted.adapt_prior(x[:50], [1, 1, 1, 1])  # the calibration, from the kept scores
    assert adapted.prior.shape == (4,)
    monkeypatch.setattr(estimator, "MAX_ADAPTER_VALUES", 100)
    monkeypatch.setattr("longtail.shift.adapter.MAX_ADAPTER_VALUES", 100)
    beyond = fast("joint").fit(x, y)
    assert beyond._prior_scores is None
    with pytest.raises(ValueError, match=r"^prior: the calibration cannot be fitted on the training data: 375 "):
        beyond.predict(x[:5], prior="em")


def test_an_estimator_pickled_with_its_calibration_features_still_takes_a_prior():
    """Earlier code pickled the calibration's features (``_prior_data``) where the estimator now keeps the head's
    scores of them: such a pickle read back took no ``prior=`` (AttributeError); it now computes the scores."""
    from longtail.sklearn import fitting

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), [200, 100, 50, 25])
    x = rng.normal(size=(len(y), 20)) + y[:, None]
    fitted = fast("joint").fit(x, y)
    assert fitted.prior_calibration_ == "training data"  # so the earlier code's features were all of X
    old = copy.deepcopy(fitted)
    del old._prior_scores, old._prior_labels
    old._prior_data = fitting.as_features(x, y)
    restored = pickle.loads(pickle.dumps(old))
    assert not hasattr(restored, "_prior_data")
    assert torch.equal(restored._prior_scores, fitted._prior_scores)
    # The same calibration and validation check as the estimator that was pickled, and the same EM estimate.
    assert restored._fitted_prior_adapter().to_dict() == fitted._fitted_prior_adapter().to_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PriorNotAppliedWarning)  # whether it is applied is the check's to say
        assert torch.equal(restored.adapt_prior(x[:50], "em").prior, fitted.adapt_prior(x[:50], "em").prior)


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


# --- the choice's score, and heads solved exactly ------------------------------------------------------------


def test_calibrated_log_loss_is_the_best_temperature_of_the_balanced_log_loss():
    rng = np.random.default_rng(0)
    y = torch.tensor(np.repeat(np.arange(3), [30, 10, 3]))
    scores = torch.tensor(rng.normal(size=(len(y), 3))) + 2.0 * torch.nn.functional.one_hot(y, 3)
    (loss,), (beta,) = calibrated_log_loss(scores.unsqueeze(0), y)

    def balanced(b: float) -> float:
        nll = -torch.log_softmax(b * scores, dim=1).gather(1, y.unsqueeze(1)).squeeze(1)
        return float(torch.stack([nll[y == c].mean() for c in range(3)]).mean())

    grid = np.linspace(float(beta) - 0.05, float(beta) + 0.05, 21)  # a brute-force search around it finds no better
    assert min(balanced(b) for b in grid) >= float(loss) - 1e-12
    assert balanced(float(beta) * 0.5) > float(loss) and balanced(float(beta) * 2) > float(loss)
    assert float(loss) == pytest.approx(balanced(float(beta)), abs=1e-9)
    # The same for scores of another scale (only the temperature changes), and none for useless scores.
    (scaled,), (beta3,) = calibrated_log_loss(3 * scores.unsqueeze(0), y)
    assert float(scaled) == pytest.approx(float(loss), abs=1e-9) and float(beta3) == pytest.approx(float(beta) / 3)
    (useless,), (zero,) = calibrated_log_loss(-scores.unsqueeze(0), y)
    assert float(zero) == 0 and float(useless) == pytest.approx(np.log(3))


def test_calibrated_log_loss_of_scores_of_a_huge_scale_is_found_without_overflow_warnings():
    """Scores at 1e12 (NCM's distances on unscaled features) overflowed the Newton step: NumPy's "overflow
    encountered in divide", 35 times in one ``auto`` fit, though the answer was right."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 10)
    scores = rng.normal(size=(30, 3)) + 2.0 * np.eye(3)[y]
    (loss,), (beta,) = calibrated_log_loss(scores[None], y)
    for scale in (1e12, 1e20):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            (big,), (beta_big,) = calibrated_log_loss(scale * scores[None], y)
        assert big == pytest.approx(loss, abs=1e-9) and beta_big == pytest.approx(beta / scale, rel=1e-5)


def test_a_head_solved_exactly_minimises_the_samplers_expected_loss():
    """cRT with class-aware sampling and weight decay 5e-4, solved exactly: class-balanced logistic regression."""
    x, y = long_tailed_blobs()
    crt = DecoupledClassifier("crt", tol=1e-7).fit(x, y)
    weight, bias = fit_linear_exact(
        torch.tensor(x), torch.tensor(y), 4, 5e-4, class_weight="balanced", tol=1e-7, dtype=torch.float64
    )
    np.testing.assert_allclose(crt.head_.weight.numpy(), weight.numpy(), atol=1e-4)
    counts = torch.tensor([150, 50, 10, 0])
    sampling = SimpleNamespace(sampler="sqrt", sampler_q=0.5)
    assert torch.allclose(class_probabilities(counts, sampling), counts.double().sqrt() / counts.double().sqrt().sum())
    sampling.sampler = "class_aware"
    assert class_probabilities(counts, sampling).tolist() == [1 / 3, 1 / 3, 1 / 3, 0.0]
    sampling.sampler = "progressive"
    expected = 0.5 * counts.double() / 210 + 0.5 * torch.tensor([1 / 3, 1 / 3, 1 / 3, 0.0], dtype=torch.float64)
    assert torch.allclose(class_probabilities(counts, sampling), expected)


def test_the_reference_wins_unless_clearly_beaten():
    """The lowest held-out log-loss beats the reference only by more than 2 standard errors of the paired loss."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), [60, 20, 6])
    reference = rng.normal(size=(len(y), 3)) + 1.5 * np.eye(3)[y]
    nudged = reference + 0.02 * np.eye(3)[y]  # better on every sample, by a hair
    noisy = reference + rng.normal(scale=0.3, size=reference.shape)  # better or worse by chance
    sharp = reference + 3.0 * np.eye(3)[y]  # much better
    (ref_loss, noisy_loss), betas = calibrated_log_loss(np.stack([reference, noisy]), y)
    if noisy_loss < ref_loss:  # the luckier one, but not clearly
        assert not clearly_better(noisy, reference, y, betas=(betas[1], betas[0]))
    for candidate, expected in ((sharp, True), (nudged, True), (reference, False)):
        _, (beta, beta_ref) = calibrated_log_loss(np.stack([candidate, reference]), y)
        assert clearly_better(candidate, reference, y, betas=(beta, beta_ref)) is expected
    # With a margin too large for any difference, nothing is clearly better.
    _, (beta, beta_ref) = calibrated_log_loss(np.stack([sharp, reference]), y)
    assert not clearly_better(sharp, reference, y, betas=(beta, beta_ref), margin=1e6)
    # The per-sample losses are the log-loss: their class-balanced mean is calibrated_log_loss's value.
    (loss,), (beta,) = calibrated_log_loss(reference[None], y)
    weights = 1.0 / (np.bincount(y)[y] * 3)
    assert weights @ sample_log_losses(reference, y, beta) == pytest.approx(loss)


def test_accuracy_summaries_of_many_candidates_match_accuracy_summary():
    rng = np.random.default_rng(1)
    counts = [150, 60, 20, 8, 3]
    y = np.repeat(np.arange(5), [9, 7, 5, 0, 2])  # class 3 absent from the held-out samples
    predictions = rng.integers(0, 5, size=(4, len(y)))
    for many, few in ((100, 20), (1000, 0)):  # the second leaves "many" and "few" empty
        batch = accuracy_summaries(predictions, y, counts, many=many, few=few)
        for row, summary in zip(predictions, batch, strict=True):
            expected = accuracy_summary(torch.tensor(row), torch.tensor(y), counts, many=many, few=few)
            expected.pop("per_class")
            assert summary.keys() == expected.keys()
            for key, value in expected.items():
                assert summary[key] == (None if value is None else pytest.approx(value))


def test_the_estimators_tau_grids_have_five_points_unless_configured():
    x, y = long_tailed_blobs()
    clf = fast("logit_adjust", weight_decay=0.01, config={"decouple.logit_adjust.steps": 3}).fit(x, y)
    assert [c["tau"] for c in clf.candidates_] == [0.0, 1.0, 2.0]
    config = probe_config(
        seed=0, epochs=1, lr=0.1, batch_size=32, weight_decay=0.0, many=100, few=20, overrides=["decouple.tau.max=1"]
    )
    assert config.decouple.tau.values() == [0.0, 0.25, 0.5, 0.75, 1.0] and config.decouple.logit_adjust.steps == 5


def test_features_far_from_order_one_are_named_with_a_warning():
    """Unscaled features were fitted badly without a word (cRT 0.46 on its own training data at RMS 1e6, LWS 0.53
    at 0.01): fit() now says so, once, and names the remedy; features of order 1 fit in silence."""
    from longtail.sklearn import FeatureScaleWarning, estimator

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), [200, 100, 50, 25])
    x = rng.normal(size=(len(y), 20)) + y[:, None]
    x /= np.sqrt(np.mean(x**2))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FeatureScaleWarning)
        fast("tau_norm").fit(x, y)
    with pytest.warns(FeatureScaleWarning, match=r"^X's root-mean-square value is 0.001, .*StandardScaler in front"):
        fast("tau_norm").fit(x * 1e-3, y)
    with pytest.warns(
        FeatureScaleWarning, match=re.escape("X's root-mean-square value is 1e+06, far from the order 1")
    ):
        estimator._warn_on_feature_scale(x * 1e6)  # what fit() calls first (a fit there runs L-BFGS to max_iter)
