"""``longtail decouple`` and ``longtail eval``: stage-2 classifiers on a run's frozen backbone, and their scores.

Features come from the run's feature cache (:mod:`longtail.engine.feature_cache`)
or, with ``decouple.features=online``, from the backbone in the loop
(:mod:`longtail.stages.retrain`); every classifier of the run is re-scored on
val and test after each command."""

from __future__ import annotations

import copy
import functools
import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import CRTConfig, LWSConfig, config_to_dict
from ..engine.feature_cache import cached_features
from ..engine.loops import EpochStatsCallback
from ..engine.partial import PartialTraining
from ..engine.tensorboard import ScalarLog, log_scores
from ..errors import ConfigError, RunDirError
from ..io import save_torch_atomic
from ..models.classifier import Classifier
from ..models.heads import LWSHead
from ..models.serialize import head_from_dict, head_to_dict
from ..runs import CLASSIFIER_DIR, classifier_path, saved_methods, update_results
from ..stages.auto import Candidate, auto_record, lr_factors_in_order, pick_best
from ..stages.decouple import (
    Features,
    best_tau,
    choose_logit_adjustment,
    choose_tau,
    extract_views,
    fit_crt,
    fit_lws,
    fit_ncm,
    fresh_linear_head,
    logit_adjust_predictions,
    sweep_curve,
    tau_norm_predictions,
)
from ..stages.joint import train_transform
from ..stages.retrain import retrain_on_images
from .run_state import SPLITS, LoadedRun, load_run, results_header, score_heads, split_features

log = logging.getLogger(__name__)

STAGE2_METHODS = ("ncm", "crt", "tau_norm", "lws", "logit_adjust")
# Methods that transform the joint classifier and so need it to be linear (not LDAM's cosine one).
NEED_LINEAR_JOINT = ("tau_norm", "lws", "logit_adjust")


def run_features(run: LoadedRun, split: str) -> Features:
    """Test-time features of ``split`` by the run's frozen backbone: from the run's feature cache
    (``decouple.features=cached``) or computed afresh (``online``)."""
    if run.config.decouple.features == "online":
        return split_features(run.model.backbone, run.splits, split, config=run.config, device=run.device)

    def compute() -> tuple[torch.Tensor, torch.Tensor]:
        features = split_features(run.model.backbone, run.splits, split, config=run.config, device=run.device)
        return features.x, features.y

    key = {"checkpoint_sha256": run.checkpoint_sha256, "split": split, "view": "test-time"}
    x, y, hit = cached_features(run.run_dir, split, key, run.splits.split(split).labels, compute)
    run.cache_hits[split] = hit
    return Features(x, y)


def _train_views(run: LoadedRun) -> torch.Tensor:
    """(K, N, d) features of ``decouple.views`` augmented passes over the training images, cached."""
    views = run.config.decouple.views
    key = {
        "checkpoint_sha256": run.checkpoint_sha256,
        "split": "train",
        "view": "augmented",
        "views": views,
        "seed": run.config.seed,
    }

    def compute() -> tuple[torch.Tensor, torch.Tensor]:
        augment = train_transform(run.splits, run.config).to(run.device)
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

    x, _, hit = cached_features(run.run_dir, f"train_views{views}", key, run.splits.train.labels, compute)
    run.cache_hits[f"train_views{views}"] = hit
    return x


def load_heads(run: LoadedRun, fitted: dict[str, nn.Module] | None = None) -> dict[str, nn.Module]:
    """The joint head and every stage-2 classifier of the run; ``fitted`` ones are taken as given, not re-read.

    A classifier saved with its own backbone (cRT with ``decouple.trainable`` other
    than ``classifier``) comes back as a whole frozen :class:`Classifier`.
    """
    heads: dict[str, nn.Module] = {"joint": run.model.head, **(fitted or {})}
    for method in set(saved_methods(run.run_dir)) - set(heads):
        path = classifier_path(run.run_dir, method)
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise RunDirError(f"{path}: unreadable classifier ({error.__class__.__name__})") from None
        if saved.get("checkpoint_sha256") != run.checkpoint_sha256:
            raise RunDirError(
                f"{path}: fit on another checkpoint.pt; re-run `longtail decouple {run.run_dir} --method {method}`"
            )
        head = head_from_dict(saved["head"], run.model.num_features, run.splits.num_classes, str(path))
        if "backbone" in saved:
            model = copy.deepcopy(run.model)
            try:
                model.backbone.load_state_dict(saved["backbone"])
            except RuntimeError:
                raise RunDirError(f"{path}: its backbone does not match model.backbone") from None
            model.reset_classifier(head.to(run.device))
            model.fine_tuned = saved["decouple"]["trainable"]
            head = model.eval()
        heads[method] = head
    return heads


