"""The index's catalogue: one SQLite file (`catalogue.sqlite`) holding every indexed image's path, size, mtime,
content hash, the model that embedded it and its embedding.

Why SQLite: an index that grows by a few photos a day must not be rewritten whole (the version-2 `index.json` +
matrix was), and a Pi's update killed by a power cut must leave the last committed state. SQLite, in the standard
library, gives both: each batch of embeddings is one transaction, and a rerun continues from what was committed.
The rollback journal (SQLite's default), not WAL: readers then need only read permission, so a web server running
as another user can search an index it cannot write.

Paths are stored relative to the index's directory (an index moved together with its photos still names files that
exist) with a flag saying whether the user gave them absolute, so results print the way the user gave them.

Every row names its model (`models`: the bundle's source sha256, format, precision, width). One catalogue holds one
current model: an update with another bundle re-embeds the other model's rows, and until that update has finished
(it can be killed and resumed) search refuses the index rather than mixing the two models' scores.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clipedge.runtime.errors import BundleError, ClipEdgeError, InputError

__all__ = ["CATALOGUE_FILE", "CATALOGUE_VERSION", "Catalogue", "Row", "from_sql", "model_key", "to_sql"]

CATALOGUE_FILE = "catalogue.sqlite"
CATALOGUE_VERSION = 3  # index versions 1 and 2 were index.json + a .npy matrix (clipedge.runtime.index)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS models (
    id INTEGER PRIMARY KEY, sha256 TEXT NOT NULL, name TEXT NOT NULL, format TEXT NOT NULL,
    precision TEXT NOT NULL, embed_dim INTEGER NOT NULL, UNIQUE (sha256, format, precision));
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL, absolute INTEGER NOT NULL, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL, model_id INTEGER NOT NULL REFERENCES models(id),
    embedding BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS images_sha256 ON images (sha256);
CREATE TABLE IF NOT EXISTS skipped (
    path TEXT PRIMARY KEY, absolute INTEGER NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    error TEXT NOT NULL);
"""


