"""Embeddings on disk with the order of their rows, so a .npy handed on alone is never a matrix of unknown rows.

`-o NAME.npy` writes the matrix and `NAME.json` beside it (`items`: one image path or text per row, in row order,
plus `kind` and the model that made them); `-o NAME.npz` holds both in one file (`embeddings`, `items`), loadable
with `np.load(path)` and no pickle.

Writes are atomic (clipedge.runtime.atomic): each file goes to a temporary file in the same directory, is synced,
and both are renamed into place only once both are written, so a failed write (a full disk) leaves an earlier
`NAME.npy` and `NAME.json` whole and matching, and no temporary file behind.

File names that are not valid UTF-8 (Python holds their bytes as lone surrogates, `os.fsdecode`) are written into
the .json with `ensure_ascii=True`: the file is plain ASCII, such a name appears as `"\\udcff.jpg"`, and
`os.fsencode(json.load(f)["items"][i])` gives the file's exact bytes back. Every other name reads the same, only
non-ASCII letters are escaped (`"\\u00e9"`): any JSON reader decodes them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clipedge.runtime.atomic import write_files_atomically
from clipedge.runtime.errors import ClipEdgeError, InputError

__all__ = ["embeddings_path", "save_embeddings", "ROWS_VERSION"]

ROWS_VERSION = 1
_TMP_PREFIX = ".clipedge-embed-tmp-"


def embeddings_path(output: str | Path) -> Path:
    """The file `-o` names, checked before any model runs: .npy (np.save's suffix, added when missing) or .npz;
    a directory (an existing one, or a name ending in a slash) is refused rather than written beside."""
    text = os.fspath(output)
    path = Path(output)
    if text.endswith(("/", os.sep)) or path.is_dir():
        raise InputError(f"-o {text} names a directory; give a file name like {path / 'embeddings.npy'}")
    if path.suffix == "":
        return path.with_name(path.name + ".npy")
    if path.suffix not in (".npy", ".npz"):
        raise InputError(f"-o {output}: expected a .npy file (its rows' order goes in a .json beside it) or a .npz "
                         "(embeddings and items in one file)")
    return path


def save_embeddings(output: str | Path, embeddings: np.ndarray, items: Sequence[str], kind: str,
                    model: dict[str, Any]) -> list[Path]:
    """Write the embeddings and their rows' order, atomically; the paths written, the matrix first."""
    path = embeddings_path(output)
    if len(items) != len(embeddings):
        raise InputError(f"{len(items)} items for {len(embeddings)} embedding rows")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".npz":
            names = np.asarray(list(items), dtype=str)
            return write_files_atomically(
                [(path, lambda f: np.savez(f, embeddings=embeddings, items=names))], _TMP_PREFIX)
        record = {"version": ROWS_VERSION, "embeddings": path.name, "kind": kind, "shape": list(embeddings.shape),
                  "model": model, "items": list(items)}
        text = json.dumps(record, indent=1, ensure_ascii=True) + "\n"  # ASCII: see the module's docstring
        return write_files_atomically([(path, lambda f: np.save(f, embeddings)),
                                       (path.with_suffix(".json"), text.encode("ascii"))], _TMP_PREFIX)
    except OSError as err:
        raise ClipEdgeError(f"cannot write {path}: {err.strerror or err}; files already there are left as they "
                            "were") from err
