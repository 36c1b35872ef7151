"""``longtail decouple`` and ``longtail eval``: stage-2 classifiers on a run's frozen backbone, and their scores.

``decouple`` is: load the run, make a :class:`~longtail.methods.FitContext`
over its features, call each requested method's ``fit``, save each classifier,
score every classifier of the run. What the methods are is
:mod:`longtail.methods`; where features come from is here: the run's feature
cache (:mod:`longtail.engine.feature_cache`), or with
``decouple.features=online`` / ``decouple.trainable`` the backbone in the loop
(:mod:`longtail.engine.stage2_online`), which :class:`RunTrainer` hides from
the methods.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import Config, config_to_dict
from ..config.build import as_names
from ..data.transforms import train_transform
from ..engine.feature_cache import cached_features
from ..engine.head_training import Features, extract_views, train_head
from ..engine.partial import PartialTraining
from ..engine.stage2_online import retrain_on_images
from ..engine.tensorboard import ScalarLog, log_scores
from ..errors import ConfigError
from ..methods import FitContext, Fitted, HeadTraining, expand_methods, iter_specs, spec_of
from ..methods.base import with_sampler
from ..methods.selection import check_select_group, chooses_on_validation
from ..runs import CLASSIFIER_DIR, require_run_dir, run_lock
from .classifiers import load_fitted, reusable, save_classifier
from .representation import is_identity
from .run_state import SPLITS, LoadedRun, load_run, results_header, split_features
from .scores import refresh_scores, sweep_keys
from .shift_scores import check_shift_size

log = logging.getLogger(__name__)


def run_features(run: LoadedRun, split: str) -> Features:
    """Test-time features of ``split`` by the run's frozen backbone: from the run's feature cache
    (``decouple.features=cached``) or computed afresh (``online``). The identity backbone's features are the
    dataset's own tensors: nothing to compute or cache."""
    if run.config.decouple.features == "online" or is_identity(run.model.backbone):
        return split_features(run.model.backbone, run.splits, split, config=run.config, device=run.device)

    def compute() -> tuple[torch.Tensor, torch.Tensor]:
        features = split_features(run.model.backbone, run.splits, split, config=run.config, device=run.device)
        return features.x, features.y

    key = {"checkpoint_sha256": run.checkpoint_sha256, "split": split, "view": "test-time"}
    dtype = cache_dtype(run.config)
    x, y, hit = cached_features(run.run_dir, split, key, run.splits.split(split).labels, compute, dtype)
    run.cache_hits[split] = hit
    return Features(x, y)


def cache_dtype(config: Config) -> torch.dtype:
    """The dtype of the run's cached features: ``decouple.cache_dtype``."""
    return torch.float16 if config.decouple.cache_dtype == "float16" else torch.float32


class RunFeatures:
    """Split -> features of a run, each computed (or read from the cache) once, on first use; times itself."""

    def __init__(self, run: LoadedRun) -> None:
        self.run = run
        self.seconds = 0.0
        self._features: dict[str, Features] = {}

    def __call__(self, split: str) -> Features:
        if split not in self._features:
            start = time.perf_counter()
            self._features[split] = run_features(self.run, split)
            self.seconds += time.perf_counter() - start
            count = len(self._features[split].y)
            if is_identity(self.run.model.backbone):  # data.name=features: the file's vectors, nothing extracted
                log.info("features of %s: %d vectors of the features file", split, count)
            else:
                source = "read from the cache" if self.run.cache_hits.get(split) else "extracted"
                log.info("features of %s %s (%d images)", split, source, count)
        return self._features[split]

    def train_views(self) -> torch.Tensor:
        """(K, N, d) features of ``decouple.views`` augmented passes over the training images, cached."""
        run, views = self.run, self.run.config.decouple.views
        key = {"checkpoint_sha256": run.checkpoint_sha256, "split": "train", "view": "augmented", "views": views}
        key["seed"] = run.config.seed

        def compute() -> tuple[torch.Tensor, torch.Tensor]:
            augment = train_transform(run.splits, run.config.data, seed=run.config.seed).to(run.device)
            x = extract_views(
                run.model.backbone,
                run.splits.train,
                views,
                augment=augment,
                seed=run.config.seed,
                device=run.device,
                batch_size=run.config.eval.batch_size,
            )
            return x, run.splits.train.labels

        name, labels = f"train_views{views}", run.splits.train.labels
        x, _, hit = cached_features(run.run_dir, name, key, labels, compute, cache_dtype(run.config))
        run.cache_hits[f"train_views{views}"] = hit
        return x


