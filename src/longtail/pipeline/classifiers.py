"""A run's stage-2 classifiers on disk: ``classifiers/<method>.pt``, what each was fit on, and when one is reused.

A classifier file holds the head (and a backbone it changed), the checkpoint
hash and run fingerprint it was fit on, and its **fit settings**: the config
keys its method reads (its own ``decouple.<section>`` keys and the general
``decouple`` keys it declares in ``MethodSpec.reads``), the training seed and
longtail's version. ``decouple`` follows the rule of ``train --out`` with them:
a classifier whose checkpoint, data and settings are those of the new fit is
reused as it is; one fit otherwise is refused by name unless ``--overwrite``.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from ..config import Config, config_to_dict
from ..errors import RunDirError
from ..fs.atomic import save_torch_atomic
from ..methods import Fitted, spec_of
from ..models.serialize import head_from_dict, head_to_dict
from ..registry import SAMPLERS
from ..runs import classifier_path, saved_methods
from ..safe_torch import load_tensors
from ..version import __version__
from .provenance import KEY as PROVENANCE_KEY
from .provenance import flatten
from .run_state import LoadedRun

log = logging.getLogger(__name__)


def fit_settings(config: Config, method: str) -> dict[str, Any]:
    """``{dotted key: value}`` of what fitting ``method`` depends on beyond the run: its own section, the general
    ``decouple`` keys it reads (every one, for a method that does not say), the seed and longtail's version."""
    spec = spec_of(method)
    decouple = config_to_dict(config)["decouple"]
    sections = set(config.decouple.sections)
    own = spec.section or spec.name
    general = [key for key in decouple if key not in sections]
    reads = general if spec.reads is None or spec.chooses_among_others else spec.reads
    kept = {key: decouple[key] for key in reads}
    if spec.chooses_among_others:  # it fits or compares every method: all their settings
        kept.update({key: decouple[key] for key in sections})
    else:
        samplers = [name for name in SAMPLERS.names() if name in sections] if "sampler" in reads else []
        kept.update({key: decouple[key] for key in [own, *samplers] if key in sections})
    return {**flatten(kept, "decouple."), "seed": config.seed, "longtail": __version__}


def read_classifier(run: LoadedRun, method: str) -> tuple[Fitted, dict[str, Any]]:
    """The classifier of ``method`` saved in the run, and the raw file (its settings and provenance).

    A classifier saved with its own backbone (cRT with ``decouple.trainable``,
    ``decouple.bn=train``) comes back with that backbone, frozen.

    Raises:
        RunDirError: an unreadable file, or one fit on another checkpoint.
    """
    path = classifier_path(run.run_dir, method)
    try:
        saved = load_tensors(path)
    except Exception as error:
        raise RunDirError(f"{path}: unreadable classifier ({error.__class__.__name__})") from None
    if not isinstance(saved, dict) or saved.get("checkpoint_sha256") != run.checkpoint_sha256:
        raise RunDirError(
            f"{path}: fit on another checkpoint.pt; re-run `longtail decouple {run.run_dir} --method {method} "
            "--overwrite`"
        )
    head = head_from_dict(saved.get("head"), run.model.num_features, run.splits.num_classes, str(path))
    backbone = None
    if "backbone" in saved:
        backbone = copy.deepcopy(run.model.backbone)
        try:
            backbone.load_state_dict(saved["backbone"])
        except (RuntimeError, TypeError):
            raise RunDirError(f"{path}: its backbone does not match model.backbone") from None
        backbone = backbone.requires_grad_(False).eval()
    info = dict(saved.get("info") or {})
    record, settings = dict(saved.get("record") or {}), dict(saved.get("stage2") or {})
    return Fitted(head.to(run.device), backbone, dict(saved.get("params") or {}), info, record, settings), saved


def load_fitted(run: LoadedRun, fitted: dict[str, Fitted] | None = None) -> dict[str, Fitted]:
    """The joint classifier and every stage-2 classifier of the run; ``fitted`` ones are taken as given."""
    result: dict[str, Fitted] = {"joint": Fitted(run.model.head), **(fitted or {})}
    for method in set(saved_methods(run.run_dir)) - set(result):
        result[method] = read_classifier(run, method)[0]
    return result


def save_classifier(run: LoadedRun, method: str, fitted: Fitted) -> None:
    """``classifiers/<method>.pt``: the head (and a backbone it changed), the checkpoint hash and run fingerprint
    it was fit on, its fit settings (:func:`fit_settings`), its parameters and results row entries, and what
    results.json records of the fit (``record``: its τ sweep...; ``stage2``: how it was fit), so that a classifier
    reused after a ``decouple`` stopped before writing results.json still brings them."""
    saved = {
        "method": method,
        "head": head_to_dict(fitted.head),
        "checkpoint_sha256": run.checkpoint_sha256,
        PROVENANCE_KEY: run.provenance["fingerprint"],
        "settings": fit_settings(run.config, method),
        "decouple": config_to_dict(run.config)["decouple"],
        "params": fitted.params,
        "info": fitted.info,
        "record": fitted.record,
        "stage2": fitted.settings,
    }
    if "auto" in fitted.record:
        saved["chosen"] = fitted.record["auto"]["chosen"]
    if fitted.backbone is not None:
        saved["backbone"] = {k: v.detach().cpu() for k, v in fitted.backbone.state_dict().items()}
    save_torch_atomic(classifier_path(run.run_dir, method), saved)


def reusable(run: LoadedRun, methods: list[str], *, overwrite: bool) -> dict[str, Fitted]:
    """The saved classifiers among ``methods`` that this fit would reproduce, to be kept as they are.

    Checked for every method before any is fit, so that a refusal costs nothing.

    Raises:
        RunDirError: a saved classifier fit with other settings, naming the first key that differs, unless
            ``overwrite`` (then it is fit again and replaced).
    """
    kept: dict[str, Fitted] = {}
    saved = set(saved_methods(run.run_dir))
    for method in methods:
        if method not in saved or overwrite:
            continue
        path = classifier_path(run.run_dir, method)
        fitted, raw = read_classifier(run, method)
        difference = _first_difference(raw.get("settings"), fit_settings(run.config, method))
        if difference is None and raw.get(PROVENANCE_KEY) == run.provenance["fingerprint"]:
            log.info("%s: %s was fit with these settings; reused (--overwrite fits it again)", method, path)
            kept[method] = fitted
            continue
        why = difference or "the run's data or fingerprint (it predates provenance records)"
        raise RunDirError(
            f"{path}: a finished classifier fit with {why}; pass --overwrite to fit it again and replace it, "
            "or decouple a copy of the run"
        )
    return kept


def _first_difference(saved: Any, current: dict[str, Any]) -> str | None:
    """``decouple.crt.lr=0.2 (now 0.8)`` for the first key that differs, None when they agree."""
    if not isinstance(saved, dict):
        return "settings this longtail does not record"
    for key, value in current.items():
        if saved.get(key, "<absent>") != value:
            return f"{key}={saved.get(key, '<absent>')!r} (now {value!r})"
    return None
