"""The commands as library functions: ``train``, ``decouple``, ``evaluate``, ``demo``.

Each reads and writes a run directory (see :mod:`longtail.runs`); the CLI only
parses arguments and calls these.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .config import Config, CRTConfig, LWSConfig, config_to_dict, load_config, parse_override, save_config
from .data.dataset import DatasetSplits
from .data.registry import create_dataset
from .engine.device import resolve_device
from .engine.distributed import agree, barrier, broadcast_object, is_main, process_group, world_size
from .engine.feature_cache import cached_features
from .engine.precision import make_grad_scaler
from .errors import ConfigError, RunDirError
from .evaluation.metrics import accuracy_summary, shot_groups
from .io import save_torch_atomic, write_json_atomic
from .models.classifier import Classifier
from .models.heads import LWSHead
from .models.serialize import head_from_dict, head_to_dict
from .runs import (
    CONFIG_FILE,
    RESULTS_FILE,
    check_replaceable,
    classifier_path,
    environment,
    file_sha256,
    load_checkpoint,
    prepare_new_run_dir,
    read_results,
    require_run_dir,
    save_checkpoint,
    saved_methods,
    update_results,
    write_metrics,
)
from .stages.auto import Candidate, auto_record, lr_factors_in_order, pick_best
from .stages.decouple import (
    Features,
    best_tau,
    choose_logit_adjustment,
    choose_tau,
    extract_features,
    extract_views,
    fit_crt,
    fit_lws,
    fit_ncm,
    fresh_linear_head,
    logit_adjust_predictions,
    sweep_curve,
    tau_norm_predictions,
)
from .stages.joint import (
    build_model,
    check_train_setup,
    eval_transform,
    joint_head_kind,
    train_joint,
    train_transform,
)
from .stages.retrain import retrain_on_images

log = logging.getLogger(__name__)

STAGE2_METHODS = ("ncm", "crt", "tau_norm", "lws", "logit_adjust")
# Methods that transform the joint classifier and so need it to be linear (not LDAM's cosine one).
NEED_LINEAR_JOINT = ("tau_norm", "lws", "logit_adjust")
SPLITS = ("val", "test")
# Keys that may change after stage 1: they do not alter what stage 1 learned.
# Where the data lives may change too (a moved dataset); the class sizes are checked against the checkpoint.
RUN_TIME_KEYS = (
    "decouple.",
    "eval.",
    "device",
    "data.root",
    "data.path",
    "data.train_list",
    "data.val_list",
    "data.test_list",
    "data.num_workers",
    "data.decode_threads",
)


@dataclass
class LoadedRun:
    """A stage-1 run read back: its config, data, trained model and checkpoint hash."""

    run_dir: Path
    config: Config
    splits: DatasetSplits
    model: Classifier
    checkpoint_sha256: str
    device: torch.device
    # Feature-cache use per split in this process (True: read from the cache), for results.json.
    cache_hits: dict[str, bool] = field(default_factory=dict)


def _results_header(config: Config, splits: DatasetSplits) -> dict[str, Any]:
    counts = splits.train_counts
    return {
        "dataset": splits.name,
        "num_classes": splits.num_classes,
        "class_names": splits.class_names,
        "train_counts": counts,
        "seed": config.seed,
        "data_seed": config.data.seed,
        "shot_thresholds": {"many": config.eval.many, "few": config.eval.few},
        "shot_groups": shot_groups(counts, config.eval.many, config.eval.few),
    }


def _score(heads: dict[str, nn.Module], features: Features, config: Config, train_counts: list[int]) -> dict[str, Any]:
    """Accuracy summary of each head on ``features`` (CPU; the heads themselves are left where they are)."""
    scores = {}
    with torch.no_grad():
        for method, head in heads.items():
            predictions = copy.deepcopy(head).cpu().eval()(features.x).argmax(1)
            scores[method] = accuracy_summary(
                predictions, features.y, train_counts, many=config.eval.many, few=config.eval.few
            )
            if hasattr(head, "tau"):
                scores[method]["tau"] = round(float(head.tau), 6)  # a float32 buffer: 0.9 -> 0.8999999762
    return scores


def _split_features(
    backbone: nn.Module, splits: DatasetSplits, split: str, *, config: Config, device: torch.device
) -> Features:
    """Backbone features of one split with the test-time transform."""
    transform = eval_transform(splits).to(device)
    return extract_features(
        backbone, splits.split(split), transform=transform, device=device, batch_size=config.eval.batch_size
    )


def train(config: Config, out: str | Path, *, overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Stage 1: train backbone and linear classifier jointly into run directory ``out``.

    Writes ``config.yaml``, then after every epoch ``checkpoint.pt`` and
    ``metrics.jsonl``, and finally ``results.json`` with ``joint`` on val and test.

    Under torchrun every process calls this and trains with DDP (see
    :func:`~longtail.stages.joint.train_joint`); rank 0 alone checks and writes
    ``out`` and scores val and test at the end, while the others wait. A
    failed check fails every rank alike.

    Returns:
        The results dict written to ``results.json`` (on every rank).
    """
    out = Path(out)
    with process_group(resolve_device(config.device)) as device:

        def check_inputs() -> DatasetSplits:
            check_train_setup(config, device, world_size())
            return create_dataset(config.data)

        splits = agree(check_inputs)  # bad config or data fails here, on every rank, before anything is written
        # The run directory is rank 0's alone; its verdict on `out` reaches every rank.
        agree(lambda: prepare_new_run_dir(out, overwrite=overwrite) if is_main() else None)
        if is_main():
            save_config(config, out / CONFIG_FILE)
        in_channels = splits.train.image_shape[0]
        history: list[dict[str, Any]] = []
        grad_scaler = make_grad_scaler(config.train.precision, device)  # fp16 only; one for the whole training
        start = time.perf_counter()

        def save_epoch(record: dict[str, Any], model: Classifier, optimizer: Any, scheduler: Any) -> None:
            history.append(record)
            write_metrics(out, history)
            checkpoint = {
                "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},  # the plain module's keys
                "epoch": record["epoch"],
                "num_classes": splits.num_classes,
                "in_channels": in_channels,
                "train_counts": splits.train_counts,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "metrics": history,
                "config": config_to_dict(config),
            }
            if grad_scaler is not None:
                checkpoint["grad_scaler"] = grad_scaler.state_dict()
            save_checkpoint(out, checkpoint)

        model, _ = train_joint(
            config, splits, device=device, on_epoch_end=save_epoch, progress=progress, grad_scaler=grad_scaler
        )
        train_seconds = time.perf_counter() - start
        results: dict[str, Any] | None = None
        if is_main():
            scores = {}
            for split in SPLITS:
                features = _split_features(model.backbone, splits, split, config=config, device=device)
                scores[split] = _score({"joint": model.head}, features, config, splits.train_counts)
            results = {
                **_results_header(config, splits),
                "split": "test",
                "methods": scores["test"],
                "val_methods": scores["val"],
                "timing": {"train_seconds": round(train_seconds, 2)},
                "environment": environment(),
            }
            write_json_atomic(out / RESULTS_FILE, results)
        barrier()  # the other ranks wait for rank 0's scoring
        return broadcast_object(results)


