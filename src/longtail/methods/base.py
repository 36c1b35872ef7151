"""The stage-2 method protocol: what a method is given (:class:`FitContext`), what it returns
(:class:`Fitted`), and how it is described (:class:`MethodSpec`). See :mod:`longtail.methods`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from ..config import Config
from ..engine.head_schedule import resolved_section, steps_per_epoch
from ..engine.head_training import Features, train_head
from ..errors import TrainingError
from ..evaluation.metrics import accuracy_summary
from ..samplers.base import EmptyClassError


@dataclass
class Fitted:
    """A fitted stage-2 classifier and what the run records about it.

    Attributes:
        head: (N, d) features -> (N, C) logits; a registered head (``as_linear``, ``options``, ``from_state``).
        backbone: the backbone the head must be scored on, when fitting changed it (cRT with
            ``decouple.trainable``, BatchNorm drift with ``decouple.bn=train``); None: the run's frozen one.
        params: the hyper-parameters it was fit with, e.g. ``{"tau": 0.8}`` or ``{"lr": 0.05}``
            (``--method auto`` labels its candidates with them).
        info: added to the method's row of results.json beside the accuracies, e.g. ``{"tau": 0.8}``.
        record: top-level results.json entries, e.g. ``{"tau_curve": {...}}``.
        settings: how it was fit (results.json ``stage2.<method>``): features cached or online, views, ...
    """

    head: nn.Module
    backbone: nn.Module | None = None
    params: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The method's hyper-parameters as text, e.g. ``lr=0.05`` (empty without any)."""
        return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.params.items())


@dataclass(frozen=True)
class HeadTraining:
    """How one head is trained, beside its section's epochs, batch size and SGD keys.

    Attributes:
        method: names the training (its TensorBoard scalars, its resumable state), e.g. ``crt`` or ``wb_wd0.01_t0.5``.
        lr_factor: the section's lr has been multiplied by this (``auto`` tries several); part of the name.
        trainable: ``classifier`` (frozen backbone), or ``last_stage`` / ``all`` of the backbone too (needs images).
        criterion: the loss, cross-entropy when None.
        after_step: run after every optimiser step (e.g. a MaxNorm projection of the head's weights).
        sampler: replaces ``decouple.sampler`` for this training (weight balancing re-weights its loss and
            draws instance-balanced); None: the configured one.
        bn: replaces ``decouple.bn``: ``"train"`` runs the frozen backbone's BatchNorm on batch statistics, so
            it needs images (MiSLAS's shift learning); None: the configured one.
    """

    method: str
    lr_factor: float = 1.0
    trainable: str = "classifier"
    criterion: nn.Module | None = None
    after_step: Callable[[], None] | None = None
    sampler: str | None = None
    bn: str | None = None

    @property
    def tag(self) -> str:
        """``method``, or ``method_lr_x<factor>`` at another learning rate: file-name safe."""
        return self.method if self.lr_factor == 1.0 else f"{self.method}_lr_x{self.lr_factor:g}"

    def needs_images(self) -> bool:
        """Whether the backbone must run in the loop: part of it trains, or its BatchNorm does."""
        return self.trainable != "classifier" or self.bn == "train"


class HeadTrainer(Protocol):
    """Trains ``head`` with a method's ``section`` (epochs, batch size, SGD keys) as ``how`` says; returns it fitted.

    Where the training examples come from is the trainer's business: cached
    features (and augmented views), or images through the backbone
    (``decouple.features=online``, :meth:`HeadTraining.needs_images`).
    """

    def __call__(self, head: nn.Module, section: Any, how: HeadTraining) -> Fitted: ...


