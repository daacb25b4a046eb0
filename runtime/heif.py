"""HEIC/HEIF photos (issue #35) through pillow-heif, an optional Pillow plugin (`pip install 'clipedge[heif]'`).

iPhones have written HEIC by default since iOS 11, so a photo library copied off a phone is mostly `.heic`; Pillow
cannot read it by itself. pillow-heif adds an opener to Pillow, after which a `.heic` file goes through the very same
`clipedge.runtime.preprocess` path as a JPEG (size check, decode budget, RGB, resize, crop): nothing else changes.

Standard library only at import time, and `register_heif` imports pillow-heif only on its first call (it pulls in
Pillow and libheif), so `clipedge --help` and folder scanning stay cheap. pillow-heif is never required.

EXIF orientation: libheif applies the file's own transforms (`irot`/`imir`, which is where a HEIC keeps a phone's
rotation) while decoding, and pillow-heif then rewrites the EXIF orientation it hands Pillow to 1 (the tag's old
value is kept in `info["original_orientation"]`). So `preprocess`'s `ImageOps.exif_transpose` step finds nothing to
do and the rotation is applied once, not twice (tests/runtime/test_heif.py checks it on a rotated HEIC).
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from typing import IO, Any

__all__ = ["AVIF_SUFFIXES", "HEIF_SUFFIXES", "avif_available", "heif_available", "heif_hint", "optional_suffixes",
           "register_heif"]

log = logging.getLogger(__name__)

# What pillow-heif's opener registers with Pillow for HEIF stills: .heic (Apple's HEVC-coded HEIF), .heif (the
# generic name), .hif (what Canon and Fujifilm cameras write for HEIF). The sequence forms (.heics, .heifs) are
# bursts and animations, not photos of a library, and are left out.
HEIF_SUFFIXES = frozenset({".heic", ".heif", ".hif"})
# AVIF is read by Pillow itself (recent versions, when built with libavif: the PIL._avif module); pillow-heif 1.x
# dropped its own AVIF opener. So .avif counts where that module is present, with or without pillow-heif.
AVIF_SUFFIXES = frozenset({".avif"})

# The ISO-BMFF `ftyp` brands of HEIF stills (bytes 8..12 of the file): what `heif_hint` recognises in a file
# Pillow could not open, to say which package would open it.
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"})

_lock = threading.Lock()
_registered: bool | None = None  # None: not tried yet; then whether pillow-heif's opener is in Pillow


def heif_available() -> bool:
    """Whether pillow-heif is installed, without importing it (a scan decides its suffixes with this)."""
    return _registered if _registered is not None else importlib.util.find_spec("pillow_heif") is not None


def avif_available() -> bool:
    """Whether this Pillow reads AVIF (its optional `_avif` extension module is present), without importing it."""
    try:
        return importlib.util.find_spec("PIL._avif") is not None
    except (ImportError, ValueError):  # no PIL at all
        return False


def optional_suffixes() -> frozenset[str]:
    """The image suffixes that optional decoders add to clipedge.runtime.datasets.IMAGE_SUFFIXES on this install."""
    return (HEIF_SUFFIXES if heif_available() else frozenset()) | (AVIF_SUFFIXES if avif_available() else frozenset())


def register_heif() -> bool:
    """Register pillow-heif's HEIF opener with Pillow, once per process; True when HEIF files can now be opened.

    Called before every `Image.open` in clipedge.runtime.preprocess: after the first call it is one global read, and
    when pillow-heif is absent the failed import is not retried. An opener that the application registered itself
    (with its own options) is kept as it is, and no pillow-heif option is changed, since they are process-wide."""
    global _registered
    if _registered is not None:
        return _registered
    with _lock:
        if _registered is None:
            _registered = _register()
    return _registered


def _register() -> bool:
    try:
        import pillow_heif
        from PIL import Image
    except (ImportError, OSError) as err:  # OSError: installed, but its libheif cannot be loaded
        log.debug("HEIF support off: pillow-heif cannot be imported (%s)", err)
        return False
    if "HEIF" not in Image.OPEN:
        pillow_heif.register_heif_opener()
    return True


def heif_hint(fp: IO[bytes] | Any) -> str:
    """For an error message about a file Pillow could not open: a sentence naming pillow-heif when the bytes are a
    HEIF image and no opener is registered, else "". Reads the first 12 bytes of a seekable file object."""
    if _registered:
        return ""
    try:
        fp.seek(0)
        head = fp.read(12)
    except (AttributeError, OSError, ValueError):
        return ""
    if len(head) == 12 and head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return "; it is a HEIF/HEIC image: pip install 'clipedge[heif]' (pillow-heif) to read it"
    return ""
