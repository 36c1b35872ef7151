"""The two stages of the decoupling recipe as plain functions."""

from .decouple import (
    Features,
    choose_logit_adjustment,
    choose_tau,
    extract_features,
    fit_crt,
    fit_lws,
    fit_ncm,
    train_head,
)
from .joint import build_model, eval_transform, predict_logits, train_joint
from .retrain import retrain_on_images

__all__ = [
    "Features",
    "build_model",
    "choose_logit_adjustment",
    "choose_tau",
    "eval_transform",
    "extract_features",
    "retrain_on_images",
    "fit_crt",
    "fit_lws",
    "fit_ncm",
    "predict_logits",
    "train_head",
    "train_joint",
]
