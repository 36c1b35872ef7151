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

from ..engine.device import resolve_device
from ..evaluation.metrics import accuracy_summary, shot_groups
from ..methods import method_names
from . import fitting

FLOATS = [np.float32, np.float64]  # accepted as they are; anything else numeric is cast to float32


class HoldoutWarning(UserWarning):
    """No validation sample could be held out: hyper-parameters were chosen on the training data."""


class DecoupledClassifier(ClassifierMixin, BaseEstimator):
    """A joint linear classifier on features, then a re-balancing method (Kang et al., ICLR 2020).

    ``fit(X, y)`` trains the joint linear classifier on ``X`` (a linear probe:
    instance-balanced SGD, cross-entropy, cosine learning rate), then re-balances
    it with ``method`` through longtail's method protocol. Hyper-parameters (τ of
    τ-normalisation and logit adjustment, ``auto``'s choice of method and
    learning rate) are chosen on a class-balanced validation split held out of
    ``X``, or on ``X_val, y_val`` passed to ``fit``; never on anything else.

    Parameters
    ----------
    method : str, default="auto"
        ``ncm``, ``crt``, ``tau_norm``, ``lws``, ``logit_adjust``, any other
        registered method, ``auto`` (every method of ``all`` and their
        variants, the best on validation) or ``joint`` (the linear probe alone).
    epochs, lr, weight_decay : the joint probe's training (``train.*``):
        epochs of ``len(X)`` draws, peak SGD learning rate (momentum 0.9,
        cosine to 0 per step), weight decay.
    batch_size : int or "auto", default="auto"
        Samples per SGD step of the probe and of every trained head (cRT, LWS, ...;
        ``config`` may set ``decouple.<method>.batch_size``). ``"auto"``:
        ``min(512, max(32, n_samples // 32))``: 32 steps per epoch, kept
        within 32 and the official 512 (which assumes ImageNet-scale data: on a
        few hundred samples it would make one step per epoch).
    val_per_class : int or None, default=None
        Validation samples held out of each class; None: ``validation_fraction``.
    validation_fraction : float, default=0.2
        Share of ``X`` held out for validation, spread evenly over the classes.
        Either way no class gives more than a fifth of its samples nor its last
        one, so classes of fewer than five samples give none. Only methods that
        choose on validation hold anything out (``ncm``, ``crt``, ``lws``,
        ``joint`` train on all of ``X``).
    many, few : int, default=100, 20
        Shot groups by training samples per class: many ``n > many``, medium
        ``few <= n <= many``, few ``n < few``.
    random_state : int, RandomState or None, default=None
        Seed of the split, initialisation and sampling (an int is longtail's ``seed``).
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
        Its hyper-parameters, e.g. ``{"tau": 0.8}`` or ``{"lr": 0.05}``.
    tau_ : float or None
        The chosen τ (``tau_norm``, ``logit_adjust``); None where no τ applies.
    head_ : torch.nn.Module
        (N, d) float64 features -> (N, C) scores, on the CPU.
    joint_ : torch.nn.Module
        The joint linear classifier (the probe), likewise.
    candidates_ : list of dict or None
        ``auto``: every candidate with its validation scores (%); None otherwise.
    validation_ : str
        Where choices were made: ``"held out"``, ``"given"`` (``X_val``), ``"training data"``
        (nothing could be held out; a :class:`HoldoutWarning` says so) or ``"none"`` (nothing to choose).
    class_counts_ : ndarray of shape (n_classes,)
        Samples per class in ``y``.
    shot_groups_ : dict
        ``{"many", "medium", "few"}`` -> the ``classes_`` labels of each group, from ``class_counts_``.
    """

    def __init__(
        self,
        method: str = "auto",
        *,
        epochs: int = 30,
        lr: float = 0.1,
        batch_size: int | str = "auto",
        weight_decay: float = 5e-4,
        val_per_class: int | None = None,
        validation_fraction: float = 0.2,
        many: int = 100,
        few: int = 20,
        random_state: Any = None,
        device: str = "cpu",
        config: dict[str, Any] | None = None,
    ) -> None:
        self.method = method
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.weight_decay = weight_decay
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
        config = fitting.probe_config(
            seed=seed,
            epochs=self.epochs,
            lr=float(self.lr),
            batch_size=self._batch_size(len(codes)),
            weight_decay=float(self.weight_decay),
            many=self.many,
            few=self.few,
            overrides=fitting.override_strings(self.config),
        )
        splits = self._splits(X, codes, X_val, y_val, encoder, seed)
        fitting.check_selection(self.method, splits, len(self.classes_), config)  # before anything trains
        with fitting.preserved_rng(device):
            self._fit_features(splits, config, device)
        self.class_counts_ = np.bincount(codes, minlength=len(self.classes_))
        groups = shot_groups(self.class_counts_, many=self.many, few=self.few)
        self.shot_groups_ = {name: self.classes_[members] for name, members in groups.items()}
        return self

    def _check_params(self) -> None:
        """One-line errors for impossible parameters (scikit-learn checks them in ``fit``, not ``__init__``)."""
        known = [*method_names(), "joint"]
        if self.method not in known:
            raise ValueError(f"method={self.method!r}: expected one of {', '.join(known)}")
        _require_int(self.epochs, "epochs", 1)
        if self.batch_size != "auto":
            _require_int(self.batch_size, "batch_size", 1)
        _require_int(self.many, "many", 0)
        _require_int(self.few, "few", 0)
        if self.few > self.many:
            raise ValueError(f"few={self.few!r}: expected at most many={self.many!r}")
        if self.val_per_class is not None:
            _require_int(self.val_per_class, "val_per_class", 0)
        if not isinstance(self.lr, Real) or not self.lr > 0:
            raise ValueError(f"lr={self.lr!r}: expected a number > 0")
        if not isinstance(self.weight_decay, Real) or not self.weight_decay >= 0:
            raise ValueError(f"weight_decay={self.weight_decay!r}: expected a number >= 0")
        if not isinstance(self.validation_fraction, Real) or not 0 <= self.validation_fraction < 1:
            raise ValueError(f"validation_fraction={self.validation_fraction!r}: expected a number in [0, 1)")

    def _batch_size(self, num_samples: int) -> int:
        """Samples per SGD step; ``"auto"``: see :func:`~longtail.sklearn.fitting.auto_batch_size`."""
        return fitting.auto_batch_size(num_samples) if self.batch_size == "auto" else int(self.batch_size)

    def _seed(self) -> int:
        """longtail's seed: ``random_state`` itself when an int, else drawn from it (None: the global stream)."""
        if isinstance(self.random_state, Integral):
            return int(self.random_state)
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    def _splits(
        self, X: np.ndarray, codes: np.ndarray, X_val: Any, y_val: Any, encoder: LabelEncoder, seed: int
    ) -> dict[str, Any]:
        """``train`` and ``val`` features, the validation split given, held out, or the training data again."""
        if (X_val is None) != (y_val is None):
            raise ValueError("X_val and y_val: give both or neither")
        if X_val is not None:
            self.validation_ = "given"
            return {"train": fitting.as_features(X, codes), "val": self._given_validation(X_val, y_val, encoder)}
        if not fitting.chooses_on_validation(self.method):
            self.validation_ = "none"
            train = fitting.as_features(X, codes)
            return {"train": train, "val": train}  # nothing reads it: the method chooses nothing
        train_index, val_index = fitting.validation_split(
            codes,
            len(self.classes_),
            val_per_class=self.val_per_class,
            validation_fraction=self.validation_fraction,
            seed=seed,
        )
        if len(val_index) == 0:
            warnings.warn(
                f"{type(self).__name__}(method={self.method!r}): no validation sample could be held out "
                "(a class gives one only from 5 samples); choosing on the training data instead; pass X_val, y_val",
                HoldoutWarning,
                stacklevel=3,
            )
            self.validation_ = "training data"
            train = fitting.as_features(X, codes)
            return {"train": train, "val": train}
        self.validation_ = "held out"
        return {
            "train": fitting.as_features(X[train_index], codes[train_index]),
            "val": fitting.as_features(X[val_index], codes[val_index]),
        }

    def _given_validation(self, X_val: Any, y_val: Any, encoder: LabelEncoder) -> Any:
        """``X_val``, ``y_val`` checked like ``X`` (same features) and encoded with the training labels."""
        X_val = validate_data(self, X_val, reset=False, dtype=FLOATS)
        y_val = column_or_1d(y_val, warn=True)
        if len(y_val) != len(X_val):
            raise ValueError(f"y_val: {len(y_val)} labels for {len(X_val)} rows of X_val")
        unknown = np.setdiff1d(np.unique(y_val), self.classes_)
        if len(unknown):
            raise ValueError(f"y_val: label {_plain(unknown[0])!r} is not in y; expected labels among classes_")
        return fitting.as_features(X_val, encoder.transform(y_val))

    def _fit_features(self, splits: dict[str, Any], config: Any, device: torch.device) -> None:
        """Train the joint probe and the method on tensors; set the fitted attributes."""
        counts = torch.bincount(splits["train"].y, minlength=len(self.classes_)).tolist()
        joint = fitting.train_joint(splits["train"], len(self.classes_), config, device)
        fitted = fitting.fit_method(self.method, splits, joint, counts, config, device)
        self.head_ = fitting.for_inference(fitted.head)
        self.joint_ = fitting.for_inference(joint)
        self.params_ = dict(fitted.params)
        self.tau_ = fitted.params.get("tau")
        chosen = fitted.record.get("auto", {}).get("chosen")
        self.method_ = self.method if chosen is None else chosen["method"]
        self.candidates_ = None if chosen is None else _candidates(fitted.record["auto"])

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

    def predict_proba(self, X: Any) -> np.ndarray:
        """(N, C) softmax of the scores. For NCM a softmax of negative squared distances (temperature 1):
        it ranks like the distances but is not calibrated."""
        return softmax(self._scores(X), axis=1)

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """(N, C) log of :meth:`predict_proba`, computed stably."""
        scores = self._scores(X)
        return scores - np.logaddexp.reduce(scores, axis=1, keepdims=True)

    def predict(self, X: Any) -> np.ndarray:
        """(N,) labels of ``classes_`` with the highest score (ties: the first class)."""
        best = self._scores(X).argmax(axis=1)  # first: it checks that the estimator is fitted
        return self.classes_[best]

    def shot_scores(self, X: Any, y: Any) -> dict[str, float | None]:
        """Accuracy (%) on ``X``, ``y``: many / medium / few (this fit's shot groups), all (micro), macro."""
        check_is_fitted(self)
        return shot_accuracy(y, self.predict(X), self.classes_, self.class_counts_, many=self.many, few=self.few)

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
    encoder = LabelEncoder().fit(np.asarray(classes))
    truth = torch.as_tensor(encoder.transform(column_or_1d(y_true)))
    predicted = torch.as_tensor(encoder.transform(column_or_1d(y_pred)))
    summary = accuracy_summary(predicted, truth, list(train_counts), many=many, few=few)
    summary.pop("per_class")
    return summary


def _candidates(record: dict[str, Any]) -> list[dict[str, Any]]:
    """``auto``'s candidates with their validation scores (the record's display-only test scores are the
    validation split again here, so they are dropped)."""
    return [{key: value for key, value in c.items() if key != "test_display_only"} for c in record["candidates"]]


def _device(name: Any) -> torch.device:
    """``device`` as a torch device that exists on this machine (``auto``: CUDA when available)."""
    try:
        device = resolve_device(str(name))
    except RuntimeError:  # torch's own parse error: not a device name at all
        raise ValueError(f"device={name!r}: expected cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device={name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def _plain(label: Any) -> Any:
    """A label as Python writes it in a message: ``9``, not ``np.int64(9)``."""
    return label.item() if isinstance(label, np.generic) else label


def _require_int(value: Any, name: str, minimum: int) -> None:
    if not isinstance(value, Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name}={value!r}: expected an integer >= {minimum}")
