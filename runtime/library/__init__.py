"""A photo library that grows (issue #35): the index's catalogue in SQLite, updated rather than rebuilt; folder
scanning with excludes and symlink loops handled; search that stays exact up to a measured size and approximate
beyond it; near-duplicate groups.

`open_index(directory)` is the one door for readers (CLI search, the server): it returns whatever the directory
holds, a catalogue (version 3) or a version-1/2 `index.json` index, behind the same search API.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["open_index"]


def open_index(directory: str | Path):
    """The index in `directory`, for searching: an object with `.model` (the identity dict of the model that made
    its rows), `.count` (rows), `.check_model(runtime)` (InputError when the runtime's model made other embeddings),
    `.search(runtime, query, k)` and `.search_vector(vector, k)` -> list[clipedge.runtime.index.SearchHit]."""
    from clipedge.runtime.index import EmbeddingIndex
    from clipedge.runtime.library.catalogue import CATALOGUE_FILE

    if (Path(directory) / CATALOGUE_FILE).is_file():
        from clipedge.runtime.library.search import LibraryIndex

        return LibraryIndex.open(directory)
    return EmbeddingIndex.load(directory)
