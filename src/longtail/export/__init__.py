"""Export a run's backbone with a re-balanced classifier folded in, as one plain-PyTorch file, and predict with it.

- :func:`export_run`: ``longtail export``; the ``.pt2`` artifact (and ONNX).
- :func:`load_artifact`: the module and metadata back (plain ``torch.export.load`` works too).
- :func:`predict_images`: ``longtail predict``; top-k classes of image files.
- :func:`fold_head`: any stage-2 head as one linear layer on (pre-processed) features.
"""

from .artifact import FORMAT, FORMAT_VERSION, ExportedClassifier, load_artifact, read_metadata, save_artifact
from .build import ExportResult, default_out, export_methods, export_run, input_spec
from .errors import ExportError
from .fold import FoldedHead, fold_head
from .onnx_file import require_onnx, save_onnx
from .predict import Prediction, format_predictions, predict_images, predict_with_prior, read_image

__all__ = [
    "export_methods",
    "FORMAT",
    "FORMAT_VERSION",
    "ExportError",
    "ExportResult",
    "ExportedClassifier",
    "FoldedHead",
    "Prediction",
    "default_out",
    "export_run",
    "fold_head",
    "format_predictions",
    "input_spec",
    "load_artifact",
    "predict_images",
    "predict_with_prior",
    "read_image",
    "read_metadata",
    "require_onnx",
    "save_artifact",
    "save_onnx",
]
