"""Reading a .npy file that may be damaged or hostile (an index's embeddings, a bundle's token table).

`np.load` trusts the header: a damaged one raises whatever its parser meets (ValueError, but also tokenize's
TokenError and SyntaxError, found by the fuzz test), and one that claims 10^12 rows makes numpy allocate them
before it reads a byte. Here the header is read first, the size it claims is checked against the file's, and only
then are the data read; every failure is a ValueError with the reason, for the caller to name its file in.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

__all__ = ["load_npy"]


def load_npy(path: Path) -> np.ndarray:
    """The array in `path`, no pickles; ValueError when the file is not a well-formed .npy of the size it claims."""
    try:
        with Path(path).open("rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unknown .npy version {version}")
            if dtype.hasobject:
                raise ValueError("it holds Python objects (pickles), which are never loaded")
            expected = math.prod(shape) * dtype.itemsize
            available = Path(path).stat().st_size - f.tell()
            if expected != available:
                raise ValueError(f"its header claims {shape} {dtype} ({expected} bytes) but {available} bytes follow")
            data = np.fromfile(f, dtype=dtype, count=math.prod(shape))
    except ValueError:
        raise
    except Exception as err:  # the header parser's own exceptions (TokenError, SyntaxError, ...), OSError
        raise ValueError(f"{type(err).__name__}: {err}") from err
    return data.reshape(shape, order="F" if fortran else "C")
