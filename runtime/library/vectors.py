"""Nearest rows of an embedding matrix: exact up to a measured size, approximate (usearch HNSW) beyond it (issue #35).

Why two searches: exact search reads every row for every query, so its time and the memory it keeps resident grow
with the library. That is the reference (its answer is *the* answer) and it stays while it is fast enough; past
`EXACT_SEARCH_UP_TO` rows a graph index answers in well under 10 ms at the price of recall a little under 1.0, and it
keeps vectors at 8 bits so a million photos fit in well under 1 GB (a 4 GB Raspberry Pi keeps working).

Why usearch: measured against faiss (HNSW flat and HNSW with 8-bit scalar quantisation) and hnswlib on the same
vectors (docs/search-scale.md, tests/scripts/bench_ann.py). It is the only one of the three that has all of: removal
of rows (faiss's HNSW has none), vectors stored at 8 bits (hnswlib stores float32 only: 2 GB at 1M x 512), a
memory-mapped read-only view of a saved index, and a small self-contained wheel for arm64 Linux.

Why the vectors are scaled before the 8-bit cast: usearch's own float->int8 cast multiplies by 127, which leaves a
512-wide unit vector (components around +-0.044) about a dozen levels out of 255, and recall@10 fell to 0.91-0.94.
Cosine similarity ignores a vector's length, so each vector is first divided by its largest |component|: every vector
then uses the full -127..127 range (recall@10 0.99 on the same data) and the scores stay cosines.

numpy is the only import at module level: usearch is imported when an approximate index is made or loaded, so a
runtime-only install that never grows past the threshold does not need it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from clipedge.runtime.atomic import publish
from clipedge.runtime.errors import InputError

__all__ = ["EXACT_SEARCH_UP_TO", "ApproximateIndex", "exact_top_k"]

# Exact search up to here, the approximate index beyond. Measured on the shared 2-core AMD EPYC VM (search-scale.md,
# tests/scripts/bench_ann.py, 512 dims, 200 queries one at a time, other jobs running): exact float32 search took a
# median of 8.0 ms at 10k rows and 16.4 ms at 100k (p99 31 ms), and its time grows linearly with the rows; 10 ms is
# passed at about 50k rows, where the float32 matrix is 100 MB. The HNSW index answers in 0.2-0.9 ms at those sizes.
EXACT_SEARCH_UP_TO: int = 50_000

# Rows scored per block in exact search: a float16 matrix is widened to float32 a block at a time (8 MB at 512 dims)
# rather than all at once, so searching a 1M float16 matrix (1 GB) never holds a 2 GB float32 copy.
_BLOCK_ROWS = 4096

# HNSW parameters, from the measurements in docs/search-scale.md (clustered unit vectors, 512 dims): 16 links per node
# and a construction breadth of 128. Search breadth 64 gave recall@10 0.96-0.99 up to 100k rows but 0.80-0.87 at 1M,
# 128 gave 0.92-0.93; 256 gave 0.962 at 1M with a median of 1.19 ms a query (p99 2.8 ms), so 256 is the default.
_CONNECTIVITY = 16
_EXPANSION_ADD = 128
_EXPANSION_SEARCH = 256
_INSTALL_HINT = "pip install usearch"


def exact_top_k(matrix: np.ndarray, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row positions (int64) and cosine scores (float32) of the `k` rows of `matrix` ([N, D] unit vectors, float32
    or float16) most similar to the unit `vector`, best first; fewer when N < k.

    Partial selection (`np.argpartition`, O(N)) then a sort of only the selected rows: a full argsort of 1M scores
    costs more than the matrix product. Ties are broken by the lower row position, so the answer is deterministic
    and equals a stable full sort: argpartition alone picks an arbitrary row among those tied at the k-th score."""
    matrix, vector = _check_exact_inputs(matrix, vector)
    n = matrix.shape[0]
    k = min(int(k), n)
    if k <= 0:
        return np.empty(0, np.int64), np.empty(0, np.float32)
    scores = _scores(matrix, vector)
    if k == n:
        chosen = np.arange(n, dtype=np.int64)
    else:
        part = np.argpartition(-scores, k - 1)[:k]
        threshold = scores[part].min()
        above = np.flatnonzero(scores > threshold)
        tied = np.flatnonzero(scores == threshold)[: k - len(above)]
        chosen = np.concatenate([above, tied]).astype(np.int64)
    order = np.lexsort((chosen, -scores[chosen]))
    chosen = chosen[order]
    return chosen, scores[chosen]