def _check_run_time_overrides(overrides: Sequence[str]) -> None:
    for text in overrides:
        key, _ = parse_override(text)
        if not key.startswith(RUN_TIME_KEYS):
            raise ConfigError(
                f"{key}: fixed by stage 1 and cannot change on an existing run; "
                f"only {', '.join(k.rstrip('.') for k in RUN_TIME_KEYS)} keys can (start a new run to change it)"
            )


def load_run(run_dir: str | Path, overrides: Sequence[str] = ()) -> LoadedRun:
    """Read a stage-1 run: config (with run-time ``overrides``), data, and the trained model.

    Raises:
        RunDirError: when ``run_dir`` is not a run, or its checkpoint does not
            match its config or data.
    """
    run_dir = require_run_dir(run_dir)
    _check_run_time_overrides(overrides)
    try:
        config = load_config(run_dir / CONFIG_FILE, overrides)
    except ConfigError as error:
        raise RunDirError(f"{run_dir / CONFIG_FILE}: {error}") from None
    checkpoint = load_checkpoint(run_dir)
    trained_with = checkpoint.get("config", {}).get("model", {}).get("backbone")
    if trained_with != config.model.backbone:
        raise RunDirError(
            f"{run_dir}: checkpoint.pt holds a {trained_with!r} backbone "
            f"but config.yaml says model.backbone={config.model.backbone!r}"
        )
    splits = create_dataset(config.data)
    if checkpoint.get("train_counts") != splits.train_counts:
        raise RunDirError(
            f"{run_dir}: the data differs from what stage 1 trained on (class sizes {splits.train_counts} "
            f"vs {checkpoint.get('train_counts')}); check data.root and config.yaml"
        )
    done, planned = checkpoint.get("epoch"), config.train.epochs
    if done != planned:
        raise RunDirError(f"{run_dir}: stage 1 did not finish (checkpoint.pt is from epoch {done} of {planned})")
    model = build_model(
        config.model.backbone, checkpoint["in_channels"], checkpoint["num_classes"], joint_head_kind(config)
    )
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError:
        raise RunDirError(f"{run_dir}: checkpoint.pt does not match model.backbone={config.model.backbone!r}") from None
    device = resolve_device(config.device)
    model = model.to(device).freeze_backbone().eval()
    return LoadedRun(run_dir, config, splits, model, file_sha256(run_dir / "checkpoint.pt"), device)


def _features(run: LoadedRun, split: str) -> Features:
    """Test-time features of ``split`` by the run's frozen backbone: from the run's feature cache
    (``decouple.features=cached``) or computed afresh (``online``)."""
    if run.config.decouple.features == "online":
        return _split_features(run.model.backbone, run.splits, split, config=run.config, device=run.device)

    def compute() -> tuple[torch.Tensor, torch.Tensor]:
        features = _split_features(run.model.backbone, run.splits, split, config=run.config, device=run.device)
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


