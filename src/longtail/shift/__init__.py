"""Deployment priors: shifted test distributions, calibration on validation, and test-time prior adaptation.

A classifier's posterior for a source prior ``π_s`` moves to a target prior
``π_t`` by Bayes: ``p_t(y|x) ∝ p_s(y|x) · π_t(y) / π_s(y)``. What this package
offers around that one line:

- :mod:`.subsets`: SADE's forward-F / backward-F test sets drawn from a balanced
  test set, and their true priors.
- :mod:`.calibrate`: temperature scaling and BCTS fitted on validation (BCTS
  makes any method's scores posteriors for the validation prior).
- :mod:`.priors`: prior vectors and the Bayes re-weighting (``known``).
- :mod:`.em` (Saerens et al. 2002) and :mod:`.bbse` (Lipton et al. 2018): the
  target prior estimated from the unlabeled batch.
- :mod:`.adapt`: the call that chains them, :func:`adapt_prior`.
- :mod:`.select`: per method, the calibration chosen by cross-validation on
  validation, and whether adaptation helps on simulated shifts of validation.
- :mod:`.adapter`: all of it fitted per method, :func:`fit_prior_adapter`.

Typical use, per method::

    adapter = fit_prior_adapter(val_logits, val_labels, train_counts)   # validation only
    out = adapter.adapt(batch_logits, "em")                             # unlabeled batch
    out.predictions(), out.prior                                        # (N,), (C,)
    adapter.to_dict()                                                   # JSON, to record
"""

from .adapt import PRIOR_METHODS, Adapted, adapt_prior, fold_known_prior
from .adapter import (
    FAMILIES,
    MAX_ADAPTER_VALUES,
    MAX_BBSE_CLASSES,
    MAX_BCTS_VALUES,
    PriorAdapter,
    check_adapter_size,
    fit_prior_adapter,
)
from .bbse import BBSEFit, bbse_prior, fit_bbse
from .calibrate import CALIBRATION_KINDS, Calibration, fit_calibration, identity_calibration
from .em import EMResult, em_prior
from .priors import as_prior, class_shares, reweight, uniform_prior
from .select import Selection, out_of_fold_top1, select_calibration, shifted_priors
from .subsets import IMBALANCES, Shift, ShiftedSubset, shifted_counts, shifted_subset, standard_shifts

__all__ = [
    "CALIBRATION_KINDS",
    "FAMILIES",
    "IMBALANCES",
    "PRIOR_METHODS",
    "Adapted",
    "BBSEFit",
    "Calibration",
    "EMResult",
    "PriorAdapter",
    "Selection",
    "Shift",
    "ShiftedSubset",
    "adapt_prior",
    "as_prior",
    "bbse_prior",
    "class_shares",
    "em_prior",
    "fit_bbse",
    "fit_calibration",
    "fit_prior_adapter",
    "check_adapter_size",
    "MAX_ADAPTER_VALUES",
    "MAX_BBSE_CLASSES",
    "MAX_BCTS_VALUES",
    "fold_known_prior",
    "identity_calibration",
    "out_of_fold_top1",
    "reweight",
    "select_calibration",
    "shifted_counts",
    "shifted_priors",
    "shifted_subset",
    "standard_shifts",
    "uniform_prior",
]