@dataclass
class FitContext:
    """What every stage-2 method is given.

    Attributes:
        features: split name (``train``, ``val``, ``test``) -> its test-time :class:`Features`
            (``x`` (N, d) float32, ``y`` (N,) int64); called lazily, so a method that needs no
            training features costs no backbone pass over them.
        joint: the stage-1 classifier head (frozen).
        counts: (C,) training images per class.
        config: the run's config; a method reads ``config.decouple`` and its own section.
        device: where heads train.
        trainer: trains heads (see :class:`HeadTrainer`).
        fitted: the methods fitted earlier in this command, by name (``auto`` chooses among them).
        lr_factor: the learning rates of trained heads are multiplied by this (``auto`` tries several).
    """

    features: Callable[[str], Features]
    joint: nn.Module
    counts: list[int]
    config: Config
    device: torch.device
    trainer: HeadTrainer
    fitted: dict[str, Fitted] = field(default_factory=dict)
    lr_factor: float = 1.0

    @property
    def num_classes(self) -> int:
        return len(self.counts)

    @property
    def seed(self) -> int:
        return self.config.seed

    def section(self, name: str) -> Any:
        """A copy of ``decouple.<name>``, its ``lr`` (if any) times :attr:`lr_factor`."""
        section = dataclasses.replace(getattr(self.config.decouple, name))
        if hasattr(section, "lr"):
            section.lr *= self.lr_factor
        return section

    def train_head(
        self,
        head: nn.Module,
        section: Any,
        *,
        method: str,
        trainable: str = "classifier",
        criterion: nn.Module | None = None,
        after_step: Callable[[], None] | None = None,
        sampler: str | None = None,
        bn: str | None = None,
    ) -> Fitted:
        """Train ``head`` (its parameters that require grad) with ``section``; ``params`` gets the lr used, and
        ``settings`` the batch size (``"auto"`` resolved for this data: :mod:`longtail.engine.head_schedule`)
        and the number of optimiser steps.

        The keywords are :class:`HeadTraining`'s (``criterion``: the loss, cross-entropy when None;
        ``after_step()`` runs after every optimiser step; ``sampler`` / ``bn``: this training's
        ``decouple.sampler`` / ``decouple.bn``, None: the configured ones).
        """
        how = HeadTraining(method, self.lr_factor, trainable, criterion, after_step, sampler, bn)
        num_samples = sum(self.counts)
        section = resolved_section(section, num_samples)  # batch_size=auto: from the data size
        try:
            fitted = self.trainer(head, section, how)
        except TrainingError as error:
            raise diverged(error, how, section) from None
        except EmptyClassError as error:
            # WB draws with its own decouple.wb.sampler; the other trained heads with decouple.sampler.
            key = "decouple.sampler" if sampler is None else f"decouple.{method.split('_')[0]}.sampler"
            used = self.config.decouple.sampler if sampler is None else sampler
            raise EmptyClassError(f"{error} ({key}={used}; instance or power sampling needs none)") from None
        fitted.params.setdefault("lr", section.lr)
        # What the schedule came to on this data (results.json stage2.<method>, the report's "how it was fit").
        steps = section.epochs * steps_per_epoch(num_samples, section.batch_size)
        fitted.settings.update({"batch_size": section.batch_size, "steps": steps})
        return fitted

    def with_lr_factor(self, factor: float) -> FitContext:
        """The same context with trained heads' learning rates scaled by ``factor``."""
        return dataclasses.replace(self, lr_factor=factor)

    def summary(self, predictions: torch.Tensor, split: str) -> dict[str, Any]:
        """Accuracies (%) of (N,) ``predictions`` on ``split``: many / medium / few / all / macro, no per-class."""
        e = self.config.eval
        summary = accuracy_summary(predictions, self.features(split).y, self.counts, many=e.many, few=e.few)
        summary.pop("per_class")
        return summary


def diverged(error: TrainingError, how: HeadTraining, section: Any) -> TrainingError:
    """``error`` (a NaN or infinite loss) named by the training it stopped and what to change.

    Under ``--method all`` or ``auto`` several heads train in one command; the loop's own line
    ("stage 2 head training, epoch 2: ...") said neither which one nor which key to lower.
    ``section.lr`` is the learning rate used (``auto``'s factor included).
    """
    # A trained head's name starts with its section's: crt, lws, las, wb (wb_wd0.01_t0.5), crt_lr_x4.
    key = f"decouple.{how.method.split('_')[0]}.lr"
    return TrainingError(
        f"{error}. It was training {how.tag} at lr {section.lr:g}: lower {key}, "
        "or check the scale of the training features",
        step=error.step,
    )


FitFunction = Callable[[FitContext], Fitted]


@dataclass(frozen=True)
class MethodSpec:
    """A stage-2 method's registry entry (see :func:`longtail.methods.register_method`).

    Attributes:
        name: ``--method`` name, file name in ``classifiers/``, key in results.json.
        label: its row label in tables, e.g. ``cRT``.
        summary: what it does, in one line (``longtail config --help``, docs/configuration.md).
        color: its colour in figures (a matplotlib colour).
        fit: the method itself.
        order: position in tables, figures and ``--method all`` (ascending).
        section: the ``decouple.<section>`` it reads, if any.
        config: that section's dataclass, registered as config keys (None: the section is
            another method's, or the method has none).
        needs_linear_joint: it transforms the joint classifier, which must then be linear (not LDAM's cosine one).
        in_all: ``--method all`` fits it.
        chooses_among_others: it chooses among the other methods (``auto``): ``--method NAME`` fits every
            method of ``all`` first, and only on cached features with a frozen backbone.
        in_paper: one of the paper's four decoupled classifiers (NCM, cRT, τ-norm, LWS), the grid's columns.
        show_norms: the report draws its weight norms (the paper's Figure 4).
        sweep: ``(results.json key, figure caption)`` of the validation curve over its grid, if any.
        selects: it chooses hyper-parameters of its own on validation by ``decouple.select`` without a τ
            ``sweep`` (WB's grid); see :func:`~longtail.methods.selection.chooses_on_validation`.
        variants: what ``--method auto`` tries of it, given the context and the configured fit; None: the fit alone.
        check: refuses a config it cannot work with (a one-line ConfigError), called before any method is fit.
        check_for_auto: refuses a config under which ``--method auto`` cannot compare its fits (a one-line
            ConfigError); auto's ``check`` calls it, before any method is fit.
        reads: the general ``decouple`` keys (not of a section) its fit depends on, beside its own section: a
            saved classifier is reused when these are unchanged (:mod:`longtail.pipeline.classifiers`); None:
            every one of them (the safe answer for a method that does not say). ``sampler`` also covers the
            samplers' own sections (``decouple.class_aware.num_samples_cls``, ...).
        renamed: its keys' names before they were in its section (``{"ncm_metric": "metric"}``:
            ``decouple.ncm_metric`` is read as ``decouple.ncm.metric``), so older config files still load.
    """

    name: str
    label: str
    color: str
    fit: FitFunction
    order: int = 100
    summary: str = ""
    section: str | None = None
    config: type | None = None
    needs_linear_joint: bool = False
    in_all: bool = True
    chooses_among_others: bool = False
    in_paper: bool = False
    show_norms: bool = False
    sweep: tuple[str, str] | None = None
    selects: bool = False
    variants: Callable[[FitContext, Fitted], list[Fitted]] | None = None
    check: Callable[[Config], None] | None = None
    check_for_auto: Callable[[Config], None] | None = None
    reads: tuple[str, ...] | None = None
    renamed: dict[str, str] = field(default_factory=dict)


