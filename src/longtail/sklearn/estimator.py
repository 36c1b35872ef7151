"""``DecoupledClassifier``: the decoupling recipe as a scikit-learn classifier on feature matrices."""

from __future__ import annotations

import warnings
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from ..config.options import AutoOr, Interval, OneOf, Parameters, Satisfies
from ..engine.device import one_thread, resolve_device
from ..engine.feature_rows import chunk_rows
from ..errors import DataError
from ..evaluation.metrics import accuracy_summary, shot_groups
from ..methods import method_names
from ..shift import Adapted, PriorAdapter, fit_prior_adapter
from ..shift.adapter import MAX_ADAPTER_VALUES, MIN_EM_IMAGES, NOT_APPLIED, check_adapter_size
from ..shift.prior_file import normalised_weights
from . import fitting
from .candidates import JOINT_METHODS, Solver
from .selection import SELECTIONS, stratified_folds

FLOATS = [np.float32, np.float64]  # accepted as they are; anything else numeric is cast to float32
SOLVERS = ("lbfgs", "sgd")
PENALTY_LISTS = (list, tuple, np.ndarray)  # weight_decay as a grid, e.g. np.logspace(-4, -1, 4)
SGD_WEIGHT_DECAY = 5e-4  # the probe's weight decay under sgd, weight_decay="auto" (the official stage-1 value)


class HoldoutWarning(UserWarning):
    """No validation sample could be held out: hyper-parameters were chosen on the training data."""


class PriorNotAppliedWarning(UserWarning):
    """``prior=`` was not applied: the validation check turned prior adaptation off for this classifier."""


class FeatureScaleWarning(UserWarning):
    """``X``'s values are far from order 1, for which the heads' learning rates and weight decay are set."""


# Root-mean-square values of X beyond which fit() warns. Measured on 375 long-tailed vectors (4 classes, d = 20,
# scaled to RMS 1, then rescaled): at RMS 1 cRT, LWS and auto score 1.00 / 0.995 / 0.99 on their training data; at
# 100, auto 0.90; at 0.01, cRT 0.72 and LWS 0.53; at 1e6, cRT 0.46 (and at 1e-4, LWS 0.27), with no word of why.
FEATURE_RMS_RANGE = (1e-2, 1e2)
SCALE_SAMPLE_ROWS = 10_000  # evenly spaced rows the RMS is measured on: no float64 copy of a large X


