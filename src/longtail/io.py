"""Moved to :mod:`longtail.fs.atomic`; this name stays until ``longtail.config`` imports from there."""

from .fs.atomic import write_text_atomic

__all__ = ["write_text_atomic"]
