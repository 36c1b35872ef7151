"""The error of export and predict: an artifact that is missing, not ours, or a package that is not installed."""

from ..errors import LongtailError


class ExportError(LongtailError):
    """A model artifact that cannot be written or read, or an export that cannot be done."""
