"""One exception family for all of clipedge, so callers can catch `ClipEdgeError` and nothing else.

Every message names the bad value and says what to do; deep library tracebacks are chained
(`raise ... from err`) rather than shown as the error itself.
"""

from __future__ import annotations

__all__ = [
    "ClipEdgeError",
    "BundleError",
    "InputError",
    "ImageError",
    "TextError",
    "BackendError",
    "ModelOutputError",
    "CheckpointError",
    "ExportError",
]


class ClipEdgeError(Exception):
    """Base of every error clipedge raises on purpose."""


class BundleError(ClipEdgeError):
    """A bundle directory is missing files, damaged (sha256), or from a newer format version."""


class InputError(ClipEdgeError, ValueError):
    """An input to the runtime (image, text, array) is unusable; the message names which one."""


class ImageError(InputError):
    """An image cannot be read or is of an unsupported size, mode, dtype or shape."""


class TextError(InputError):
    """A text is empty, not a string, or too long when truncation was refused."""


class BackendError(ClipEdgeError):
    """No interpreter can load or run a model file, or the requested accelerator is unavailable."""


class ModelOutputError(ClipEdgeError):
    """A model file ran but gave NaN or infinity: never handed on as embeddings or probabilities (the message names
    the file). Not a BackendError: the interpreter worked, so its log has nothing to add."""


class CheckpointError(ClipEdgeError):
    """A checkpoint cannot be found, or its tensors do not match the architecture (the tensor is named)."""


class ExportError(ClipEdgeError):
    """A conversion failed or produced something the edge cannot run (e.g. Flex ops)."""