def _load_heads(run: LoadedRun, fitted: dict[str, nn.Module] | None = None) -> dict[str, nn.Module]:
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


def _fit_on_images(method: str, run: LoadedRun, section: CRTConfig | LWSConfig) -> nn.Module:
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
    tuned = retrain_on_images(run.model, head, run.splits, run.config, section, trainable=trainable, device=run.device)
    backbone_changed = trainable != "classifier" or cfg.bn == "train"
    return tuned if backbone_changed else tuned.head


def _fit(
    method: str, run: LoadedRun, features: dict[str, Features], lr_factor: float = 1.0
) -> tuple[nn.Module, dict[str, Any]]:
    """Fit stage-2 ``method`` on the run's frozen features (or on images, see :func:`_fit_on_images`).

    ``lr_factor`` scales the learning rate of cRT and LWS (``--method auto`` tries several).

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
        if cfg.features == "online" or (method == "crt" and cfg.trainable != "classifier"):
            return _fit_on_images(method, run, section), {}
        train = features["train"]
        if cfg.views > 0:
            train = Features(train.x, train.y, _train_views(run))
        options = {
            "sampler": cfg.sampler,
            "sampler_q": cfg.sampler_q,
            "num_samples_cls": cfg.num_samples_cls,
            "seed": run.config.seed,
            "device": run.device,
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
            scores[split] = _score(shared, features[split], run.config, counts)
            for method, model in own.items():
                own_features = _split_features(model.backbone, run.splits, split, config=run.config, device=run.device)
                scores[split].update(_score({method: model.head}, own_features, run.config, counts))

    def update(results: dict[str, Any]) -> None:
        results.update(_results_header(run.config, run.splits))
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


def _auto(run: LoadedRun, features: dict[str, Features], fitted: dict[str, nn.Module]) -> tuple[nn.Module, dict]:
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
            tried = head if factor == 1.0 else _fit(method, run, features, lr_factor=factor)[0]
            candidates.append(Candidate(method, tried, {"lr": section.lr * factor}))
    for candidate in candidates:
        # Test is scored for the record only; pick_best below reads val alone.
        for split in SPLITS:
            score = _score({"c": candidate.head}, features[split], run.config, counts)["c"]
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
    ones) is then re-scored on val and test and ``results.json`` updated.

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
    features = {split: _features(run, split) for split in ("train", "val", "test")}
    features_seconds = round(time.perf_counter() - start, 2)
    log.info(
        "features %s in %.1fs (train %d, val %d, test %d)",
        "read from the cache" if all(run.cache_hits.values()) and run.cache_hits else "extracted",
        features_seconds,
        len(features["train"].y),
        len(features["val"].y),
        len(features["test"].y),
    )
    seconds: dict[str, float] = {}
    extras: dict[str, Any] = {"stage2": {}}
    fitted: dict[str, nn.Module] = {}
    for method in methods:
        begin = time.perf_counter()
        head, extra = _fit(method, run, features)
        fitted[method] = head
        extras.update(extra)
        extras["stage2"][method] = _stage2_settings(run, method)
        seconds[method] = round(time.perf_counter() - begin, 3)
        log.info("%s fitted in %.2fs", method, seconds[method])
        _save_classifier(run, method, head)
    if auto:
        begin = time.perf_counter()
        head, extras["auto"] = _auto(run, features, fitted)
        fitted["auto"] = head
        extras["stage2"]["auto"] = {"features": "cached", "chosen": extras["auto"]["chosen"]["label"]}
        seconds["auto"] = round(time.perf_counter() - begin, 3)
        _save_classifier(run, "auto", head, chosen=extras["auto"]["chosen"])
    timing = {"decouple_seconds": seconds, "features_seconds": features_seconds, "feature_cache_hits": run.cache_hits}
    return _refresh_scores(run, features, _load_heads(run, fitted), {**extras, "timing": timing})


def evaluate(run_dir: str | Path, split: str = "test", overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Re-score the joint classifier and every saved stage-2 classifier on ``split``; refresh results.json."""
    if split not in SPLITS:
        raise ConfigError(f"--split {split!r}: expected val or test")
    run = load_run(run_dir, overrides)
    return _refresh_scores(run, {split: _features(run, split)}, _load_heads(run))


def demo(
    out: str | Path = "runs/demo",
    *,
    overrides: Sequence[str] = (),
    progress: bool = True,
    say: Callable[[str], None] = log.info,
) -> dict[str, Any]:
    """The whole recipe on Fashion-MNIST-LT: stage 1, then every stage-2 method and ``auto``, into ``out``.

    The run is built in a temporary sibling directory and moved to ``out`` only
    when complete; an existing run directory at ``out`` is replaced (said via
    ``say``), anything else there is refused.
    """
    out = Path(out)
    config = load_config(None, overrides)
    check_replaceable(out)
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        train(config, partial, progress=progress)
        decouple(partial, ["auto"])  # every method, plus the best on val as "auto"
        if out.exists():
            say(f"replacing existing run directory {out}")
            shutil.rmtree(out)
        partial.rename(out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return read_results(out)
