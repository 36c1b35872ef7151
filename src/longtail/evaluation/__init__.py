"""Evaluation: accuracy per class and shot group, calibration. (The results table is :mod:`.table`.)"""

from .metrics import SUMMARY_KEYS, accuracy_summary, per_class_accuracy, shot_groups

__all__ = ["SUMMARY_KEYS", "accuracy_summary", "per_class_accuracy", "shot_groups"]
