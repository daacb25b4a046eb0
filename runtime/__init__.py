"""clipedge runtime: numpy + pillow + one interpreter (LiteRT or ONNX Runtime); never TensorFlow.

`load(bundle)` returns a `CLIPRuntime` (encode_images, encode_texts, similarity, classify). Interpreters are imported
by the function that opens a model, so `import clipedge.runtime` stays cheap on a Raspberry Pi. The interpreters'
native logs stay off the terminal unless asked for: `set_log_level("info")` or `CLIPEDGE_LOG=info`.
"""

from typing import Any

from clipedge.runtime.errors import (
    BackendError,
    BundleError,
    CheckpointError,
    ClipEdgeError,
    ExportError,
    ImageError,
    InputError,
    ModelOutputError,
    TextError,
)

# Public names and the module each lives in; imported on first use (PEP 562) so that `import clipedge.runtime`
# (and the CLI's --help) does not pay for numpy, Pillow, ftfy and regex up front: seconds on a Pi under load.
_LAZY = {
    "DEFAULT_TEMPLATE": "prompts", "CLIPRuntime": "clip_runtime", "Classification": "clip_runtime",
    "load": "clip_runtime", "EmbeddingIndex": "index", "SearchHit": "index",
    "PreprocessConfig": "preprocess", "load_image": "preprocess", "preprocess": "preprocess",
    "Tokenizer": "tokenizer", "set_log_level": "logs",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"clipedge.runtime.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'clipedge.runtime' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The lazy names too: `dir(clipedge.runtime)` and tab completion show `load`, `EmbeddingIndex`, ..."""
    return sorted({*__all__, *(name for name in globals() if name.startswith("__"))})


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
    "ModelOutputError",
    "PreprocessConfig",
    "SearchHit",
    "TextError",
    "Tokenizer",
    "load",
    "load_image",
    "preprocess",
    "set_log_level",
]