def to_sql(path: str) -> str | bytes:
    """A path for SQLite: text, or its bytes where the name is not valid UTF-8 (a file system's bytes decoded with
    surrogateescape, which SQLite's UTF-8 text cannot hold). Both read back the same with `from_sql`."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return os.fsencode(path)


def from_sql(value: str | bytes) -> str:
    return os.fsdecode(value) if isinstance(value, bytes) else value


def model_key(model: dict[str, Any]) -> tuple[str, str, str]:
    """What makes two rows comparable: one checkpoint, run in one format at one precision (issue #35: rows from
    another model or precision are never mixed)."""
    return (str(model.get("sha256", "")), str(model.get("format", "")), str(model.get("precision", "")))


@dataclass(frozen=True)
class Row:
    """One indexed image as stored (path relative to the index directory)."""

    id: int
    path: str
    absolute: bool
    size: int
    mtime_ns: int
    sha256: str
    model_id: int


class Catalogue:
    """An open catalogue. `Catalogue.open(directory, create=True)` makes one; writes go through `transaction()`."""

    def __init__(self, directory: Path, connection: sqlite3.Connection) -> None:
        self.directory = directory
        self.db = connection

    # ---- opening ------------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, directory: str | Path, create: bool = False, file_name: str = CATALOGUE_FILE) -> Catalogue:
        """`file_name`: another name while a version-2 index in the same directory is being replaced (it stays the
        index until the new catalogue is whole: `clipedge.runtime.cli.index_commands`)."""
        directory = Path(directory)
        path = directory / file_name
        if not path.is_file() and not create:
            raise BundleError(f"{directory} is not a clipedge index (it has no {CATALOGUE_FILE})")
        if create:
            directory.mkdir(parents=True, exist_ok=True)
        try:
            # isolation_level=None: transactions are begun and committed here, explicitly, one per batch
            db = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
            if create:
                db.executescript(_SCHEMA)
            catalogue = cls(directory, db)
            version = catalogue.meta("version")
            if version is None and create:
                catalogue.set_meta("version", str(CATALOGUE_VERSION))
            elif version is None or not version.isdigit():
                raise BundleError(f"index {directory} is damaged: {CATALOGUE_FILE} has no version; rebuild the index")
            elif int(version) > CATALOGUE_VERSION:
                raise BundleError(f"index {directory} is version {version}; upgrade clipedge to read it")
            db.execute("SELECT id, path, absolute, size, mtime_ns, sha256, model_id, embedding FROM images LIMIT 0")
        except sqlite3.OperationalError as err:  # cannot open or write: permissions, a full disk, a lock held
            raise ClipEdgeError(f"cannot use the index {directory}: {err}") from err
        except sqlite3.DatabaseError as err:
            raise BundleError(f"index {directory} is damaged: {file_name} is not a readable catalogue ({err}); "
                              "rebuild the index") from err
        return catalogue

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Catalogue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT: a kill inside leaves the state before it (SQLite's journal rolls it back)."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
                self.db.execute("COMMIT")
            except BaseException:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as err:  # a full disk, an I/O error, a lock held past the timeout
            raise ClipEdgeError(f"cannot write the index {self.directory}: {err}; it keeps its last committed "
                                "state") from err

    # ---- meta and models ----------------------------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str, db: sqlite3.Connection | None = None) -> None:
        (db or self.db).execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def meta_json(self, key: str, default: Any = None) -> Any:
        value = self.meta(key)
        try:
            return default if value is None else json.loads(value)
        except ValueError as err:
            raise BundleError(f"index {self.directory} is damaged: its {key!r} is not JSON; rebuild the index") \
                from err

    @property
    def generation(self) -> int:
        """Counts committed changes to the rows: a search structure made at another generation is stale."""
        return int(self.meta("generation") or 0)

    def bump_generation(self, db: sqlite3.Connection) -> None:
        self.set_meta("generation", str(self.generation + 1), db)

    def model_id(self, model: dict[str, Any], db: sqlite3.Connection) -> int:
        """The id of `model` in `models`, added when new."""
        sha, fmt, precision = model_key(model)
        db.execute("INSERT OR IGNORE INTO models (sha256, name, format, precision, embed_dim) VALUES (?, ?, ?, ?, ?)",
                   (sha, str(model.get("name", "")), fmt, precision, int(model.get("embed_dim") or 0)))
        return db.execute("SELECT id FROM models WHERE sha256 = ? AND format = ? AND precision = ?",
                          (sha, fmt, precision)).fetchone()[0]

    @property
    def model(self) -> dict[str, Any]:
        """The current model: the one the last update embedded with ({} for a new catalogue)."""
        return self.meta_json("model", {})

    def models_in_rows(self) -> dict[int, int]:
        """model id -> rows it made."""
        return dict(self.db.execute("SELECT model_id, COUNT(*) FROM images GROUP BY model_id").fetchall())

    def check_one_model(self) -> None:
        """Search never mixes two models' rows: an update that changes the model must finish first."""
        models = self.models_in_rows()
        if len(models) > 1:
            raise InputError(f"index {self.directory} holds rows of {len(models)} models: an update that changes the "
                             "model was interrupted; run `clipedge index update` again to finish it")

    # ---- rows -----------------------------------------------------------------------------------------------
    @property
    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM images").fetchone()[0]

    def rows(self) -> dict[str, Row]:
        """Every row without its embedding, by stored path."""
        return {from_sql(r[1]): Row(r[0], from_sql(r[1]), bool(r[2]), r[3], r[4], r[5], r[6]) for r in self.db.execute(
            "SELECT id, path, absolute, size, mtime_ns, sha256, model_id FROM images")}

    def skipped(self) -> dict[str, tuple[int, int, str]]:
        """Files an earlier update could not read: path -> (size, mtime_ns, error); retried when they change."""
        return {from_sql(r[0]): (r[1], r[2], r[3])
                for r in self.db.execute("SELECT path, size, mtime_ns, error FROM skipped")}

    def embedding_of(self, sha256: str, model_id: int) -> bytes | None:
        """A stored embedding of the same bytes by the same model (a copy or a renamed file: nothing to embed)."""
        row = self.db.execute("SELECT embedding FROM images WHERE sha256 = ? AND model_id = ? LIMIT 1",
                              (sha256, model_id)).fetchone()
        return None if row is None else row[0]

    def embeddings(self, order_by_path: bool = True) -> tuple[np.ndarray, list[int], list[str], list[bool]]:
        """All rows' embeddings as one float32 matrix, with their ids, stored paths and absolute flags."""
        ids, paths, absolute, blobs = [], [], [], []
        query = "SELECT id, path, absolute, embedding FROM images" + (" ORDER BY path" if order_by_path else "")
        for row_id, path, is_absolute, blob in self.db.execute(query):
            ids.append(row_id)
            paths.append(from_sql(path))
            absolute.append(bool(is_absolute))
            blobs.append(blob)
        return self._matrix(blobs), ids, paths, absolute

    def _matrix(self, blobs: list[bytes]) -> np.ndarray:
        """Stored embeddings (float32 bytes, one row each) as one [N, embed_dim] matrix; [0, embed_dim] for none."""
        width = int(self.model.get("embed_dim") or 0)
        return np.frombuffer(b"".join(blobs), np.float32).reshape(len(blobs), -1) if blobs else \
            np.zeros((0, width), np.float32)

    def iter_embeddings(self, chunk: int = 8192) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, matrix) in chunks of `chunk` rows: a search index of a million rows is built without holding the
        whole float32 matrix (2 GB at 512 wide: more than a Pi 4 has free)."""
        last = -1
        while True:
            got = self.db.execute("SELECT id, embedding FROM images WHERE id > ? ORDER BY id LIMIT ?",
                                  (last, chunk)).fetchall()
            if not got:
                return
            last = got[-1][0]
            yield np.array([r[0] for r in got], np.int64), self._matrix([r[1] for r in got])

    def embeddings_of(self, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(ids found, their embeddings) for `ids`, in that order."""
        found = dict(self._where_ids("SELECT id, embedding FROM images", ids))
        present = [int(i) for i in ids if int(i) in found]
        return np.array(present, np.int64), self._matrix([found[i] for i in present])

    def paths_of(self, ids: Iterable[int]) -> dict[int, tuple[str, bool]]:
        found = self._where_ids("SELECT id, path, absolute FROM images", ids)
        return {r[0]: (from_sql(r[1]), bool(r[2])) for r in found}

    def _where_ids(self, select: str, ids: Iterable[int], chunk: int = 500) -> list[tuple]:
        """`select ... WHERE id IN (...)` in chunks: SQLite caps the parameters of one statement."""
        ids = [int(i) for i in ids]
        out: list[tuple] = []
        for start in range(0, len(ids), chunk):
            part = ids[start : start + chunk]
            out += self.db.execute(f"{select} WHERE id IN ({','.join('?' * len(part))})", part).fetchall()
        return out

    # ---- display --------------------------------------------------------------------------------------------
    def shown_path(self, stored: str, absolute: bool) -> str:
        """A stored path the way the user gave it: absolute when they gave an absolute folder, else relative to
        where the command runs (what they typed, when run from the same place)."""
        full = os.path.normpath(os.path.join(os.path.abspath(self.directory), stored))
        if absolute:
            return full
        try:
            return os.path.relpath(full)
        except ValueError:  # another drive (Windows)
            return full

    def stored_path(self, given: str) -> tuple[str, bool]:
        """A scanned path as stored: relative to the index directory, and whether it was given absolute."""
        if "\x00" in given:
            raise InputError(f"path {given!r} holds a NUL character")
        try:
            stored = os.path.relpath(os.path.abspath(given), os.path.abspath(self.directory))
        except ValueError:
            stored = os.path.abspath(given)
        return stored, os.path.isabs(given)
