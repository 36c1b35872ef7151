"""Engine: devices, seeding, loops, optimisation."""

from .device import resolve_device, seed_everything
from .loops import make_loader, predict, train_one_epoch
from .optim import cosine_schedule, sgd

__all__ = ["cosine_schedule", "make_loader", "predict", "resolve_device", "seed_everything", "sgd", "train_one_epoch"]
