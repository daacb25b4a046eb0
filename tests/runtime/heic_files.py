"""HEIC test files, written by pillow-heif in a child interpreter.

Why a child: once `usearch` is imported (the approximate index; pytest imports it while collecting
tests/runtime/test_library_vectors.py), pillow-heif's x265 *encoder* fails in the same process ("x265 encoder could not
be opened with the given parameters"; usearch 2.26.6, pillow-heif 1.9.0). Decoding, the only thing clipedge does with
HEIC, is not affected (tests/runtime/test_heif.py and test_library_update.py decode after usearch is loaded).
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

from PIL import Image

_WRITER = """
import io, sys
import pillow_heif
from PIL import Image
path, orientation, quality = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
heif_file = pillow_heif.from_pillow(Image.open(io.BytesIO(sys.stdin.buffer.read())))
if orientation:
    exif = Image.Exif()
    exif[0x0112] = orientation
    heif_file.info["exif"] = exif.tobytes()
heif_file.save(path, quality=quality)
"""


def save_heic(image: Image.Image, path: str | Path, orientation: int | None = None, quality: int = 95) -> None:
    """`image` as a HEIC file at `path` (pillow_heif's own API, not the opener the runtime registers), with an EXIF
    orientation tag when given."""
    png = io.BytesIO()
    image.save(png, "PNG")
    subprocess.run([sys.executable, "-c", _WRITER, str(path), str(orientation or 0), str(quality)],
                   input=png.getvalue(), check=True, timeout=120)
