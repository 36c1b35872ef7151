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
from .finetune import finetune_crt
from .joint import build_model, eval_transform, predict_logits, train_joint

__all__ = [
    "Features",
    "build_model",
    "choose_logit_adjustment",
    "choose_tau",
    "eval_transform",
    "extract_features",
    "finetune_crt",
    "fit_crt",
    "fit_lws",
    "fit_ncm",
    "predict_logits",
    "train_head",
    "train_joint",
]