def _fit_on_images(
    method: str,
    run: LoadedRun,
    section: CRTConfig | LWSConfig,
    on_epoch: EpochStatsCallback | None = None,
    resumable: PartialTraining | None = None,
) -> nn.Module:
    """cRT or LWS trained with the backbone in the loop (``decouple.features=online`` or a fine-tuned cRT).

    Returns the head alone when the backbone came out unchanged (frozen, BatchNorm
    in eval mode), else the whole network, which then carries its own backbone.
    """
    cfg, seed = run.config.decouple, run.config.seed
    if method == "crt":
        head = fresh_linear_head(run.model.num_features, run.splits.num_classes, seed)
    else:
        head = LWSHead.from_linear(run.model.head)
    trainable = cfg.trainable if method == "crt" else "classifier"
    tuned = retrain_on_images(
        run.model,
        head,
        run.splits,
        run.config,
        section,
        trainable=trainable,
        device=run.device,
        on_epoch=on_epoch,
        partial=resumable,
    )
    backbone_changed = trainable != "classifier" or cfg.bn == "train"
    return tuned if backbone_changed else tuned.head


def _fit(
    method: str,
    run: LoadedRun,
    features: dict[str, Features],
    lr_factor: float = 1.0,
    tensorboard: ScalarLog | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Fit stage-2 ``method`` on the run's frozen features (or on images, see :func:`_fit_on_images`).

    ``lr_factor`` scales the learning rate of cRT and LWS (``--method auto`` tries several). cRT and
    LWS log their training epochs to ``tensorboard`` as ``decouple/<method>[_lr_x<factor>]/*``.

    Returns:
        The fitted head, and entries for results.json beside the scores (the τ curve).
    """
    cfg = run.config.decouple
    counts = run.splits.train_counts
    if method in NEED_LINEAR_JOINT and not isinstance(run.model.head, nn.Linear):
        raise ConfigError(
            f"--method {method}: needs a linear joint classifier; this run trained a cosine one "
            f"(train.loss={run.config.train.loss}); use crt or ncm"
        )
    if method in ("crt", "lws"):
        section = replace(cfg.crt if method == "crt" else cfg.lws)
        section.lr *= lr_factor
        tag = method if lr_factor == 1.0 else f"{method}_lr_x{lr_factor:g}"
        on_epoch = None if tensorboard is None else functools.partial(_log_epoch, tensorboard, f"decouple/{tag}/")
        # A killed run of this very training (same checkpoint, settings and lr) continues where it stopped.
        settings = config_to_dict(run.config)["decouple"]
        key = {"checkpoint": run.checkpoint_sha256, "decouple": settings, "lr": section.lr, "seed": run.config.seed}
        resumable = PartialTraining(run.run_dir / CLASSIFIER_DIR / f"{tag}.partial", key)
        if cfg.features == "online" or (method == "crt" and cfg.trainable != "classifier"):
            return _fit_on_images(method, run, section, on_epoch, resumable), {}
        train = features["train"]
        if cfg.views > 0:
            train = Features(train.x, train.y, _train_views(run))
        options = {
            "sampler": cfg.sampler,
            "sampler_q": cfg.sampler_q,
            "num_samples_cls": cfg.num_samples_cls,
            "seed": run.config.seed,
            "device": run.device,
            "on_epoch": on_epoch,
            "partial": resumable,
        }
        if method == "crt":
            return fit_crt(train, run.splits.num_classes, section, **options), {}
        return fit_lws(train, run.model.head, section, **options), {}
    if method == "ncm":
        return fit_ncm(features["train"], run.splits.num_classes, cfg.ncm_metric), {}
    if method in ("tau_norm", "logit_adjust"):
        grid = cfg.tau if method == "tau_norm" else cfg.logit_adjust
        taus = np.linspace(grid.min, grid.max, grid.steps).tolist()
        shots = {"train_counts": counts, "many": run.config.eval.many, "few": run.config.eval.few}
        if method == "tau_norm":
            head, val_curve = choose_tau(run.model.head, features["val"], taus, select=cfg.select, **shots)
            test_predictions = tau_norm_predictions(run.model.head, features["test"], taus)
        else:
            head, val_curve = choose_logit_adjustment(run.model.head, features["val"], taus, select=cfg.select, **shots)
            test_predictions = logit_adjust_predictions(run.model.head, features["test"], taus, counts)
        # The test curve is for display (the report's dashed line); τ was chosen on val above.
        test_curve = sweep_curve(test_predictions, features["test"].y, **shots)
        curve = {
            "select": f"val {cfg.select}",
            "chosen": best_tau(val_curve, cfg.select),
            "val": val_curve,
            "test": test_curve,
        }
        return head, {"tau_curve" if method == "tau_norm" else "logit_adjust_curve": curve}
    raise ConfigError(f"--method {method!r}: expected one of {', '.join(STAGE2_METHODS)}, all or auto")


def _log_epoch(tensorboard: ScalarLog, prefix: str, epoch: int, stats: dict[str, float]) -> None:
    tensorboard.scalars(stats, epoch, prefix=prefix)


def expand_methods(methods: Sequence[str]) -> list[str]:
    """``all`` and ``auto`` -> every stage-2 method; names are checked."""
    expanded: list[str] = []
    for method in methods:
        names = STAGE2_METHODS if method in ("all", "auto") else (method,)
        for name in names:
            if name not in STAGE2_METHODS:
                raise ConfigError(f"--method {name!r}: expected one of {', '.join(STAGE2_METHODS)}, all or auto")
            if name not in expanded:
                expanded.append(name)
    return expanded


def _merge(into: dict[str, Any], update: dict[str, Any]) -> None:
    """Recursive dict update: nested dicts are merged key by key, anything else replaced."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _refresh_scores(
    run: LoadedRun, features: dict[str, Features], heads: dict[str, nn.Module], extras: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Score ``heads`` on every split in ``features`` (val / test) and merge them, and ``extras``, into results.json.

    Heads share the frozen backbone's ``features``; a whole :class:`Classifier`
    (a fine-tuned cRT) is scored on features of its own backbone.
    """
    counts = run.splits.train_counts
    shared = {m: h for m, h in heads.items() if not isinstance(h, Classifier)}
    own = {m: h for m, h in heads.items() if isinstance(h, Classifier)}
    scores: dict[str, dict[str, Any]] = {}
    for split in SPLITS:
        if split in features:
            scores[split] = score_heads(shared, features[split], run.config, counts)
            for method, model in own.items():
                own_features = split_features(model.backbone, run.splits, split, config=run.config, device=run.device)
                scores[split].update(score_heads({method: model.head}, own_features, run.config, counts))

    def update(results: dict[str, Any]) -> None:
        results.update(results_header(run.config, run.splits))
        for split, by_method in scores.items():
            if "crt" in by_method:  # what cRT re-trained: the paper's cRT is the classifier alone
                by_method["crt"]["trainable"] = getattr(heads["crt"], "fine_tuned", None) or "classifier"
            results["methods" if split == "test" else "val_methods"] = by_method
        results["split"] = "test"
        for method in (extras or {}).get("stage2", {}):  # how a method was fit is replaced, not merged
            results.get("stage2", {}).pop(method, None)
        _merge(results, extras or {})
        if "auto" in results.get("methods", {}) and "auto" in results:
            results["methods"]["auto"]["chosen"] = results["auto"]["chosen"]["label"]

    return update_results(run.run_dir, update)


def _save_classifier(run: LoadedRun, method: str, head: nn.Module, **extra: Any) -> None:
    """``classifiers/<method>.pt``: the head, the checkpoint hash it was fit on, the decouple settings."""
    saved = {
        "method": method,
        "head": head_to_dict(head.head if isinstance(head, Classifier) else head),
        "checkpoint_sha256": run.checkpoint_sha256,
        "decouple": config_to_dict(run.config)["decouple"],
        **extra,
    }
    if isinstance(head, Classifier):  # trained with the backbone in the loop: it carries its own backbone
        saved["backbone"] = {k: v.detach().cpu() for k, v in head.backbone.state_dict().items()}
    save_torch_atomic(classifier_path(run.run_dir, method), saved)


def _stage2_settings(run: LoadedRun, method: str) -> dict[str, Any]:
    """How ``method`` was fit, for results.json: on cached features (and views) or online (and BatchNorm mode)."""
    cfg = run.config.decouple
    if method not in ("crt", "lws"):
        return {"features": "test-time, " + cfg.features}
    if method == "crt" and cfg.trainable != "classifier":
        return {"features": "online", "trainable": cfg.trainable}
    if cfg.features == "online":
        return {"features": "online", "bn": cfg.bn}
    return {"features": "cached", "views": cfg.views}


def _auto(
    run: LoadedRun, features: dict[str, Features], fitted: dict[str, nn.Module], tensorboard: ScalarLog
) -> tuple[nn.Module, dict]:
    """``--method auto``: every method in ``fitted`` plus cRT / LWS at each lr factor, the best on validation."""
    cfg = run.config.decouple
    counts = run.splits.train_counts
    candidates: list[Candidate] = []
    for method, head in fitted.items():
        if method not in ("crt", "lws"):
            params = {"tau": round(float(head.tau), 6)} if hasattr(head, "tau") else {}
            candidates.append(Candidate(method, head, params))
            continue
        section = cfg.crt if method == "crt" else cfg.lws
        for factor in lr_factors_in_order(cfg.auto_lr_factors):
            tried = head if factor == 1.0 else _fit(method, run, features, factor, tensorboard)[0]
            candidates.append(Candidate(method, tried, {"lr": section.lr * factor}))
    for candidate in candidates:
        # Test is scored for the record only; pick_best below reads val alone.
        for split in SPLITS:
            score = score_heads({"c": candidate.head}, features[split], run.config, counts)["c"]
            score.pop("per_class")
            setattr(candidate, split, score)
    winner = pick_best(candidates, cfg.select)
    log.info("auto: %s is best on val %s (%.1f)", winner.label, cfg.select, winner.val[cfg.select] or 0.0)
    return winner.head, auto_record(candidates, winner, cfg.select)


def decouple(run_dir: str | Path, methods: Sequence[str] = ("all",), overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Stage 2: fit ``methods`` on the frozen backbone of a stage-1 run.

    ``all`` is every stage-2 method; ``auto`` is every method and its
    hyper-parameters, the best on validation saved as ``auto`` (see
    :mod:`longtail.stages.auto`). Features come from the run's feature cache
    (``decouple.features=cached``, computed on first use) or, with ``online``,
    the backbone runs in every cRT / LWS epoch. Each classifier is saved as
    ``classifiers/<method>.pt``; every classifier of the run (including earlier
    ones) is then re-scored on val and test and ``results.json`` updated. Head
    training and the scores also go to TensorBoard (:mod:`longtail.engine.tensorboard`).

    Returns:
        The updated results dict.
    """
    asked_all = "all" in methods or "auto" in methods
    auto = "auto" in methods
    methods = expand_methods(methods)
    run = load_run(run_dir, overrides)
    cfg = run.config.decouple
    if auto and (cfg.features != "cached" or cfg.trainable != "classifier"):
        raise ConfigError(
            "--method auto: works on cached features with a frozen backbone; "
            f"got decouple.features={cfg.features}, decouple.trainable={cfg.trainable}"
        )
    if asked_all and not isinstance(run.model.head, nn.Linear):
        # `all` means every method that applies: a cosine joint classifier (LDAM) has no norms or bias to adjust.
        skipped = ", ".join(NEED_LINEAR_JOINT)
        log.info("joint classifier is cosine (train.loss=%s): skipping %s", run.config.train.loss, skipped)
        methods = [m for m in methods if m not in NEED_LINEAR_JOINT]
    start = time.perf_counter()
    # Online, only NCM needs test-time training features (cRT and LWS see augmented images); cached, they are
    # extracted once for whatever comes later.
    names = ("train", "val", "test") if cfg.features == "cached" or "ncm" in methods else SPLITS
    features = {split: run_features(run, split) for split in names}
    features_seconds = round(time.perf_counter() - start, 2)
    log.info(
        "features %s in %.1fs (%s)",
        "read from the cache" if run.cache_hits and all(run.cache_hits.values()) else "extracted",
        features_seconds,
        ", ".join(f"{split} {len(f.y)}" for split, f in features.items()),
    )
    seconds: dict[str, float] = {}
    extras: dict[str, Any] = {"stage2": {}}
    fitted: dict[str, nn.Module] = {}
    with ScalarLog(run.run_dir) as tensorboard:
        for method in methods:
            begin = time.perf_counter()
            head, extra = _fit(method, run, features, tensorboard=tensorboard)
            fitted[method] = head
            extras.update(extra)
            extras["stage2"][method] = _stage2_settings(run, method)
            seconds[method] = round(time.perf_counter() - begin, 3)
            log.info("%s fitted in %.2fs", method, seconds[method])
            _save_classifier(run, method, head)
        if auto:
            begin = time.perf_counter()
            head, extras["auto"] = _auto(run, features, fitted, tensorboard)
            fitted["auto"] = head
            extras["stage2"]["auto"] = {"features": "cached", "chosen": extras["auto"]["chosen"]["label"]}
            seconds["auto"] = round(time.perf_counter() - begin, 3)
            _save_classifier(run, "auto", head, chosen=extras["auto"]["chosen"])
        timing = {
            "decouple_seconds": seconds,
            "features_seconds": features_seconds,
            "feature_cache_hits": run.cache_hits,
        }
        results = _refresh_scores(run, features, load_heads(run, fitted), {**extras, "timing": timing})
        log_scores(tensorboard, results, run.config.train.epochs)
    return results


def evaluate(run_dir: str | Path, split: str = "test", overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Re-score the joint classifier and every saved stage-2 classifier on ``split``; refresh results.json."""
    if split not in SPLITS:
        raise ConfigError(f"--split {split!r}: expected val or test")
    run = load_run(run_dir, overrides)
    return _refresh_scores(run, {split: run_features(run, split)}, load_heads(run))
