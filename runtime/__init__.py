"""clipedge runtime: numpy + pillow + one interpreter (LiteRT or ONNX Runtime); never TensorFlow.

Heavy pieces (interpreters) are imported inside the functions that need them, so `import clipedge.runtime`
is cheap on a Raspberry Pi.
"""

from clipedge.runtime.errors import (
    BackendError,
    BundleError,
    CheckpointError,
    ClipEdgeError,
    ExportError,
    ImageError,
    InputError,
    TextError,
)

__all__ = [
    "BackendError",
    "BundleError",
    "CheckpointError",
    "ClipEdgeError",
    "ExportError",
    "ImageError",
    "InputError",
    "TextError",
]
