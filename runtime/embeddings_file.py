"""Embeddings on disk with the order of their rows, so a .npy handed on alone is never a matrix of unknown rows.

`-o NAME.npy` writes the matrix and `NAME.json` beside it (`items`: one image path or text per row, in row order,
plus `kind` and the model that made them); `-o NAME.npz` holds both in one file (`embeddings`, `items`), loadable
with `np.load(path)` and no pickle.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clipedge.runtime.errors import InputError

__all__ = ["embeddings_path", "save_embeddings", "ROWS_VERSION"]

ROWS_VERSION = 1


def embeddings_path(output: str | Path) -> Path:
    """The file `-o` names, checked before any model runs: .npy (np.save's suffix, added when missing) or .npz."""
    path = Path(output)
    if path.suffix == "":
        return path.with_name(path.name + ".npy")
    if path.suffix not in (".npy", ".npz"):
        raise InputError(f"-o {output}: expected a .npy file (its rows' order goes in a .json beside it) or a .npz "
                         "(embeddings and items in one file)")
    return path


def save_embeddings(output: str | Path, embeddings: np.ndarray, items: Sequence[str], kind: str,
                    model: dict[str, Any]) -> list[Path]:
    """Write the embeddings and their rows' order; the paths written, the matrix first."""
    path = embeddings_path(output)
    if len(items) != len(embeddings):
        raise InputError(f"{len(items)} items for {len(embeddings)} embedding rows")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".npz":
        np.savez(path, embeddings=embeddings, items=np.asarray(list(items), dtype=str))
        return [path]
    np.save(path, embeddings)
    rows = path.with_suffix(".json")
    record = {"version": ROWS_VERSION, "embeddings": path.name, "kind": kind, "shape": list(embeddings.shape),
              "model": model, "items": list(items)}
    rows.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return [path, rows]
