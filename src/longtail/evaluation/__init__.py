"""Evaluation: accuracy per class and shot group, and the results table."""

from .metrics import accuracy_summary, per_class_accuracy, shot_groups
from .table import METHOD_LABELS, METHOD_ORDER, format_table

__all__ = [
    "METHOD_LABELS",
    "METHOD_ORDER",
    "accuracy_summary",
    "format_table",
    "per_class_accuracy",
    "shot_groups",
]
