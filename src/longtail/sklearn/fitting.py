"""The recipe behind :class:`~longtail.sklearn.DecoupledClassifier`, on tensors: no scikit-learn here.

1. where choices are made: stratified k-fold (:func:`~longtail.sklearn.selection.stratified_folds`)
   or a class-balanced validation split held out of the training matrix
   (:func:`validation_split`, the rule of :mod:`longtail.data.holdout`);
2. per training split, the joint linear classifier and every candidate
   classifier (:func:`~longtail.sklearn.candidates.fit_pass`: the stage-2
   methods through the method protocol, on in-memory features);
3. the choice among the candidates on held-out scores, then the refit
   (:func:`choose`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import random
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from threadpoolctl import ThreadpoolController

from ..config import Config, load_config
from ..data.holdout import holdout_validation
from ..engine.device import one_thread
from ..engine.head_training import Features
from ..methods import method_names, selection, spec_of
from ..models.heads import LinearHead
from .candidates import JOINT_METHODS, Candidate, Pass, Solver, fit_pass, held_out_scores, split_sweeps
from .selection import REFERENCE, best, clearly_better, score_candidates

# Points of the estimator's τ grids (0 to 2): every point is a candidate scored on every fold, and the choice
# (held-out log-loss, smooth in τ, against the reference τ = 1) needs no finer steps than 0.5.
TAU_STEPS = 5
SMALL_FIT = 2**22  # feature values (N x d) below which a fit runs torch on one thread (small_fit_threads)
# decouple.* keys that need images through a backbone: a feature matrix has none.
IMAGE_ONLY_KEYS = ("decouple.features", "decouple.trainable", "decouple.bn", "decouple.views")


def override_strings(config: Mapping[str, Any] | Sequence[str] | None) -> list[str]:
    """``{"decouple.crt.epochs": 10}`` (or ``["decouple.crt.epochs=10"]``) as ``key=value`` overrides.

    Only ``decouple.*`` keys: the joint probe and the shot groups have their own
    estimator parameters. Values are written as JSON, which the config reads as
    YAML (``null``, ``true``, lists); strings go as they are.

    Raises:
        ValueError: a key outside ``decouple.*``, or one that needs images.
    """
    if config is None:
        return []
    if isinstance(config, Mapping):
        items = [f"{key}={value if isinstance(value, str) else json.dumps(value)}" for key, value in config.items()]
    elif isinstance(config, Sequence) and not isinstance(config, str):
        items = [str(item) for item in config]
    else:
        raise ValueError(f"config={config!r}: expected a dict of decouple.* keys, e.g. {{'decouple.crt.epochs': 10}}")
    for item in items:
        key = item.partition("=")[0].strip()
        if not key.startswith("decouple."):
            raise ValueError(f"config key {key!r}: only decouple.* keys; the joint probe has estimator parameters")
        if key.startswith(IMAGE_ONLY_KEYS):
            raise ValueError(f"config key {key!r}: needs images through a backbone; this estimator has features only")
    return items


def auto_batch_size(num_samples: int) -> int:
    """``batch_size="auto"``: 32 steps per epoch (``num_samples // 32``), kept within 32 and the official 512.

    The official stage-2 recipe (batch 512) assumes ImageNet-scale data; on a
    few hundred samples it would take one SGD step per epoch, ten for all of cRT.
    """
    return min(512, max(32, num_samples // 32))


def head_batch_overrides(batch_size: int, overrides: list[str]) -> list[str]:
    """``decouple.<m>.batch_size=batch_size`` for every trained head's section the overrides leave unset."""
    given = {item.partition("=")[0].strip() for item in overrides}
    sections = _default_config(tuple(method_names())).decouple.sections
    keys = [f"decouple.{name}.batch_size" for name, section in sections.items() if hasattr(section, "batch_size")]
    return [f"{key}={batch_size}" for key in keys if key not in given]


def tau_grid_overrides(overrides: list[str]) -> list[str]:
    """``decouple.<m>.steps=TAU_STEPS`` for every τ grid (a section with ``values()`` and ``steps``) the overrides
    leave unset: the estimator's grids are 0, 0.5, ..., 2 where the CLI's have 21 points (see TAU_STEPS)."""
    given = {item.partition("=")[0].strip() for item in overrides}
    sections = _default_config(tuple(method_names())).decouple.sections
    keys = [
        f"decouple.{name}.steps"
        for name, section in sections.items()
        if hasattr(section, "steps") and callable(getattr(section, "values", None))
    ]
    return [f"{key}={TAU_STEPS}" for key in keys if key not in given]


def probe_config(
    *,
    seed: int,
    epochs: int,
    lr: float,
    batch_size: int,
    weight_decay: float,
    many: int,
    few: int,
    overrides: list[str],
) -> Config:
    """The longtail config of one fit: ``train.*`` is the joint probe (instance-balanced), ``decouple.*`` as given,
    the trained heads at ``batch_size`` and the τ grids at ``TAU_STEPS`` points unless the overrides set theirs."""
    keys = [
        "train.sampler=instance",
        f"train.epochs={epochs}",
        f"train.lr={lr!r}",
        f"train.batch_size={batch_size}",
        f"train.weight_decay={weight_decay!r}",
        f"eval.many={many}",
        f"eval.few={few}",
    ]
    keys += [*head_batch_overrides(batch_size, overrides), *tau_grid_overrides(overrides), *overrides]
    # Parsing overrides costs milliseconds, as much as a small fit: parsed once per set of keys (and of
    # registered methods), then only the seed changes. Nothing mutates a config (methods copy their sections).
    if not 0 <= seed < 2**63:  # out of the config's range: load_config says so, in its words
        return load_config(None, [f"seed={seed}", *keys])
    return dataclasses.replace(_parsed_config(tuple(keys), tuple(method_names())), seed=seed)


@functools.lru_cache(maxsize=4)
def _default_config(methods: tuple[str, ...]) -> Config:
    """longtail's default config while ``methods`` are registered (they bring their sections)."""
    return load_config(None)


@functools.lru_cache(maxsize=32)
def _parsed_config(keys: tuple[str, ...], methods: tuple[str, ...]) -> Config:
    """``load_config(None, keys)`` while ``methods`` are registered."""
    return load_config(None, list(keys))


def chooses_on_validation(method: str) -> bool:
    """Whether ``method`` chooses anything on validation: a swept τ, WB's grid, or ``auto``'s choice."""
    return method not in JOINT_METHODS and selection.chooses_on_validation(spec_of(method))


def chooses_inside_only(method: str) -> bool:
    """Whether ``method``'s only choice on validation is made inside its own fit (WB's grid: one candidate, no
    τ grid to split into candidates, not ``auto``), so that it needs a held-out split rather than folds."""
    if method in JOINT_METHODS:
        return False
    spec = spec_of(method)
    return spec.selects and not spec.chooses_among_others and spec.sweep is None


def check_selection(method: str, train: Features, where: dict[str, Any], num_classes: int, config: Config) -> None:
    """Refuse, before anything trains, ``decouple.select`` over a shot group that is empty in ``train`` or has
    no sample to choose on (``where``: the given or held-out ``val`` split, or ``folds``, where every training
    sample is scored once), for a method that chooses on validation (the choice would be arbitrary)."""
    if not chooses_on_validation(method) or not where:
        return
    counts = torch.bincount(train.y, minlength=num_classes).tolist()
    scored = where["val"].y if "val" in where else train.y[torch.from_numpy(where["folds"] >= 0)]
    many, few = config.eval.many, config.eval.few
    names = ("decouple.select", "many", "few")
    selection.check_select_group(config.decouple.select, counts, scored, many=many, few=few, names=names)


def validation_split(
    codes: np.ndarray, num_classes: int, *, val_per_class: int | None, validation_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, val)`` of a class-balanced validation split held out of ``codes`` (N,) class indices.

    ``val_per_class`` samples of each class, or, when None, ``validation_fraction``
    of the samples spread evenly over the classes; no class gives more than a
    fifth of its samples nor its last one (:func:`~longtail.data.holdout.holdout_validation`),
    so a class of fewer than five samples gives none and ``val`` may be empty.
    """
    per_class = val_per_class
    if per_class is None:
        per_class = max(1, round(validation_fraction * len(codes) / num_classes)) if validation_fraction > 0 else 0
    if per_class == 0:
        return np.arange(len(codes)), np.zeros(0, dtype=np.int64)
    holdout = holdout_validation(codes, None, per_class, num_classes, seed)
    return holdout.train, holdout.val


def as_features(x: np.ndarray, codes: np.ndarray) -> Features:
    """(N, d) array and (N,) class indices as float32 / int64 tensors (copies: the input may be read-only)."""
    return Features(torch.tensor(x, dtype=torch.float32), torch.tensor(codes, dtype=torch.int64))


@dataclass
class Choice:
    """The classifier a fit ends with, the pass it comes from, and how it was chosen.

    Attributes:
        winner: the chosen candidate (the only one when nothing is chosen).
        joint: the joint probe of the pass the winner belongs to.
        records: every candidate with its held-out scores (``method``, its params, ``label``, ``val``
            accuracies, and ``log_loss`` / ``temperature`` when chosen by log-loss); None: nothing was chosen.
        skipped: methods that are no candidate, and why (``auto`` under ``lbfgs``: heads only SGD trains).
    """

    winner: Candidate
    joint: LinearHead
    records: list[dict[str, Any]] | None
    skipped: dict[str, str]


def choose(
    method: str,
    train: Features,
    num_classes: int,
    config: Config,
    device: torch.device,
    solver: Solver,
    *,
    val: Features | None = None,
    folds: np.ndarray | None = None,
    selection: str = "log_loss",
) -> Choice:
    """Fit ``method``'s candidates and choose one.

    - ``folds`` (N,) (``-1``: never held out): k-fold selection, then the refit: one pass on all of
      ``train`` and one per fold; each candidate's held-out scores of all folds are pooled and scored;
      the winner is the chosen candidate of the pass on all the data.
    - else ``val``: one pass on ``train``, candidates scored on ``val`` (held out, given, or ``train``
      itself when nothing could be held out).
    - neither, or a single candidate (a one-point τ grid, a fixed penalty): one pass on ``train``, its one
      candidate is the answer (``records`` None).
    """
    config, sweeps = split_sweeps(method, config)
    whole = fit_pass(
        method, train, val if val is not None else train, num_classes, config, device, solver, sweeps=sweeps
    )
    if (folds is None and val is None) or len(whole.candidates) == 1:  # nothing to choose: no folds to fit
        winner = whole.candidates[0]
        return Choice(winner, winner.joint, None, whole.skipped)
    if folds is None:
        held_out = held_out_scores(whole.candidates, val.x)
        truth = val.y
    else:
        held_out, truth = _pooled_fold_scores(method, train, folds, num_classes, config, device, solver, whole, sweeps)
    counts = torch.bincount(train.y, minlength=num_classes).tolist()
    candidates = _distinct([c for c in whole.candidates if c.key in held_out], held_out)
    scored = score_candidates(
        [held_out[c.key] for c in candidates],
        truth,
        counts,
        selection=selection,
        select=config.decouple.select,
        many=config.eval.many,
        few=config.eval.few,
    )
    chosen = best(scored)
    reference = _reference(candidates) if selection == "log_loss" else None
    if reference is not None and reference != chosen:
        pair = [held_out[candidates[i].key].numpy() for i in (chosen, reference)]
        betas = (scored[chosen]["beta"], scored[reference]["beta"])
        chosen = chosen if clearly_better(*pair, truth.numpy(), betas=betas) else reference
    records = [{"method": c.method, **c.params, "label": c.label, **s} for c, s in zip(candidates, scored, strict=True)]
    for record in records:
        record.pop("score")
        record.pop("beta", None)
    winner = candidates[chosen]
    return Choice(winner, winner.joint, records, whole.skipped)


def _reference(candidates: list[Candidate]) -> int | None:
    """Position of the reference candidate (:data:`~longtail.sklearn.selection.REFERENCE` on the first probe of
    the grid, the configured fit), or None when it is not among them."""
    method, tau = REFERENCE
    for index, candidate in enumerate(candidates):
        if (candidate.method, candidate.tau, candidate.probe, candidate.variant) == (method, tau, 0, 0):
            return index
    return None


def _distinct(candidates: list[Candidate], held_out: dict[tuple, torch.Tensor]) -> list[Candidate]:
    """``candidates`` less those whose held-out scores repeat an earlier one's exactly (a method that does not
    use the joint classifier, such as cRT, gives the same classifier on every probe of the grid)."""
    kept: list[Candidate] = []
    for candidate in candidates:
        scores = held_out[candidate.key]
        if not any(c.method == candidate.method and torch.equal(held_out[c.key], scores) for c in kept):
            kept.append(candidate)
    return kept


def _pooled_fold_scores(
    method: str,
    train: Features,
    folds: np.ndarray,
    num_classes: int,
    config: Config,
    device: torch.device,
    solver: Solver,
    whole: Pass,
    sweeps: dict[str, list[float]],
) -> tuple[dict[tuple, torch.Tensor], torch.Tensor]:
    """Each candidate key -> its (M, C) scores on every held-out sample (fold by fold), and their (M,) classes."""
    parts: dict[tuple, list[torch.Tensor]] = {c.key: [] for c in whole.candidates}
    truth = []
    for fold in range(int(folds.max()) + 1):
        held = torch.as_tensor(np.flatnonzero(folds == fold))
        if len(held) == 0:
            continue
        kept = torch.as_tensor(np.flatnonzero(folds != fold))
        fold_train = Features(train.x[kept], train.y[kept])
        fold_val = Features(train.x[held], train.y[held])
        fitted = fit_pass(method, fold_train, fold_val, num_classes, config, device, solver, sweeps=sweeps, warm=whole)
        for key, scores in held_out_scores([c for c in fitted.candidates if c.key in parts], fold_val.x).items():
            parts[key].append(scores)
        truth.append(fold_val.y)
    complete = {key: torch.cat(chunks) for key, chunks in parts.items() if len(chunks) == len(truth)}
    return complete, torch.cat(truth)


def for_inference(head: torch.nn.Module) -> torch.nn.Module:
    """``head`` on the CPU in float64, eval mode, no gradients: predictions that do not depend on batch size."""
    return head.cpu().double().eval().requires_grad_(False)


@contextmanager
def small_fit_threads(num_values: int) -> Iterator[None]:
    """Torch on one thread while fitting on fewer than ``SMALL_FIT`` feature values (N x d), else as set.

    Every operation of such a fit is tiny; the threads of a pool then wait on each other at each one, and on
    a busy machine that dominates (``auto`` on 405 x 64 digits, 2 shared cores: 3 s on one thread, 43 s on two).
    """
    if num_values >= SMALL_FIT:
        yield
        return
    # Torch's threads, and NumPy's BLAS (the exact solver's products run in NumPy on the CPU).
    with one_thread(), _blas_threads().limit(limits=1):
        yield


@functools.lru_cache(maxsize=1)
def _blas_threads() -> ThreadpoolController:
    """The thread pools of the libraries loaded (BLAS, OpenMP): finding them reads the process's memory map,
    milliseconds, so once; NumPy's BLAS is loaded by then."""
    return ThreadpoolController()


@contextmanager
def preserved_rng(device: torch.device) -> Iterator[None]:
    """Leave the caller's Python, NumPy and torch random streams as they were: fitting seeds them."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    devices = [device.index or 0] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