# The general decouple keys of every head trained by FitContext.train_head: how examples are drawn and seen.
TRAINED_HEAD_KEYS = ("sampler", "features", "bn", "views")


def lr_variants(spec_fit: FitFunction) -> Callable[[FitContext, Fitted], list[Fitted]]:
    """``variants`` for a trained head: the configured fit, then a fit at lr times each ``decouple.auto_lr_factors``.

    The configured learning rate (factor 1) comes first, so that a tie keeps the configured recipe.
    """

    def variants(context: FitContext, fitted: Fitted) -> list[Fitted]:
        factors = context.config.decouple.auto_lr_factors
        ordered = sorted(set(factors), key=lambda factor: (factor != 1.0, factors.index(factor)))
        return [fitted if f == 1.0 else spec_fit(context.with_lr_factor(f)) for f in ordered]

    return variants


def train_on_features(
    features: Callable[[str], Features], config: Config, device: torch.device, views: torch.Tensor | None = None
) -> HeadTrainer:
    """A :class:`HeadTrainer` on test-time training features (and ``views`` (K, N, d), if given), in memory."""

    def trainer(head: nn.Module, section: Any, how: HeadTraining) -> Fitted:
        if how.needs_images():
            what = f"trainable={how.trainable!r}" if how.trainable != "classifier" else "bn='train'"
            raise ValueError(f"{how.method}: {what} needs images; features are all there is here")
        train = features("train")
        train = Features(train.x, train.y, views)
        head = train_head(
            head,
            train,
            section,
            sampling=with_sampler(config.decouple, how.sampler),
            seed=config.seed,
            device=device,
            criterion=how.criterion,
            after_step=how.after_step,
        )
        return Fitted(head, settings={"features": "cached", "views": 0 if views is None else len(views)})

    return trainer


def with_sampler(decouple: Any, sampler: str | None) -> Any:
    """``decouple`` (the config section) with ``sampler`` in place of its ``sampler``; itself when None."""
    return decouple if sampler is None else dataclasses.replace(decouple, sampler=sampler)


# --- sweeps: one hyper-parameter chosen on validation -------------------------------------------------------


def sweep_curve(
    predictions: Iterable[tuple[float, torch.Tensor]], context: FitContext, split: str
) -> list[dict[str, Any]]:
    """Per ``(τ, (N,) predicted classes)`` on ``split``: ``{"tau", "many", "medium", "few", "all", "macro"}``."""
    return [{"tau": tau, **context.summary(predicted, split)} for tau, predicted in predictions]


def best_tau(curve: Sequence[dict[str, Any]], select: str) -> float:
    """The τ of ``curve`` with the highest ``select`` metric; ties go to the smallest τ (listed first)."""
    scores = np.array([-np.inf if point[select] is None else point[select] for point in curve])
    return curve[int(np.argmax(scores))]["tau"]


def choose_on_validation(
    context: FitContext, predictions: Callable[[str], Iterable[tuple[float, torch.Tensor]]]
) -> tuple[float, dict[str, Any]]:
    """Sweep a grid on val, choose by ``decouple.select``; the test curve is computed for display only.

    Args:
        predictions: split -> ``(τ, (N,) predictions)`` over the grid.

    Returns:
        The chosen τ and the record ``{"select", "chosen", "val", "test"}`` for results.json.
    """
    select = context.config.decouple.select
    val_curve = sweep_curve(predictions("val"), context, "val")
    chosen = best_tau(val_curve, select)
    # The test curve is for display (the report's dashed line): τ was chosen on val above.
    test_curve = sweep_curve(predictions("test"), context, "test")
    return chosen, {"select": f"val {select}", "chosen": chosen, "val": val_curve, "test": test_curve}