class DecoupledClassifier(ClassifierMixin, BaseEstimator):
    """A joint linear classifier on features, then a re-balancing method (Kang et al., ICLR 2020).

    ``fit(X, y)`` trains the joint linear classifier on ``X`` (a linear probe,
    multinomial logistic regression solved exactly by default), then re-balances
    it with ``method`` through longtail's method protocol. Choices (τ of
    τ-normalisation and logit adjustment, ``auto``'s choice of method) are made
    by stratified k-fold cross-validation on ``X``, then the chosen classifier
    is refit on all of ``X``; or on ``X_val, y_val`` passed to ``fit``; never
    on anything else.

    Parameters
    ----------
    method : str, default="auto"
        ``ncm``, ``crt``, ``tau_norm``, ``lws``, ``logit_adjust``, any other
        registered method, ``joint`` (the linear probe alone), ``joint_balanced``
        (the probe with class weights ``n / (C n_c)``: under ``lbfgs``, scikit-learn's
        ``LogisticRegression(class_weight="balanced")``) or ``auto`` (the best by
        ``selection`` among the candidates ``train_heads`` describes).
    solver : {"lbfgs", "sgd"}, default="lbfgs"
        ``lbfgs``: the joint classifiers, and every head whose training has a unique
        optimum (cRT), are solved exactly by full-batch L-BFGS; the heads that only
        SGD trains (LWS, WB, LAS) train by SGD when asked for by name and are left
        out of ``auto``. ``sgd``: the probe is trained by SGD (``epochs``, ``lr``,
        ``batch_size``) and ``auto`` tries every method.
    weight_decay : float, "auto" or list (tuple, 1-D array) of floats, default="auto"
        The probe's L2 penalty ``weight_decay / 2 * ||W||^2`` on the mean loss (the
        bias is not penalised under ``lbfgs``). ``"auto"`` under ``lbfgs``: ``1 / n`` on
        each fit's ``n`` training samples (``LogisticRegression``'s default ``C=1``);
        under ``sgd``: the official 5e-4. A list: one probe per value for a method
        that chooses (each probe's candidates are candidates, the probe part of the
        choice, ``params_["joint_weight_decay"]``); the first value otherwise.
    train_heads : bool, default=False
        ``auto`` under ``lbfgs``: also choose among the candidates that need a solve
        of their own on every fold: the class-weighted probe (``joint_balanced``,
        ``LogisticRegression(class_weight="balanced")``) and the heads solved exactly
        (cRT). By default ``auto`` chooses among the probe and what is built on it
        without training (logit adjustment, τ-normalisation, NCM): one solve per
        fold. ``skipped_`` lists what is left out. Under ``sgd`` ``auto`` tries every method.
    tol, max_iter : ``lbfgs``: converged when every |gradient| entry is at most
        ``tol`` (``LogisticRegression``'s default, 1e-4); at most ``max_iter`` iterations.
    epochs, lr : ``sgd``: the probe's epochs of ``len(X)`` draws and peak SGD
        learning rate (momentum 0.9, cosine to 0 per step).
    batch_size : int or "auto", default="auto"
        Samples per SGD step of the probe (``sgd``) and of every head trained by SGD
        (``config`` may set ``decouple.<method>.batch_size``). ``"auto"``:
        ``min(512, max(32, n_samples // 32))``: 32 steps per epoch, kept
        within 32 and the official 512 (which assumes ImageNet-scale data: on a
        few hundred samples it would make one step per epoch).
    cv : int or None, default=3
        Folds of the stratified k-fold selection (methods that choose: ``auto``,
        ``tau_norm``, ``logit_adjust``). Each class's samples are dealt round the
        folds; a class's only sample is never held out. None: one class-balanced
        validation split held out of ``X`` (``val_per_class``,
        ``validation_fraction``), and no refit.
    selection : {"log_loss", "accuracy"}, default="log_loss"
        What the choice maximises on the pooled held-out scores: ``log_loss``, minus
        the class-balanced log-loss at each candidate's best temperature (smooth
        where tails have a handful of samples), the lowest winning only if it beats
        the reference (logit adjustment at τ = 1 on the first probe) by more than two
        standard errors, else the reference; ``accuracy``, ``decouple.select``
        (macro by default).
    val_per_class : int or None, default=None
        ``cv=None``: validation samples held out of each class; None: ``validation_fraction``.
    validation_fraction : float, default=0.2
        ``cv=None``: share of ``X`` held out for validation, spread evenly over the
        classes. Either way no class gives more than a fifth of its samples nor its
        last one, so classes of fewer than five samples give none.
    many, few : int, default=100, 20
        Shot groups by training samples per class: many ``n > many``, medium
        ``few <= n <= many``, few ``n < few``.
    random_state : int, RandomState or None, default=None
        Seed of the folds, split, initialisation and sampling (an int is longtail's ``seed``).
    device : str, default="cpu"
        Where heads train: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
    config : dict or None, default=None
        ``decouple.*`` config keys, e.g. ``{"decouple.crt.epochs": 20, "decouple.select": "few"}``
        (``longtail config`` lists them).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
    feature_names_in_ : ndarray of str, only when ``X`` has column names (a DataFrame)
    method_ : str
        The method that predicts: ``method``, or what ``auto`` chose.
    params_ : dict
        Its hyper-parameters, e.g. ``{"tau": 0.8}``, ``{"lr": 0.05}`` (a head trained by SGD), and
        ``joint_weight_decay`` where the probe's penalty was chosen too.
    tau_ : float or None
        The chosen τ (``tau_norm``, ``logit_adjust``); None where no τ applies.
    head_ : torch.nn.Module
        (N, d) float64 features -> (N, C) scores, on the CPU.
    joint_ : torch.nn.Module
        The joint linear classifier (the probe) the chosen classifier was fit on, likewise.
    n_iter_ : int
        Iterations of that probe's training: L-BFGS iterations (``lbfgs``), epochs (``sgd``).
    candidates_ : list of dict or None
        Methods that choose: every candidate with its held-out accuracies (``val``, %)
        and, with ``selection="log_loss"``, ``log_loss`` and ``temperature``; None otherwise.
    skipped_ : dict
        Methods ``auto`` left out, and why (under ``lbfgs``: heads that only SGD trains).
    validation_ : str
        Where choices were made: ``"cross-validated"``, ``"held out"`` (``cv=None``),
        ``"given"`` (``X_val``), ``"training data"`` (nothing could be held out; a
        :class:`HoldoutWarning` says so) or ``"none"`` (nothing to choose).
    class_counts_ : ndarray of shape (n_classes,)
        Samples per class in ``y``.
    shot_groups_ : dict
        ``{"many", "medium", "few"}`` -> the ``classes_`` labels of each group, from ``class_counts_``.
    """

    def __init__(
        self,
        method: str = "auto",
        *,
        solver: str = "lbfgs",
        weight_decay: float | str | list[float] = "auto",
        train_heads: bool = False,
        tol: float = 1e-4,
        max_iter: int = 1000,
        epochs: int = 30,
        lr: float = 0.1,
        batch_size: int | str = "auto",
        cv: int | None = 3,
        selection: str = "log_loss",
        val_per_class: int | None = None,
        validation_fraction: float = 0.2,
        many: int = 100,
        few: int = 20,
        random_state: Any = None,
        device: str = "cpu",
        config: dict[str, Any] | None = None,
    ) -> None:
        self.method = method
        self.solver = solver
        self.weight_decay = weight_decay
        self.train_heads = train_heads
        self.tol = tol
        self.max_iter = max_iter
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.cv = cv
        self.selection = selection
        self.val_per_class = val_per_class
        self.validation_fraction = validation_fraction
        self.many = many
        self.few = few
        self.random_state = random_state
        self.device = device
        self.config = config

    # --- fit ---------------------------------------------------------------------------------------------

    def fit(self, X: Any, y: Any, X_val: Any = None, y_val: Any = None) -> DecoupledClassifier:
        """Train the joint classifier on ``X`` (N, d) and ``y`` (N,), then re-balance it with ``method``.

        ``X_val``, ``y_val``: the validation split to choose hyper-parameters on
        (default: held out of ``X``); labels must be among those of ``y``.
        """
        self._check_params()
        X, y = validate_data(self, X, y, dtype=FLOATS)
        _check_float32_range(X, "X")
        _warn_on_feature_scale(X)
        check_classification_targets(y)
        encoder = LabelEncoder().fit(y)
        self.classes_ = encoder.classes_
        if len(self.classes_) < 2:
            raise ValueError(
                f"{type(self).__name__} needs at least 2 classes in y; got 1 class ({_plain(self.classes_[0])!r})"
            )
        codes = encoder.transform(y)
        seed = self._seed()
        device = _device(self.device)
        overrides = fitting.override_strings(self.config)
        config = fitting.probe_config(
            seed=seed,
            epochs=self.epochs,
            lr=float(self.lr),
            batch_size=self._batch_size(len(codes)),
            weight_decay=SGD_WEIGHT_DECAY if _is_auto(self.weight_decay) else self._penalties()[0],
            many=self.many,
            few=self.few,
            overrides=overrides,
        )
        train, where = self._where_to_choose(X, codes, X_val, y_val, encoder, seed)
        held_out = where.get("val") if self.validation_ in ("given", "held out") else None
        fitting.check_selection(self.method, train, where, len(self.classes_), config)  # before anything trains
        with fitting.preserved_rng(device), fitting.small_fit_threads(X.size):
            choice = fitting.choose(
                self.method,
                train,
                len(self.classes_),
                config,
                device,
                self._solver(),
                selection=self.selection,
                **where,
            )
        self._set_fitted(choice)
        self.class_counts_ = np.bincount(codes, minlength=len(self.classes_))
        # What predict(prior=...) calibrates on, fitted on first use: the validation split where one was held out.
        # Its scores are kept, not its features: a fitted model held (and pickled) a float32 copy of all of X.
        self.prior_calibration_ = "validation" if held_out is not None else "training data"
        data_x, data_y = (held_out.x, held_out.y) if held_out is not None else (X, torch.as_tensor(codes))
        self._prior_scores = _calibration_scores(self.head_, data_x, len(self.classes_))
        self._prior_labels = data_y
        self._prior_adapter = None
        groups = shot_groups(self.class_counts_, many=self.many, few=self.few)
        self.shot_groups_ = {name: self.classes_[members] for name, members in groups.items()}
        return self

    def _check_params(self) -> None:
        """One-line errors for impossible parameters (scikit-learn checks them in ``fit``, not ``__init__``),
        by the constraints of :func:`parameter_constraints`: the same declarations and messages as config keys."""
        parameter_constraints().check(self.get_params(deep=False))

    def _batch_size(self, num_samples: int) -> int:
        """Samples per SGD step; ``"auto"``: see :func:`~longtail.sklearn.fitting.auto_batch_size`."""
        return fitting.auto_batch_size(num_samples) if self.batch_size == "auto" else int(self.batch_size)

    def _penalties(self) -> list[float]:
        """``weight_decay`` as a list of values (a number is a list of one; not for ``"auto"``)."""
        values = self.weight_decay if isinstance(self.weight_decay, PENALTY_LISTS) else [self.weight_decay]
        return [float(v) for v in values]

    def _solver(self) -> Solver:
        """How the joint classifiers learn: ``weight_decay="auto"`` is ``1 / n`` per fit (``lbfgs``) or 5e-4
        (``sgd``); a list is a grid of probes for a method that chooses, else its first value."""
        if _is_auto(self.weight_decay):
            l2, grid = (SGD_WEIGHT_DECAY if self.solver == "sgd" else None), (1.0,)
        else:
            penalties = self._penalties()
            chooses = fitting.chooses_on_validation(self.method)
            l2, grid = 1.0, tuple(penalties if chooses else penalties[:1])  # each probe's penalty: 1.0 x its value
        heads = bool(self.train_heads)
        return Solver(self.solver, l2, tol=float(self.tol), max_iter=int(self.max_iter), grid=grid, train_heads=heads)

    def _seed(self) -> int:
        """longtail's seed: ``random_state`` itself when an int, else drawn from it (None: the global stream)."""
        if isinstance(self.random_state, Integral):
            return int(self.random_state)
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    def _where_to_choose(
        self, X: np.ndarray, codes: np.ndarray, X_val: Any, y_val: Any, encoder: LabelEncoder, seed: int
    ) -> tuple[Any, dict[str, Any]]:
        """The training features and the ``val`` / ``folds`` keywords of :func:`~longtail.sklearn.fitting.choose`:
        the given validation split, stratified folds, a held-out split, or the training data again."""
        if (X_val is None) != (y_val is None):
            raise ValueError("X_val and y_val: give both or neither")
        if X_val is not None:
            self.validation_ = "given"
            return fitting.as_features(X, codes), {"val": self._given_validation(X_val, y_val, encoder)}
        train = fitting.as_features(X, codes)
        if not fitting.chooses_on_validation(self.method):
            self.validation_ = "none"
            return train, {}
        # A method whose only choice is inside its own fit (WB's grid) chooses on the split its fit is given:
        # folds would refit it on all of X and let it choose on its own training data, so it gets a hold-out.
        if self.cv is not None and not fitting.chooses_inside_only(self.method):
            folds = stratified_folds(codes, int(self.cv), seed)
            if (folds >= 0).any():
                self.validation_ = "cross-validated"
                return train, {"folds": folds}
        else:
            train_index, val_index = fitting.validation_split(
                codes,
                len(self.classes_),
                val_per_class=self.val_per_class,
                validation_fraction=self.validation_fraction,
                seed=seed,
            )
            if len(val_index):
                self.validation_ = "held out"
                return fitting.as_features(X[train_index], codes[train_index]), {
                    "val": fitting.as_features(X[val_index], codes[val_index])
                }
        warnings.warn(
            f"{type(self).__name__}(method={self.method!r}): no validation sample could be held out "
            f"({self._holdout_rule()}); choosing on the training data instead; pass X_val, y_val",
            HoldoutWarning,
            stacklevel=3,
        )
        self.validation_ = "training data"
        return train, {"val": train}

    def _holdout_rule(self) -> str:
        """Which samples a class can give for validation, in words."""
        if self.cv is not None:
            return "a class's only sample is never held out"
        return "a class gives one only from 5 samples"

    def _given_validation(self, X_val: Any, y_val: Any, encoder: LabelEncoder) -> Any:
        """``X_val``, ``y_val`` checked like ``X`` (same features) and encoded with the training labels."""
        X_val = validate_data(self, X_val, reset=False, dtype=FLOATS)
        _check_float32_range(X_val, "X_val")
        y_val = column_or_1d(y_val, warn=True)
        if len(y_val) != len(X_val):
            raise ValueError(f"y_val: {len(y_val)} labels for {len(X_val)} rows of X_val")
        unknown = np.setdiff1d(np.unique(y_val), self.classes_)
        if len(unknown):
            raise ValueError(f"y_val: label {_plain(unknown[0])!r} is not in y; expected labels among classes_")
        return fitting.as_features(X_val, encoder.transform(y_val))

    def _set_fitted(self, choice: fitting.Choice) -> None:
        """The fitted attributes, from the chosen candidate."""
        winner = choice.winner
        self.head_ = fitting.for_inference(winner.head())
        self.joint_ = fitting.for_inference(choice.joint)
        self.n_iter_ = int(choice.joint.n_iter)
        self.method_ = winner.method
        self.params_ = winner.params
        self.tau_ = self.params_.get("tau")
        self.candidates_ = choice.records
        if choice.records is None and not fitting.chooses_inside_only(self.method):
            self.validation_ = "none"  # a single candidate: nothing was chosen
        self.skipped_ = dict(choice.skipped)

    # --- predict -----------------------------------------------------------------------------------------

    def _scores(self, X: Any) -> np.ndarray:
        """(N, d) -> (N, C) float64 scores of ``head_`` (logits; NCM: negative squared distances)."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=FLOATS)
        with torch.no_grad():
            return self.head_(torch.tensor(X, dtype=torch.float64)).numpy()

    def decision_function(self, X: Any) -> np.ndarray:
        """(N, C) scores per class; with two classes (N,) ``score[1] - score[0]`` (> 0: ``classes_[1]``)."""
        scores = self._scores(X)
        return scores[:, 1] - scores[:, 0] if len(self.classes_) == 2 else scores

    def predict_proba(self, X: Any, prior: Any = None) -> np.ndarray:
        """(N, C) softmax of the scores. For NCM a softmax of negative squared distances (temperature 1):
        it ranks like the distances but is not calibrated.

        ``prior``: None (the above); ``"em"``: calibrated posteriors moved to the class prior EM estimates from
        the rows of ``X`` (a batch of deployment samples, unlabeled); or (C,) non-negative weights per class of
        ``classes_`` (normalised): calibrated posteriors moved to that prior (see :meth:`adapt_prior`)."""
        if prior is None:
            return softmax(self._scores(X), axis=1)
        return np.exp(self._adapted(X, prior).log_posteriors.numpy())

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """(N, C) log of :meth:`predict_proba`, computed stably."""
        scores = self._scores(X)
        return scores - np.logaddexp.reduce(scores, axis=1, keepdims=True)

    def predict(self, X: Any, prior: Any = None) -> np.ndarray:
        """(N,) labels of ``classes_`` with the highest score (ties: the first class); ``prior`` as in
        :meth:`predict_proba` (``"em"``: estimated from the rows of ``X``)."""
        if prior is not None:
            return self.classes_[self._adapted(X, prior).predictions().numpy()]
        best = self._scores(X).argmax(axis=1)  # first: it checks that the estimator is fitted
        return self.classes_[best]

    def adapt_prior(self, X: Any, prior: Any = "em") -> Adapted:
        """The scores of ``X`` moved to a class prior (:mod:`longtail.shift`): ``"em"`` (estimated from ``X``
        by EM) or (C,) weights per class of ``classes_``.

        The calibration (temperature, or with a per-class bias; chosen by 5-fold NLL) and the check that prior
        adaptation helps on simulated shifts are fitted on the validation split of ``fit`` on first use
        (``prior_calibration_`` says which data: ``validation``, or ``training data`` when none was held out,
        e.g. ``cv`` folds: pass ``X_val, y_val`` to ``fit`` then). Where the check failed, the predictions stay
        the classifier's own (``Adapted.applied`` is False) and a :class:`PriorNotAppliedWarning` says so.
        ``Adapted.prior`` is the prior used, (C,). ``"em"`` needs at least 2 rows.
        """
        return self._adapted(X, prior)

    def _adapted(self, X: Any, prior: Any) -> Adapted:
        """:meth:`adapt_prior`, for it and the ``prior=`` of the predictions: its warning names their caller."""
        scores = torch.from_numpy(self._scores(X))  # first: it checks that the estimator is fitted
        adapter = self._fitted_prior_adapter()
        if isinstance(prior, str):
            if prior != "em":
                raise ValueError(f"prior={prior!r}: expected None, 'em' or one weight per class")
            if len(scores) < MIN_EM_IMAGES:  # one row's own posterior would "estimate" the prior that moves it
                raise ValueError(
                    f"prior='em': {len(scores)} row of X; EM estimates the class prior of a batch and needs at least "
                    f"{MIN_EM_IMAGES} rows: predict a batch, or give the prior as one weight per class"
                )
            adapted = adapter.adapt(scores, "em")
        else:
            adapted = adapter.adapt(scores, "known", target_prior=_prior_weights(prior, len(self.classes_)))
        if not adapted.applied:  # said, as `predict --prior` says it: else a given prior is ignored silently
            warnings.warn(f"prior not applied: {NOT_APPLIED}", PriorNotAppliedWarning, stacklevel=3)
        return adapted

    def _fitted_prior_adapter(self) -> PriorAdapter:
        if self._prior_adapter is None:
            scores, labels = self._prior_scores, self._prior_labels
            try:
                if scores is None:  # not kept: beyond what an adapter is fitted on; this says so
                    check_adapter_size(len(labels), len(self.classes_))
                with one_thread():
                    self._prior_adapter = fit_prior_adapter(scores, labels, self.class_counts_.tolist())
            except DataError as error:
                where = "validation split" if self.prior_calibration_ == "validation" else self.prior_calibration_
                reason = str(error).removeprefix("validation split: ")  # the library's wording for its own runs
                raise ValueError(f"prior: the calibration cannot be fitted on the {where}: {reason}") from None
        return self._prior_adapter

    def shot_scores(self, X: Any, y: Any) -> dict[str, float | None]:
        """Accuracy (%) on ``X``, ``y``: many / medium / few (this fit's shot groups), all (micro), macro."""
        check_is_fitted(self)
        return shot_accuracy(y, self.predict(X), self.classes_, self.class_counts_, many=self.many, few=self.few)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickle; an estimator pickled by longtail before 2026-12 held the calibration's features
        (``_prior_data``, a float32 copy of them) where it now holds the head's scores of them: computed here once,
        so that its ``prior=`` works as it did."""
        data = state.pop("_prior_data", None)
        super().__setstate__(state)
        if data is not None and "_prior_scores" not in state:
            self._prior_scores = _calibration_scores(self.head_, data.x, len(self.classes_))
            self._prior_labels = data.y

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False  # features go through a linear layer: NaN has no meaning there
        tags.input_tags.sparse = False  # trained as dense float32 tensors
        return tags


def shot_accuracy(
    y_true: Any, y_pred: Any, classes: Any, train_counts: Any, *, many: int = 100, few: int = 20
) -> dict[str, float | None]:
    """Accuracy (%) of any classifier's ``y_pred`` per shot group, micro (``all``) and macro.

    Args:
        y_true, y_pred: (N,) labels, among ``classes``.
        classes: (C,) the labels, sorted as ``np.unique`` sorts them (``classes_``).
        train_counts: (C,) training samples of each class, which define the groups.

    Returns:
        ``{"many", "medium", "few", "all", "macro"}``; an empty group is None.
    """
    classes, counts = np.asarray(classes), list(train_counts)
    if len(counts) != len(classes):
        raise ValueError(f"train_counts: {len(counts)} counts for {len(classes)} classes; expected one per class")
    labels = {"y_true": column_or_1d(y_true), "y_pred": column_or_1d(y_pred)}
    if len(labels["y_true"]) != len(labels["y_pred"]):
        raise ValueError(f"y_pred: {len(labels['y_pred'])} labels for {len(labels['y_true'])} in y_true")
    known = set(classes.tolist())
    for name, values in labels.items():  # LabelEncoder's "previously unseen labels: [np.int64(5)]" named neither
        unknown = [label for label in np.unique(values).tolist() if label not in known]
        if unknown:
            raise ValueError(f"{name}: label {unknown[0]!r} is not among the classes; expected labels of classes_")
    encoder = LabelEncoder().fit(classes)
    truth = torch.as_tensor(encoder.transform(labels["y_true"]))
    predicted = torch.as_tensor(encoder.transform(labels["y_pred"]))
    summary = accuracy_summary(predicted, truth, counts, many=many, few=few)
    summary.pop("per_class")
    return summary


def _calibration_scores(head: torch.nn.Module, x: np.ndarray | torch.Tensor, num_classes: int) -> torch.Tensor | None:
    """(N, C) scores of ``head`` on the features ``predict(prior=...)`` calibrates on, from their float32 values
    (as the heads saw them), in row chunks, kept in float32 (half the memory; the adapter reads them in float64
    row chunks); None beyond :data:`MAX_ADAPTER_VALUES` (no adapter is fitted on so many, so nothing is kept)."""
    if len(x) * num_classes > MAX_ADAPTER_VALUES:
        return None

    def float32(rows: np.ndarray | torch.Tensor) -> torch.Tensor:  # a copy: X may be a read-only memmap
        return rows.float() if isinstance(rows, torch.Tensor) else torch.tensor(rows, dtype=torch.float32)

    step = chunk_rows(x.shape[1])
    with torch.no_grad():
        chunks = [head(float32(x[i : i + step]).double()) for i in range(0, len(x), step)]
    return torch.cat(chunks).float()


def _device(name: Any) -> torch.device:
    """``device`` as a torch device that exists on this machine (``auto``: CUDA when available)."""
    try:
        device = resolve_device(str(name))
    except RuntimeError:  # torch's own parse error: not a device name at all
        raise ValueError(f"device={name!r}: expected cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device={name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def _prior_weights(prior: Any, num_classes: int) -> np.ndarray:
    """``prior=`` as a (C,) float64 probability vector, or a ValueError naming ``prior`` and what was expected.

    Only a flat vector of real numbers is taken: a matrix of C entries is refused rather than flattened, and
    text, ragged lists and complex numbers rather than raising NumPy's messages (or dropping the imaginary part).
    """
    expected = f"expected {num_classes} finite non-negative weights, one per class"
    values = prior.detach().cpu().numpy() if isinstance(prior, torch.Tensor) else prior
    try:
        weights = np.asarray(values)
    except ValueError:  # ragged nested lists
        raise ValueError(f"prior: {expected}, got a ragged sequence") from None
    if weights.dtype.kind not in "biuf":
        raise ValueError(f"prior: {expected}, got {weights.dtype} values")
    if weights.shape != (num_classes,):
        raise ValueError(f"prior: {expected}, got shape {weights.shape}")
    weights = weights.astype(np.float64)
    if not np.isfinite(weights).all() or (weights < 0).any():
        raise ValueError(f"prior: {expected}")
    if weights.max() <= 0:
        raise ValueError("prior: the weights sum to 0; expected at least one positive weight")
    return normalised_weights(weights)


def _check_float32_range(X: np.ndarray, name: str) -> None:
    """Refuse finite values that float32, in which heads train (:func:`~longtail.sklearn.fitting.as_features`),
    cannot hold: cast, they became infinite and every solve NaN, a model at chance with only L-BFGS's warnings."""
    largest = np.finfo(np.float32).max
    if X.dtype == np.float64 and X.size and np.abs(X).max() > largest:
        row = int(np.flatnonzero((np.abs(X) > largest).any(axis=1))[0])
        raise ValueError(
            f"{name} row {row} holds values beyond float32's range ({largest:.4g}), in which features are trained; "
            "expected features within it (scale them, e.g. with a StandardScaler in front)"
        )


def _warn_on_feature_scale(X: np.ndarray) -> None:
    """A :class:`FeatureScaleWarning` when the root-mean-square value of (N, d) ``X`` (on up to
    :data:`SCALE_SAMPLE_ROWS` evenly spaced rows) is outside :data:`FEATURE_RMS_RANGE`: unscaled features were
    fitted badly in silence, or with L-BFGS warnings that did not say why."""
    rows = X[:: max(1, len(X) // SCALE_SAMPLE_ROWS)]
    rms = float(np.sqrt(np.mean(np.square(rows, dtype=np.float64)))) if rows.size else 0.0
    low, high = FEATURE_RMS_RANGE
    if rms and not low <= rms <= high:
        warnings.warn(
            f"X's root-mean-square value is {rms:.2g}, far from the order 1 the heads' learning rates and weight "
            "decay are set for; put a StandardScaler in front (docs/sklearn.md)",
            FeatureScaleWarning,
            stacklevel=3,
        )


def _plain(label: Any) -> Any:
    """A label as Python writes it in a message: ``9``, not ``np.int64(9)``."""
    return label.item() if isinstance(label, np.generic) else label


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _weight_decay_ok(value: Any) -> bool:
    if _is_auto(value):
        return True
    if isinstance(value, np.ndarray) and value.ndim != 1:
        return False
    values = value if isinstance(value, PENALTY_LISTS) else [value]
    return len(values) > 0 and all(_is_number(v) and v >= 0 for v in values)


def _is_auto(value: Any) -> bool:
    """``value == "auto"``, also for an array of penalties (whose ``==`` is element-wise: no truth value)."""
    return isinstance(value, str) and value == "auto"


def _random_state_ok(value: Any) -> bool:
    """What :meth:`DecoupledClassifier._seed` takes: an int is longtail's seed itself (``[0, 2**63)``, as the
    config's ``seed``), anything else scikit-learn's ``check_random_state`` takes (None is nullable)."""
    if isinstance(value, Integral) and not isinstance(value, bool):
        return 0 <= value < 2**63
    return isinstance(value, np.random.RandomState) or value is np.random


def parameter_constraints() -> Parameters:
    """What each of :class:`DecoupledClassifier`'s parameters accepts, declared as config keys declare theirs
    (:mod:`longtail.config.options`); ``method`` reads the registry, so a plugin method is accepted."""
    count = Interval(1, integer=True)
    positive = Interval(0, closed="neither")
    return Parameters(
        {
            "method": OneOf((*method_names(), *JOINT_METHODS)),
            "solver": OneOf(SOLVERS),
            "train_heads": Satisfies(lambda v: isinstance(v, bool | np.bool_), "True or False"),
            "selection": OneOf(SELECTIONS),
            "cv": Interval(2, integer=True),
            "max_iter": count,
            "epochs": count,
            "batch_size": AutoOr(count),
            "many": Interval(0, integer=True),
            "few": Interval(0, "many", integer=True),
            "val_per_class": Interval(0, integer=True),
            "lr": positive,
            "weight_decay": Satisfies(_weight_decay_ok, "'auto', a number >= 0 or a list of them"),
            "tol": positive,
            "validation_fraction": Interval(0, 1, closed="left"),
            # Checked here, so that a negative int is named random_state rather than the config's seed.
            "random_state": Satisfies(_random_state_ok, "None, an integer in [0, 2**63) or a numpy RandomState"),
        },
        nullable=("cv", "val_per_class", "random_state"),
    )