class RunTrainer:
    """The :class:`~longtail.methods.base.HeadTrainer` of a run directory.

    Heads train on cached features (and ``decouple.views`` augmented views), or on
    images through the backbone when ``decouple.features=online`` or the method
    re-trains part of the backbone (``trainable``). Either way each training logs
    its epochs to TensorBoard as ``decouple/<method>[_lr_x<factor>]/*`` and keeps a
    resumable state in ``classifiers/<tag>.partial``: a killed run of the very
    same training (checkpoint, settings, lr, seed) continues where it stopped.
    """

    def __init__(self, run: LoadedRun, features: RunFeatures, tensorboard: ScalarLog) -> None:
        self.run = run
        self.features = features
        self.tensorboard = tensorboard

    def __call__(self, head: nn.Module, section: Any, how: HeadTraining) -> Fitted:
        run = self.run
        # This training's decouple settings: the run's, with the method's sampler / BatchNorm mode if it asks.
        cfg = with_sampler(run.config.decouple, how.sampler)
        cfg = cfg if how.bn is None else dataclasses.replace(cfg, bn=how.bn)
        config = dataclasses.replace(run.config, decouple=cfg)
        tag = how.tag
        on_epoch = functools.partial(self._log_epoch, f"decouple/{tag}/")
        settings = config_to_dict(config)["decouple"]
        key = {"checkpoint": run.checkpoint_sha256, "decouple": settings, "lr": section.lr, "seed": run.config.seed}
        resumable = PartialTraining(run.run_dir / CLASSIFIER_DIR / f"{tag}.partial", key)
        loss = {"criterion": how.criterion, "after_step": how.after_step}
        if cfg.features == "online" or how.needs_images():
            return self._on_images(head, section, config, how.trainable, on_epoch, resumable, loss)
        train = self.features("train")
        views = self.features.train_views() if cfg.views > 0 else None
        head = train_head(
            head,
            Features(train.x, train.y, views),
            section,
            sampling=cfg,
            seed=run.config.seed,
            device=run.device,
            on_epoch=on_epoch,
            partial=resumable,
            **loss,
        )
        return Fitted(head, settings={"features": "cached", "views": cfg.views})

    def _on_images(
        self,
        head: nn.Module,
        section: Any,
        config: Config,
        trainable: str,
        on_epoch: Any,
        resumable: PartialTraining,
        loss: dict[str, Any],
    ) -> Fitted:
        """The head trained with the backbone in the loop (``config``: the run's, with this training's
        decouple settings); the backbone is kept when training changed it."""
        run = self.run
        tuned = retrain_on_images(
            run.model,
            head,
            run.splits,
            config,
            section,
            trainable=trainable,
            device=run.device,
            on_epoch=on_epoch,
            partial=resumable,
            **loss,
        )
        if trainable != "classifier":
            return Fitted(tuned.head, tuned.backbone, settings={"features": "online", "trainable": trainable})
        drifted = config.decouple.bn == "train"  # BatchNorm statistics moved: the head needs that backbone
        settings = {"features": "online", "bn": config.decouple.bn}
        return Fitted(tuned.head, tuned.backbone if drifted else None, settings=settings)

    def _log_epoch(self, prefix: str, epoch: int, stats: dict[str, float]) -> None:
        self.tensorboard.scalars(stats, epoch, prefix=prefix)


def _applicable(run: LoadedRun, names: list[str], asked_all: bool) -> list[str]:
    """``names`` less the methods that transform the joint classifier when it is cosine (LDAM) and ``all`` was
    asked for; asked for by name, such a method is an error."""
    if run.model.head.kind == "linear":
        return names
    needs_linear = [n for n in names if spec_of(n).needs_linear_joint]
    if needs_linear and not asked_all:
        raise ConfigError(
            f"--method {needs_linear[0]}: needs a linear joint classifier; this run trained a cosine one "
            f"(train.loss={run.config.train.loss}); use crt or ncm"
        )
    if needs_linear:  # `all` is every method that applies: a cosine classifier has no norms or bias to adjust
        log.info(
            "joint classifier is cosine (train.loss=%s): skipping %s", run.config.train.loss, ", ".join(needs_linear)
        )
    return [n for n in names if n not in needs_linear]


