"""The per-epoch state of a stage-2 training, kept while it runs so that a killed run continues where it stopped.

Stage 1 has its run's ``checkpoint.pt``. A stage-2 classifier (cRT, LWS) is
saved only when it is finished, so while one trains its state after every
epoch goes to a file beside it (``classifiers/<name>.partial``).
Re-running the same ``longtail decouple`` command picks it up, if it was written
for the very same training (``key``: the checkpoint hash, the settings, the
learning rate), and the result is bitwise that of an uninterrupted run on CPU.
A file for another training is ignored and replaced; the file is removed when
the training ends.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..fs.atomic import save_torch_atomic
from ..safe_torch import load_tensors
from .rng import restore_rng_state, rng_state

log = logging.getLogger(__name__)


class PartialTraining:
    """Save and find the state of one training after each of its epochs.

    Args:
        path: the state file.
        key: what identifies the training (JSON-like values); a saved state with another key is not used.
    """

    def __init__(self, path: Path, key: dict[str, Any]) -> None:
        self.path = Path(path)
        self.key = key

    def load(self) -> dict[str, Any] | None:
        """The saved state (``epoch``: epochs done, ``modules``: state dicts) if it belongs to this training.

        The global random generators are restored from it as well; call this
        after everything that draws from them while setting up.
        """
        if not self.path.is_file():
            return None
        try:
            saved = load_tensors(self.path)
        except Exception:  # a file from a crashed write is not ours to trust: start afresh
            log.info("%s: unreadable; training from the start", self.path)
            return None
        if not isinstance(saved, dict) or saved.get("key") != self.key:
            return None
        log.info("%s: continuing after epoch %d", self.path, saved["epoch"])
        restore_rng_state(saved["rng"])
        return saved

    def save(self, epoch: int, modules: dict[str, Any]) -> None:
        """Record that ``epoch`` epochs are done, with the state dicts in ``modules`` and every random state."""
        save_torch_atomic(self.path, {"key": self.key, "epoch": epoch, "modules": modules, "rng": rng_state()})

    def discard(self) -> None:
        """The training finished: its state file is no longer needed."""
        self.path.unlink(missing_ok=True)
