"""A small embedding index for image search on a device: brute-force cosine over a float32 matrix.

Saved as `embeddings.npy` + `index.json` (item names, the bundle's model sha256, format and precision), so an index is
never searched with queries from a different model. Brute force is the right tool up to ~10^5 items on a Pi:
one matrix-vector product, no extra dependency.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clipedge.runtime.errors import BundleError, InputError
from clipedge.runtime.scoring import l2_normalize

__all__ = ["EmbeddingIndex", "SearchHit", "INDEX_VERSION"]

INDEX_VERSION = 1
EMBEDDINGS_FILE = "embeddings.npy"
META_FILE = "index.json"


@dataclass(frozen=True)
class SearchHit:
    item: str
    score: float  # cosine similarity
    rank: int


@dataclass
class EmbeddingIndex:
    items: list[str]
    embeddings: np.ndarray  # [N, D] unit vectors, float32
    model: dict[str, Any]  # {"sha256", "format", "precision", "embed_dim"}: which model made them

    @classmethod
    def build(cls, runtime, images: Sequence[str | Path], batch_size: int = 32,
              progress: Callable[[int], None] | None = None) -> EmbeddingIndex:
        """Embed image files with `runtime` (a CLIPRuntime). `progress(n)` is called after each batch of n."""
        paths = [str(p) for p in images]
        if not paths:
            raise InputError("no images to index")
        parts = []
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            parts.append(runtime.encode_images(chunk))
            if progress:
                progress(len(chunk))
        return cls(paths, np.concatenate(parts), model_identity(runtime))

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / EMBEDDINGS_FILE, self.embeddings.astype(np.float32))
        meta = {"version": INDEX_VERSION, "items": self.items, "model": self.model}
        (directory / META_FILE).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> EmbeddingIndex:
        directory = Path(directory)
        if not (directory / META_FILE).is_file() or not (directory / EMBEDDINGS_FILE).is_file():
            raise BundleError(f"{directory} is not a clipedge index (needs {META_FILE} and {EMBEDDINGS_FILE})")
        try:
            meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
            embeddings = np.load(directory / EMBEDDINGS_FILE, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise BundleError(f"index {directory} is damaged: {err}") from err
        if meta.get("version", 0) > INDEX_VERSION:
            raise BundleError(f"index {directory} is version {meta['version']}; upgrade clipedge to read it")
        if embeddings.ndim != 2 or len(embeddings) != len(meta["items"]):
            raise BundleError(f"index {directory}: {embeddings.shape} embeddings for {len(meta['items'])} items")
        return cls(list(meta["items"]), embeddings.astype(np.float32), meta.get("model", {}))

    def search(self, runtime, query: Any, k: int = 5) -> list[SearchHit]:
        """`query`: a text (str) or an image (path, bytes, PIL image, array). Text-vs-image needs the runtime's
        text tower; image-vs-image only the image tower."""
        if k < 1:
            raise InputError(f"k must be >= 1, got {k}")
        identity = model_identity(runtime)
        if self.model.get("sha256") and identity.get("sha256") != self.model.get("sha256"):
            raise InputError(
                f"this index was built with model {self.model.get('sha256', '')[:12]} and the bundle loaded is "
                f"{identity.get('sha256', '')[:12]}: rebuild the index with this bundle"
            )
        if isinstance(query, str) and not Path(query).is_file():
            vector = runtime.encode_texts([query])
        else:
            vector = runtime.encode_images([query])
        return self.search_vector(vector[0], k)

    def search_vector(self, vector: np.ndarray, k: int = 5) -> list[SearchHit]:
        vector = l2_normalize(np.asarray(vector, np.float32).reshape(-1))
        if vector.shape[0] != self.embeddings.shape[1]:
            raise InputError(f"query has {vector.shape[0]} dimensions, the index {self.embeddings.shape[1]}")
        scores = self.embeddings @ vector
        order = np.argsort(-scores, kind="stable")[:k]
        return [SearchHit(self.items[i], float(scores[i]), rank) for rank, i in enumerate(order, 1)]


def model_identity(runtime) -> dict[str, Any]:
    """Embeddings are comparable when they come from the same checkpoint: the bundle's source sha256 says so
    (precisions and formats of one checkpoint share an embedding space, within their fidelity)."""
    model = runtime.manifest.data.get("model", {})
    return {"sha256": model.get("sha256", ""), "name": model.get("name", ""), "format": runtime.format,
            "precision": runtime.precision, "embed_dim": runtime.manifest.embed_dim}
