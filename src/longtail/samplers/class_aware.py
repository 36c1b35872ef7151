"""The official class-aware sampler: a blocked round-robin over the classes (Kang et al.'s code)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..config import Interval, option
from .base import EpochSampler, Labels, SamplerSpec, check_int, epoch_generator, power_law, register_sampler

MAX_BLOCK = 2**16


class ClassAwareSampler(EpochSampler):
    """The official blocked round-robin (``ClassAwareSampler`` of Kang et al.), vectorised.

    The epoch is a sequence of blocks of ``num_samples_cls`` images of one
    class. Blocks visit the classes in a cycle over a random permutation of
    them, reshuffled at every pass; inside a class, images come from a cycle
    over a random permutation of its images, reshuffled at every pass. Unlike
    the official iterators, whose state runs on across epochs, every epoch is
    drawn afresh from ``(seed, epoch)``, so epochs can be reproduced one by one.
    """

    def __init__(self, labels: Labels, num_samples_cls: int = 4, **kwargs) -> None:
        super().__init__(labels, **kwargs)
        self.num_samples_cls = check_int("num_samples_cls", num_samples_cls, 1)
        self._require_every_class("class-aware")

    def global_indices(self) -> torch.Tensor:
        generator = epoch_generator(self.seed, self.epoch)
        k, num_classes = self.num_samples_cls, len(self.class_counts)
        blocks = -(-self.num_samples // k)
        # Class of each block: passes over the classes, each pass a fresh permutation.
        passes = -(-blocks // num_classes)
        block_class = torch.rand(passes, num_classes, generator=generator).argsort(1).flatten()[:blocks]
        # How often the block's class was visited before it (0, 1, 2, ... per class).
        by_class = torch.argsort(block_class, stable=True)
        visits = torch.bincount(block_class, minlength=num_classes)
        first_visit = torch.repeat_interleave(torch.cumsum(visits, 0) - visits, visits)
        rank_in_class = torch.empty(blocks, dtype=torch.int64)
        rank_in_class[by_class] = torch.arange(blocks) - first_visit
        # Position of every draw in its class's stream of images.
        draw_class = block_class.repeat_interleave(k)[: self.num_samples]
        position = (rank_in_class.unsqueeze(1) * k + torch.arange(k)).flatten()[: self.num_samples]
        return self._cycled_images(draw_class, position, visits * k, generator)

    def _cycled_images(
        self, draw_class: torch.Tensor, position: torch.Tensor, needed: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """Image at ``position`` of each class's stream: passes over the class, each a fresh permutation.

        Args:
            draw_class, position: (M,) class and stream position of each draw.
            needed: (C,) stream length used per class this epoch.

        Returns:
            (M,) dataset indices.
        """
        counts = self.class_counts
        rounds = -(-needed // counts)  # passes over each class
        # One group per (class, pass), laid out class by class: group g holds counts[class] slots.
        group_class = torch.repeat_interleave(torch.arange(len(counts)), rounds)
        group_size = counts[group_class]
        group_start = torch.cumsum(group_size, 0) - group_size
        slot_group = torch.repeat_interleave(torch.arange(len(group_class)), group_size)
        slot_rank = torch.arange(len(slot_group)) - group_start[slot_group]
        slot_image = self.order[self.starts[group_class[slot_group]] + slot_rank]
        # Shuffle inside every group at once: one integer sort on (group, random 31-bit key).
        keys = slot_group * (1 << 31) + torch.randint(0, 1 << 31, (len(slot_group),), generator=generator)
        slot_image = slot_image[torch.sort(keys, stable=True).indices]
        first_group = torch.cumsum(rounds, 0) - rounds
        counts_of_draw = counts[draw_class]
        group = first_group[draw_class] + position // counts_of_draw
        return slot_image[group_start[group] + position % counts_of_draw]


@dataclass
class ClassAwareConfig:
    """<train|decouple>.class_aware: the block length."""

    num_samples_cls: int = option(
        4, "consecutive images per class visit (official: 4)", Interval(1, MAX_BLOCK, integer=True)
    )


def create(labels: Labels, section: Any, epochs: int | None, **common: Any) -> EpochSampler:
    return ClassAwareSampler(labels, section.num_samples_cls, **common)


SPEC = register_sampler(
    SamplerSpec(
        name="class_aware",
        label="Class-aware (blocked)",
        law="the official blocked round-robin: num_samples_cls images of one class per visit, classes cycled in a "
        "reshuffled order, each class's images cycled likewise",
        create=create,
        config=ClassAwareConfig,
        class_shares=lambda counts, section: power_law(counts, 0.0),
        renamed={"num_samples_cls": "num_samples_cls"},
    )
)
