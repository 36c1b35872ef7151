"""Stage-2 schedules that mean the same at any data size: ``decouple.<method>.batch_size=auto``.

The official stage-2 recipes (cRT 10 epochs, LWS 5, batch 512, Kang et al.
2020) were written for ImageNet-LT: 115,846 images, ~226 optimiser steps an
epoch, so LWS takes ~1,130 steps. On 2,478 images (the demo) the same epochs
at batch 512 are 4 steps each, 20 for all of LWS, and LWS stays near the joint
classifier. What transfers across data sizes is the number of steps, not the
epoch count alone.

``auto`` keeps a method's reference batch (512 for cRT and LWS, WB's 64,
LAS's 128) wherever the data gives at least :data:`STEPS_PER_EPOCH` steps an
epoch with it, and shrinks the batch below that, never under :data:`MIN_BATCH`:

    batch = min(reference, max(MIN_BATCH, N // STEPS_PER_EPOCH))

=================  ========  =====  =============  ==================
data               images    batch  steps / epoch  LWS steps (5 ep.)
=================  ========  =====  =============  ==================
ImageNet-LT        115,846   512    226            1,130 (official)
CIFAR-10-LT        12,406    193    64             320
the demo           2,478     38     65             325
300 samples        300       32     9              45
=================  ========  =====  =============  ==================

The constants rest on the demo's validation split (Fashion-MNIST-LT, 2,478
images; mean of seeds 0-2 of the demo recipe, docs/results/head_schedule.md,
``benchmarks/head_schedule.py``): LWS's validation macro is 77.7 at the
official batch (4 steps an epoch), 83.8 at 32 steps, 84.3 at 64 and 84.2 at
128 (it has converged); cRT and LAS move by less than a point from 32 steps on
(cRT is 1.0 lower at the official batch), and WB, a fine-tune at lr 0.01,
has 87.3 at its own batch 64, 87.0 at 38 (within the seeds' spread of 1.3 to
1.8) and 86.2 at 19: 64 steps an epoch, batch at least 32.

The scikit-learn estimator's own ``batch_size="auto"`` targets 32 steps an
epoch (:func:`longtail.sklearn.fitting.auto_batch_size`).

An explicit integer is used as it is: the paper's recipe is
``decouple.crt.batch_size=512 decouple.lws.batch_size=512``, as the shipped
``configs/imagenet_lt*.yaml``, ``places_lt_resnet152.yaml``,
``inat2018_resnet50.yaml`` and ``cifar*_lt_resnet32.yaml`` set it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

AUTO = "auto"
OFFICIAL_BATCH = 512  # the paper's stage-2 batch (cRT, LWS), for ImageNet-LT's 115,846 images
STEPS_PER_EPOCH = 64  # below this many steps an epoch at the reference batch, auto shrinks the batch
MIN_BATCH = 32  # ... but never below this (WB already loses validation accuracy at 32)


def auto_batch_size(num_samples: int, reference: int = OFFICIAL_BATCH) -> int:
    """``min(reference, max(MIN_BATCH, num_samples // STEPS_PER_EPOCH))``: the reference batch where the data
    gives it at least :data:`STEPS_PER_EPOCH` steps an epoch, else a smaller one (at least :data:`MIN_BATCH`).

    >>> auto_batch_size(115_846), auto_batch_size(2_478), auto_batch_size(300), auto_batch_size(12_406, 64)
    (512, 38, 32, 64)
    """
    return min(reference, max(MIN_BATCH, num_samples // STEPS_PER_EPOCH))


def resolve_batch_size(batch_size: int | str, num_samples: int, reference: int = OFFICIAL_BATCH) -> int:
    """A section's ``batch_size`` for ``num_samples`` training samples: an integer as it is, ``"auto"`` by
    :func:`auto_batch_size` with the section's ``reference``."""
    if batch_size == AUTO:
        return auto_batch_size(num_samples, reference)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise ValueError(f"batch_size={batch_size!r}: expected an integer or {AUTO!r}")
    return batch_size


def resolved_section(section: Any, num_samples: int) -> Any:
    """A copy of a trained head's section (a :class:`~longtail.config.HeadTrainingConfig`) whose ``batch_size``
    is an integer for ``num_samples`` training samples; its class's ``reference_batch_size`` is auto's cap."""
    reference = getattr(section, "reference_batch_size", OFFICIAL_BATCH)
    return dataclasses.replace(section, batch_size=resolve_batch_size(section.batch_size, num_samples, reference))


def steps_per_epoch(num_samples: int, batch_size: int) -> int:
    """Optimiser steps of one epoch of ``num_samples`` draws in batches of ``batch_size`` (the last partial
    batch dropped, but never the only one: see :func:`~longtail.engine.loops.make_loader`)."""
    return max(1, num_samples // batch_size)
