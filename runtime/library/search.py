"""Searching a catalogue: exact up to `EXACT_SEARCH_UP_TO` rows (the reference), approximate above it.

The approximate index (`vectors.usearch` beside the catalogue, clipedge.runtime.library.vectors) is a cache of the
catalogue's embeddings: the catalogue's `ann_generation` says which committed state it reflects, and a stale or
missing one is never used (search falls back to exact, with a warning, until `index update` refreshes it). An
update changes it in place (the rows it removed and added) when it was current, and rebuilds it otherwise, reading
the rows in chunks so a million-row index is never one float32 matrix in memory.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from clipedge.runtime.errors import InputError
from clipedge.runtime.index import SearchHit, check_k, check_query_model, query_vector
from clipedge.runtime.library.catalogue import Catalogue
from clipedge.runtime.library.vectors import EXACT_SEARCH_UP_TO, ApproximateIndex, exact_top_k
from clipedge.runtime.scoring import l2_normalize

__all__ = ["ANN_FILE", "LibraryIndex", "refresh_search_index"]

ANN_FILE = "vectors.usearch"
log = logging.getLogger(__name__)


class LibraryIndex:
    """A catalogue opened for search (what `clipedge.runtime.library.open_index` returns for a version-3 index)."""

    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue
        self.model: dict[str, Any] = catalogue.model
        self._matrix: tuple[np.ndarray, list[int], list[str], list[bool]] | None = None
        self._ann: ApproximateIndex | None = None
        self._generation, self._count = catalogue.generation, catalogue.count
        self._lock = threading.Lock()
        catalogue.check_one_model()

    @classmethod
    def open(cls, directory: str | Path) -> LibraryIndex:
        return cls(Catalogue.open(directory))

    @property
    def count(self) -> int:
        self._follow_updates()
        return self._count

    def _follow_updates(self) -> None:
        """A server keeps an index open for days while a nightly `index update` commits to it from another process:
        each search reads the catalogue's generation (one primary-key lookup) and drops what it cached when it moved.
        The row count is cached too: SQLite's COUNT(*) walks the table, milliseconds at a million rows."""
        generation = self.catalogue.generation
        if generation == self._generation:
            return
        with self._lock:
            self.catalogue.check_one_model()
            self.model = self.catalogue.model
            self._matrix, self._ann = None, None
            self._generation, self._count = generation, self.catalogue.count

    @property
    def items(self) -> list[str]:
        """Every row's path as the user gave it, in path order."""
        _, _, paths, absolute = self._exact()
        return [self.catalogue.shown_path(p, a) for p, a in zip(paths, absolute, strict=True)]

    def check_model(self, runtime) -> None:
        check_query_model(self.model, runtime)

    def search(self, runtime, query: Any, k: int = 5) -> list[SearchHit]:
        """`query`: a text (str: always a text) or an image (Path, bytes, PIL image, array)."""
        check_k(k)
        self.check_model(runtime)
        return self.search_vector(query_vector(runtime, query), k)

    def search_vector(self, vector: np.ndarray, k: int = 5) -> list[SearchHit]:
        check_k(k)
        self._follow_updates()
        vector = l2_normalize(np.asarray(vector, np.float32).reshape(-1))
        width = int(self.model.get("embed_dim") or vector.shape[0])
        if vector.shape[0] != width:
            raise InputError(f"query has {vector.shape[0]} dimensions, the index {width}")
        ann = self._approximate()
        if ann is not None:
            keys, scores = ann.search(vector, k)
            where = self.catalogue.paths_of(keys)
            found = [(self.catalogue.shown_path(*where[int(key)]), score)
                     for key, score in zip(keys, scores, strict=True) if int(key) in where]
            return [SearchHit(item, float(score), rank) for rank, (item, score) in enumerate(found, 1)]
        matrix, _, paths, absolute = self._exact()
        positions, scores = exact_top_k(matrix, vector, k)
        return [SearchHit(self.catalogue.shown_path(paths[i], absolute[i]), float(s), rank)
                for rank, (i, s) in enumerate(zip(positions, scores, strict=True), 1)]

    def _exact(self) -> tuple[np.ndarray, list[int], list[str], list[bool]]:
        if self._matrix is None:
            self._matrix = self.catalogue.embeddings()
        return self._matrix

    def _approximate(self) -> ApproximateIndex | None:
        if self._ann is None and self._count > EXACT_SEARCH_UP_TO:
            path = self.catalogue.directory / ANN_FILE
            if path.is_file() and self.catalogue.meta("ann_generation") == str(self.catalogue.generation):
                # memory-mapped: pages are read as the graph is walked, not the whole file up front
                self._ann = ApproximateIndex.load(path, int(self.model.get("embed_dim") or 0), writable=False)
            else:
                log.warning("index %s has %d rows and no current approximate index: searching exactly (slow and "
                            "memory-hungry at this size); `clipedge index update` makes one", self.catalogue.directory,
                            self._count)
        return self._ann


def refresh_search_index(catalogue: Catalogue, generation_before: int, removed: set[int], changed: set[int]) -> str:
    """Bring `vectors.usearch` to the catalogue's current state after an update: nothing at or below the exact
    threshold (an old file is removed), the update's changes applied when the file reflected `generation_before`,
    else a rebuild. Returns what was done: "none", "removed", "updated", "rebuilt"."""
    path = catalogue.directory / ANN_FILE
    if catalogue.count <= EXACT_SEARCH_UP_TO:
        if not path.exists():
            return "none"
        path.unlink()
        with catalogue.transaction() as db:
            db.execute("DELETE FROM meta WHERE key = 'ann_generation'")
        return "removed"
    dim = int(catalogue.model.get("embed_dim") or 0)
    current = path.is_file() and catalogue.meta("ann_generation") == str(generation_before)
    if current:
        index, how = ApproximateIndex.load(path, dim, writable=True), "updated"
        stale = np.array(sorted(removed | changed), np.int64)
        if len(stale):
            index.remove(stale)
        if changed:
            ids, matrix = catalogue.embeddings_of(sorted(changed))
            if len(ids):
                index.add(ids, matrix)
    else:
        index, how = ApproximateIndex.create(dim), "rebuilt"
        for ids, matrix in catalogue.iter_embeddings():
            index.add(ids, matrix)
    index.save(path)
    with catalogue.transaction() as db:
        catalogue.set_meta("ann_generation", str(catalogue.generation), db)
    return how