def decouple(
    run_dir: str | Path,
    methods: str | Sequence[str] = ("all",),
    overrides: str | Sequence[str] = (),
    *,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Stage 2: fit ``methods`` on the frozen backbone of a stage-1 run.

    ``all`` is every stage-2 method; ``auto`` is every method and its
    hyper-parameters, the best on validation saved as ``auto`` (see
    :mod:`longtail.methods.auto`). Each classifier is saved as
    ``classifiers/<method>.pt``. A method already saved with the same fit
    settings on the same data is reused as it is; one saved with other
    settings is refused by name unless ``overwrite`` (then it is fit again)
    (:mod:`longtail.pipeline.classifiers`). Every classifier of the run is then
    scored on val and test (scores that still hold are kept:
    :mod:`longtail.pipeline.scores`) and ``results.json`` updated. Head training
    and the scores also go to TensorBoard (:mod:`longtail.engine.tensorboard`).

    Returns:
        The updated results dict.
    """
    methods, overrides = as_names(methods), as_names(overrides)  # "crt" is one method, not c, r, t
    names = expand_methods(methods)
    with run_lock(require_run_dir(run_dir), "longtail decouple"):
        return _decouple(load_run(run_dir, overrides), names, methods, overwrite)


def _decouple(run: LoadedRun, names: list[str], methods: Sequence[str], overwrite: bool) -> dict[str, Any]:
    """:func:`decouple` on a loaded run, under its lock."""
    names = _applicable(run, names, asked_all=any(m == "all" or spec_of(m).chooses_among_others for m in methods))
    for spec in iter_specs(names):  # refuse a config a method cannot work with before fitting any
        if spec.check is not None:
            spec.check(run.config)
    if any(chooses_on_validation(spec) for spec in iter_specs(names)):  # a choice over an empty group: refused
        cfg = run.config
        check_select_group(
            cfg.decouple.select, run.splits.train_counts, run.splits.val.labels, many=cfg.eval.many, few=cfg.eval.few
        )
    check_shift_size(run)  # eval.shift on data too large for it: refused before any classifier is fit
    kept = reusable(run, names, overwrite=overwrite)  # refuses a finished classifier of other settings, up front
    features = RunFeatures(run)
    seconds: dict[str, float] = {}
    extras: dict[str, Any] = {"stage2": {}}
    with ScalarLog(run.run_dir) as tensorboard:
        trainer = RunTrainer(run, features, tensorboard)
        context = FitContext(features, run.model.head, run.splits.train_counts, run.config, run.device, trainer)
        for spec in iter_specs(names):
            if spec.name in kept:
                # Its τ sweep and how it was fit come from its file too: results.json lacks them when the decouple
                # that saved it stopped before writing it (a file older than that record brings nothing).
                context.fitted[spec.name] = reused = kept[spec.name]
                extras.update(reused.record)
                if reused.settings:
                    extras["stage2"][spec.name] = reused.settings
                continue
            begin, features_before = time.perf_counter(), features.seconds
            fitted = spec.fit(context)
            # The method's own time: features it was first to ask for are counted in features_seconds.
            seconds[spec.name] = round(time.perf_counter() - begin - (features.seconds - features_before), 3)
            log.info("%s fitted in %.2fs", spec.name, seconds[spec.name])
            fitted.settings = fitted.settings or {"features": "test-time, " + run.config.decouple.features}
            context.fitted[spec.name] = fitted
            extras.update(fitted.record)
            extras["stage2"][spec.name] = fitted.settings
            save_classifier(run, spec.name, fitted)
        timing = {
            "decouple_seconds": seconds,
            "features_seconds": round(features.seconds, 2),
            "feature_cache_hits": run.cache_hits,
        }
        fresh = [name for name in names if name not in kept]
        results = refresh_scores(
            run,
            features,
            load_fitted(run, context.fitted),
            extras={**extras, "timing": timing},
            fresh=fresh,
            header=results_header(run.config, run.splits, run.provenance),
        )
        log_scores(tensorboard, results, run.config.train.epochs, sweep_keys())
    return results


def evaluate(run_dir: str | Path, split: str = "test", overrides: str | Sequence[str] = ()) -> dict[str, Any]:
    """Re-score the joint classifier and every saved stage-2 classifier on ``split``; refresh results.json."""
    if split not in SPLITS:
        raise ConfigError(f"--split {split!r}: expected val or test")
    with run_lock(require_run_dir(run_dir), "longtail eval"):
        run = load_run(run_dir, overrides)
        header = results_header(run.config, run.splits, run.provenance)
        return refresh_scores(run, RunFeatures(run), load_fitted(run), splits=(split,), header=header)
