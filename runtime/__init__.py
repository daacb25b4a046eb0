"""clipedge runtime: numpy + pillow + one interpreter (LiteRT or ONNX Runtime); never TensorFlow.

`load(bundle)` returns a `CLIPRuntime` (encode_images, encode_texts, similarity, classify). Interpreters are imported
by the function that opens a model, so `import clipedge.runtime` stays cheap on a Raspberry Pi.
"""

from clipedge.runtime.clip import DEFAULT_TEMPLATE, Classification, CLIPRuntime, load
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
from clipedge.runtime.index import EmbeddingIndex, SearchHit
from clipedge.runtime.preprocess import PreprocessConfig, load_image, preprocess
from clipedge.runtime.tokenizer import Tokenizer

__all__ = [
    "DEFAULT_TEMPLATE",
    "BackendError",
    "BundleError",
    "CLIPRuntime",
    "CheckpointError",
    "Classification",
    "ClipEdgeError",
    "EmbeddingIndex",
    "ExportError",
    "ImageError",
    "InputError",
    "PreprocessConfig",
    "SearchHit",
    "TextError",
    "Tokenizer",
    "load",
    "load_image",
    "preprocess",
]