def _check_exact_inputs(matrix: np.ndarray, vector: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    matrix = np.asarray(matrix)
    vector = np.asarray(vector, dtype=np.float32)
    if matrix.ndim != 2:
        raise InputError(f"the embedding matrix must be 2-D [rows, dims], got shape {matrix.shape}")
    if vector.ndim != 1 or vector.shape[0] != matrix.shape[1]:
        raise InputError(f"query vector of shape {vector.shape} does not match the matrix's {matrix.shape[1]} "
                         "dimensions: was it made by another model?")
    return matrix, vector


def _scores(matrix: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """Cosine scores (float32) of every row; float32 matrices in one product, others a block at a time."""
    if matrix.dtype == np.float32:
        return matrix @ vector
    scores = np.empty(matrix.shape[0], np.float32)
    for start in range(0, matrix.shape[0], _BLOCK_ROWS):
        block = matrix[start:start + _BLOCK_ROWS]
        scores[start:start + len(block)] = block.astype(np.float32) @ vector
    return scores


def _usearch() -> Any:
    """The usearch module, or an InputError saying what to install (it is an optional dependency)."""
    try:
        from usearch import index as usearch_index
    except ImportError as err:
        raise InputError(f"an index of more than {EXACT_SEARCH_UP_TO:,} rows searches with usearch, which is not "
                         f"installed: {_INSTALL_HINT}") from err
    return usearch_index


def _to_int8(vectors: np.ndarray) -> np.ndarray:
    """Each row scaled so its largest |component| is 127, rounded to int8 (see the module's docstring: cosine ignores
    the scale, and the full range keeps recall). Zero or non-finite rows have no cosine and are refused."""
    peak = np.abs(vectors).max(axis=1, keepdims=True)
    if not np.all(np.isfinite(peak)) or np.any(peak == 0):
        raise InputError("vectors for the approximate index must be finite and non-zero (a zero vector has no cosine)")
    return np.rint(vectors * (np.float32(127) / peak)).astype(np.int8)


class ApproximateIndex:
    """An HNSW graph (usearch, cosine metric, vectors kept as int8) over int64 keys: add, remove, search, save, load.

    Keys are the caller's row ids (the catalogue's), not positions: rows can be removed and added without renumbering
    the rest. Adding a key that is present replaces its vector. Scores are cosines computed on the 8-bit vectors, so
    they differ from the exact cosine by about 0.001 to 0.005; re-score the returned keys exactly where that matters."""

    def __init__(self, index: Any, dim: int, writable: bool = True) -> None:
        """Use `create` or `load`; this wraps a usearch `Index` already made."""
        self._index = index
        self._dim = dim
        self._writable = writable

    @classmethod
    def create(cls, dim: int) -> ApproximateIndex:
        """An empty index for `dim`-wide vectors, with the measured parameters (module constants)."""
        if int(dim) <= 0:
            raise InputError(f"an index needs a positive vector width, got {dim}")
        module = _usearch()
        index = module.Index(ndim=int(dim), metric="cos", dtype="i8", connectivity=_CONNECTIVITY,
                             expansion_add=_EXPANSION_ADD, expansion_search=_EXPANSION_SEARCH)
        return cls(index, int(dim))

    @property
    def dim(self) -> int:
        """The vector width every add and search must have."""
        return self._dim

    def __len__(self) -> int:
        return int(len(self._index))

    def __contains__(self, key: object) -> bool:
        return bool(self._index.contains(int(key)))  # type: ignore[call-overload]

    def _check_writable(self) -> None:
        if not self._writable:
            raise InputError("this index was loaded read-only (a memory-mapped view): load it with writable=True "
                             "to add or remove rows")

    def _check_vectors(self, vectors: np.ndarray, what: str) -> np.ndarray:
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim == 1:
            vectors = vectors[None, :]
        if vectors.ndim != 2 or vectors.shape[1] != self._dim:
            raise InputError(f"{what} of shape {vectors.shape} do not match the index's {self._dim} dimensions: "
                             "were they made by another model?")
        return vectors

    def add(self, keys: np.ndarray, vectors: np.ndarray, threads: int = 0) -> None:
        """Add rows `vectors` [n, dim] under int64 `keys` [n]; a key already present gets the new vector.

        `threads`: 0 uses every core (a 1M build takes minutes on two); 1 makes the graph, and so every search
        result, reproducible from run to run, since concurrent inserts link nodes in an order that varies."""
        self._check_writable()
        keys = np.asarray(keys, dtype=np.int64).reshape(-1)
        vectors = self._check_vectors(vectors, "vectors")
        if len(keys) != len(vectors):
            raise InputError(f"{len(keys)} keys for {len(vectors)} vectors: give one key per row")
        if len(np.unique(keys)) != len(keys):
            raise InputError("the keys of one add must be distinct")
        if len(keys) == 0:
            return
        codes = _to_int8(vectors)
        present = np.asarray(self._index.contains(keys), dtype=bool).reshape(-1)
        if present.any():
            self._index.remove(keys[present])
        self._index.add(keys, codes, threads=int(threads))

    def remove(self, keys: np.ndarray) -> int:
        """Remove the rows under `keys` (absent keys are ignored); returns how many were removed. A removed key is
        never returned by `search` again, unless it is added anew."""
        self._check_writable()
        keys = np.asarray(keys, dtype=np.int64).reshape(-1)
        if len(keys) == 0:
            return 0
        present = keys[np.asarray(self._index.contains(keys), dtype=bool).reshape(-1)]
        if len(present) == 0:
            return 0
        self._index.remove(np.unique(present))
        return int(len(np.unique(present)))

    def search(self, vector: np.ndarray, k: int, breadth: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Keys (int64) and cosine scores (float32) of up to `k` rows nearest to `vector`, best first.

        `breadth`: candidates kept while walking the graph (HNSW's ef; default the measured 256, or k if larger).
        Wider is slower and closer to exact: embeddings, which cluster, need 64 up to 100k rows and more at 1M;
        vectors spread uniformly over the sphere have no neighbours to speak of and need ~2048 (docs/search-scale.md).
        One thread: a search command runs one query, and the graph walk is sequential anyway."""
        vector = self._check_vectors(vector, "the query vector")
        if vector.shape[0] != 1:
            raise InputError(f"search takes one query vector, got {vector.shape[0]}")
        k = min(int(k), len(self))
        if k <= 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        self._index.expansion_search = max(int(breadth or _EXPANSION_SEARCH), k)
        matches = self._index.search(_to_int8(vector)[0], k, threads=1)
        keys = np.asarray(matches.keys, dtype=np.int64)
        scores = (1.0 - np.asarray(matches.distances, dtype=np.float32)).astype(np.float32)
        order = np.lexsort((keys, -scores))  # best first; equal scores by lower key, as exact search does
        return keys[order], scores[order]

    def memory_bytes(self) -> int:
        """What usearch says the index holds in memory (graph and vectors); for a view, the mapped file's size."""
        return int(self._index.memory_usage)

    def save(self, path: str | Path) -> Path:
        """Write the index to `path` atomically: a temporary file beside it, synced, given the modes a plain write
        would give (`atomic.publish`: mkstemp makes 0600), then renamed over `path`. A reader (or a crash) sees the
        old file or the new one, never a part, and a failure leaves no temporary file."""
        path = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=".clipedge-tmp-", suffix=".usearch", dir=path.parent)
        os.close(fd)
        try:
            self._index.save(tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            publish(tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_directory(path.parent)
        return path

    @classmethod
    def load(cls, path: str | Path, dim: int, writable: bool = True) -> ApproximateIndex:
        """The index saved at `path`, for `dim`-wide vectors (InputError when it holds others).

        `writable=False` memory-maps the file (usearch's view): opening is instant and the pages are shared with the
        page cache, which is what a search command wants; a view cannot be added to or removed from. `writable=True`
        reads it into memory so `add` and `remove` work."""
        module = _usearch()
        path = Path(path)
        if not path.is_file():
            raise InputError(f"no approximate index at {path}")
        try:
            meta = module.Index.metadata(os.fspath(path))
        except (ValueError, RuntimeError) as err:
            raise InputError(f"{path} is not a usearch index (damaged or another format): rebuild the index") from err
        if meta is None:
            raise InputError(f"{path} is not a usearch index (damaged or another format): rebuild the index")
        if int(meta["dimensions"]) != int(dim):
            raise InputError(f"the index at {path} holds {meta['dimensions']}-wide vectors, not {dim}: it was built "
                             "by another model; rebuild it")
        index = module.Index(ndim=int(dim), metric="cos", dtype="i8", connectivity=_CONNECTIVITY,
                             expansion_add=_EXPANSION_ADD, expansion_search=_EXPANSION_SEARCH)
        if writable:
            index.load(os.fspath(path))
        else:
            index.view(os.fspath(path))
        return cls(index, int(dim), writable=writable)


def _fsync_directory(directory: Path) -> None:
    """Sync the directory so the rename itself survives a power cut (where the system allows opening one)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
