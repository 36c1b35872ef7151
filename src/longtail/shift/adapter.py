"""One method's prior adapter: everything fitted on validation, then applied to any unlabeled batch.

:func:`fit_prior_adapter` (validation logits and labels, training class sizes)
chooses the calibration by cross-validation, checks that prior adaptation helps
on simulated shifts of the validation split (:mod:`.select`), and fits BBSE's
confusion matrix. :meth:`PriorAdapter.adapt` then takes a batch's logits only:

- ``none``: the method's own scores (its softmax), as without this module;
- ``known``: calibrated, moved to a given prior;
- ``em``: calibrated, moved to the prior EM estimates from the batch. The
  default family is ``power`` (priors ``π_v · π_train^θ``: forward and backward
  long tails, :mod:`.em`), robust with a small validation split; ``full`` is
  Saerens' EM on the whole simplex;
- ``bbse``: calibrated, moved to the prior BBSE estimates.

When the validation check turned adaptation off, ``known`` / ``em`` / ``bbse``
return the method's own predictions and still report the prior they estimate
(``Adapted.applied`` is False). ``to_dict`` / ``from_dict`` give plain JSON
data, to be recorded with the method.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch

from ..errors import DataError
from .adapt import PRIOR_METHODS, Adapted, PriorMethod, adapt_prior
from .bbse import BBSEFit, fit_bbse
from .calibrate import Calibration, CalibrationKind
from .em import DEFAULT_MAX_ITERATIONS, DEFAULT_TOLERANCE
from .priors import PriorLike, check_logits, log_softmax64
from .select import CANDIDATES, DEFAULT_FOLDS, select_calibration

Family = Literal["power", "full"]
FAMILIES: tuple[str, ...] = ("power", "full")
# The most validation logits (rows x classes) an adapter is fitted on. Every calibration fit and every pass of the
# cross-validation goes over the table in row chunks with hand-written gradients (.calibrate), so memory is the
# table itself (1 GB of float32 at this limit) and a few chunks; time is one pass per L-BFGS evaluation (about 2.5 s
# on one core at iNaturalist 2018's 24,426 x 8,142, whose validation split is within).
MAX_ADAPTER_VALUES = 250_000_000
# BCTS (a bias per class: C + 1 parameters, ~40 L-BFGS evaluations where temperature and PCTS take ~8) is a
# calibration candidate up to this many validation logits (ImageNet-LT's 20,000 x 1,000). Beyond, it would be most of
# an adapter's time, and each of its biases would rest on a few validation images (3 a class in iNaturalist 2018's).
MAX_BCTS_VALUES = 25_000_000
# BBSE is fitted up to this many classes: its C x C confusion matrix (32 MB here, 0.5 GB at 8,142 classes) and its
# least squares at every estimate (measured on one core: 0.2 s at 1,000 classes, 2.9 s at 2,000, 32 s at 4,000).
MAX_BBSE_CLASSES = 2_000
# The smallest batch EM estimates a prior from (`predict --prior em`, the estimator's `prior="em"`). With one
# image the estimate is that image's own calibrated posterior pulled along the family, which then re-weights the
# same image: a prediction moved by nothing but itself (a top-1 changed on a lone image), not a batch's prior.
MIN_EM_IMAGES = 2
# Why a prior was not applied (``Adapted.applied`` False), in the words every caller shows the user.
NOT_APPLIED = (
    "the validation check found that moving this classifier's calibrated scores to shifted priors does not raise "
    "its accuracy (docs/statistics.md): its predictions are kept as they are"
)


def check_adapter_size(rows: int, num_classes: int) -> None:
    """Refuse validation logits of ``rows`` x ``num_classes`` beyond :data:`MAX_ADAPTER_VALUES` (one line)."""
    if rows * num_classes > MAX_ADAPTER_VALUES:
        raise DataError(
            f"{rows:,} validation samples x {num_classes:,} classes = {rows * num_classes:,} logits, beyond the "
            f"{MAX_ADAPTER_VALUES:,} a prior adapter is fitted on (a pass over them per step of each calibration "
            "fit: hours beyond)"
        )


@dataclass(frozen=True)
class PriorAdapter:
    """A method's fitted prior adaptation (see the module docstring).

    Attributes:
        calibration: chosen on validation by cross-validated NLL.
        direction: (C,) centred log training prior, the ``power`` family's direction.
        enabled: whether simulated shifts of the validation split favoured adaptation.
        bbse: BBSE's validation confusion matrix of the method's raw argmax; None beyond
            :data:`MAX_BBSE_CLASSES` classes and where it was not kept (a record without it:
            ``to_dict(bbse=False)``, e.g. an exported model's metadata).
        cv_nll: out-of-fold validation NLL per calibration candidate.
        shift_gain: validation-simulated gain (points) of the known-prior adjustment per shifted prior.
        fold_calibrations: (K,) the calibration's kind fitted on each validation fold's complement, kept from the
            cross-validation of a fresh fit for out-of-fold diagnostics (the reliability diagram); not recorded
            by :meth:`to_dict`, so empty on an adapter read back.
    """

    calibration: Calibration
    direction: tuple[float, ...]
    enabled: bool
    bbse: BBSEFit | None
    cv_nll: dict[str, float]
    shift_gain: dict[str, float]
    fold_calibrations: tuple[Calibration, ...] = field(default=(), compare=False, repr=False)

    @property
    def num_classes(self) -> int:
        return self.calibration.num_classes

    def adapt(
        self,
        logits: torch.Tensor,
        method: PriorMethod = "em",
        *,
        target_prior: PriorLike | None = None,
        family: Family = "power",
        tolerance: float = DEFAULT_TOLERANCE,
        max_iterations: int = DEFAULT_MAX_ITERATIONS,
        pseudo_count: float = 0.0,
        force: bool = False,
    ) -> Adapted:
        """Adapt the (N, C) raw logits of an unlabeled batch; ``predictions()`` of the result are (N,).

        Args:
            logits: (N, C) the method's raw scores.
            method: ``none``, ``known`` (with ``target_prior``), ``em`` or ``bbse``.
            target_prior: (C,) for ``known``.
            family: for ``em``: ``power`` (forward/backward family) or ``full`` (Saerens).
            tolerance, max_iterations, pseudo_count: EM's options.
            force: adapt even where the validation check turned adaptation off.
        """
        if family not in FAMILIES:
            raise DataError(f"EM family {family!r}: expected one of {', '.join(FAMILIES)}")
        if method not in PRIOR_METHODS:
            raise DataError(f"prior {method!r}: expected one of {', '.join(PRIOR_METHODS)}")
        scores = check_logits(logits, float64=False)  # float32 kept: each use makes its own float64 table
        if method == "bbse" and self.bbse is None:
            raise DataError(
                f"prior 'bbse': this adapter has no BBSE fit (fitted up to {MAX_BBSE_CLASSES:,} classes, and left out "
                "of an exported model's); use em or known"
            )
        if method == "none":
            own = log_softmax64(scores)
            return Adapted("none", own, self.calibration.prior_tensor(), self.calibration.prior_tensor())
        adapted = adapt_prior(
            scores,
            method,
            calibration=self.calibration,
            target_prior=target_prior,
            bbse=self.bbse,
            tolerance=tolerance,
            max_iterations=max_iterations,
            pseudo_count=pseudo_count,
            direction=self.direction if family == "power" else None,
        )
        if self.enabled or force:
            return adapted
        return replace(adapted, log_posteriors=log_softmax64(scores), applied=False)

    def to_dict(self, *, bbse: bool = True) -> dict[str, Any]:
        """Plain JSON-able data; :meth:`from_dict` reads it back. ``bbse=False`` leaves out BBSE's C x C
        confusion matrix (a million numbers at 1000 classes): ``bbse`` is then refused by the adapter read back."""
        data = {
            "calibration": self.calibration.to_dict(),
            "direction": list(self.direction),
            "enabled": self.enabled,
            "cv_nll": dict(self.cv_nll),
            "shift_gain": dict(self.shift_gain),
        }
        if bbse and self.bbse is not None:
            data["bbse"] = self.bbse.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Any, source: str = "prior adapter") -> PriorAdapter:
        """A :class:`PriorAdapter` from :meth:`to_dict`'s data; a :class:`DataError` naming ``source``."""
        try:
            calibration = Calibration.from_dict(data["calibration"], source)
            num_classes = calibration.num_classes
            direction = tuple(float(x) for x in data["direction"])
            kept = data.get("bbse")
            bbse = None
            if kept is not None:
                confusion = torch.tensor(kept["confusion"], dtype=torch.float64)
                bbse = BBSEFit(confusion, torch.tensor(kept["source_prior"], dtype=torch.float64))
            enabled = data["enabled"]
            cv_nll = {str(k): float(v) for k, v in dict(data.get("cv_nll", {})).items()}
            gain = {str(k): float(v) for k, v in dict(data.get("shift_gain", {})).items()}
        except DataError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as error:
            raise DataError(
                f"{source}: expected calibration, direction and enabled ({error.__class__.__name__}: {error})"
            ) from None
        shapes_ok = (
            len(direction) == num_classes
            and (bbse is None or bbse.confusion.shape == (num_classes, num_classes))
            and (bbse is None or bbse.source_prior.shape == (num_classes,))
            and isinstance(enabled, bool)
        )
        if not shapes_ok:
            raise DataError(f"{source}: direction, bbse and calibration disagree on the number of classes")
        return cls(calibration, direction, enabled, bbse, cv_nll, gain)


def fit_prior_adapter(
    val_logits: torch.Tensor,
    val_labels: torch.Tensor | Sequence[int],
    train_counts: Sequence[int],
    *,
    candidates: Sequence[CalibrationKind] | None = None,
    folds: int = DEFAULT_FOLDS,
) -> PriorAdapter:
    """Fit a method's :class:`PriorAdapter` on the validation split: the only place labels enter.

    Args:
        val_logits: (N_val, C) the method's raw validation scores.
        val_labels: (N_val,) their labels (at least 2 per class).
        train_counts: (C,) training images per class.
        candidates: as in :func:`~.select.select_calibration`; None: all of them, without ``bcts`` beyond
            :data:`MAX_BCTS_VALUES` validation logits.
        folds: as in :func:`~.select.select_calibration`.

    Raises:
        DataError: among others, validation logits beyond :data:`MAX_ADAPTER_VALUES` (:func:`check_adapter_size`).
    """
    if isinstance(val_logits, torch.Tensor) and val_logits.ndim == 2:  # before any float64 copy of them
        check_adapter_size(*val_logits.shape)
    if candidates is None:
        affordable = isinstance(val_logits, torch.Tensor) and val_logits.numel() <= MAX_BCTS_VALUES
        candidates = CANDIDATES if affordable else tuple(kind for kind in CANDIDATES if kind != "bcts")  # type: ignore[assignment]
    selection = select_calibration(val_logits, val_labels, train_counts, candidates=candidates, folds=folds)
    counts = torch.as_tensor(list(train_counts), dtype=torch.float64)
    if (counts <= 0).any():
        raise DataError("training class sizes: every class needs at least one training image")
    log_prior = (counts / counts.sum()).log()
    direction = tuple((log_prior - log_prior.mean()).tolist())
    return PriorAdapter(
        selection.calibration,
        direction,
        selection.enabled,
        fit_bbse(val_logits, val_labels) if selection.calibration.num_classes <= MAX_BBSE_CLASSES else None,
        selection.cv_nll,
        selection.shift_gain,
        selection.fold_calibrations,
    )
