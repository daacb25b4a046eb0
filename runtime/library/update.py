"""`clipedge index build/update`: bring a catalogue up to date with the files on disk, embedding only what changed.

A file is unchanged when its path, size and mtime match its row and its row was made by the current model: nothing
is read. Otherwise its bytes are hashed (sha256): bytes already in the catalogue (a renamed or copied photo, a file
touched but not edited) reuse their stored embedding; only new bytes are embedded. Rows whose files are gone are
dropped last, so a renamed photo's old row is still there to reuse while the new path is met.

Each batch is one SQLite transaction (embeddings, moves and skips together): a kill -9 at any moment leaves the last
committed batch, and the next run finds those files unchanged and goes on from there (tests/runtime/
test_library_update.py kills it at random points and compares the resumed index with a clean build).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clipedge.runtime.cli.batches import Batched, run_chunk
from clipedge.runtime.errors import InputError
from clipedge.runtime.library.catalogue import Catalogue, Row, model_key, to_sql

__all__ = ["UpdateSummary", "file_sha256", "recorded_sources", "sources_record", "update_catalogue"]

log = logging.getLogger(__name__)


@dataclass
class UpdateSummary:
    """What one update did, for the command's output and its --json."""

    added: int = 0  # new files embedded
    changed: int = 0  # files whose bytes changed, embedded again
    reused: int = 0  # new paths whose bytes were already embedded (renamed or copied): nothing embedded
    touched: int = 0  # a new mtime, the same bytes: nothing embedded
    removed: int = 0  # rows whose files are gone
    unchanged: int = 0
    skipped: list[dict[str, Any]] = field(default_factory=list)  # unreadable: {"index", "image", "error"}
    still_skipped: int = 0  # unreadable before and unchanged since: not tried again
    reembedded_model: int = 0  # rows of another model or precision, embedded again with this one
    changed_ids: set[int] = field(default_factory=set)  # rows added or given another embedding
    removed_ids: set[int] = field(default_factory=set)

    @property
    def embedded(self) -> int:
        return self.added + self.changed


@dataclass(frozen=True)
class _Candidate:
    """A file that needs a look: new, or its size/mtime/model differ from its row."""

    given: str
    stored: str
    absolute: bool
    size: int
    mtime_ns: int
    row: Row | None


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def update_catalogue(catalogue: Catalogue, runtime, files: Sequence[Any], model: dict[str, Any], on_error: str,
                     progress: Callable[[int, int], None] | None = None, sources: dict[str, Any] | None = None
                     ) -> UpdateSummary:
    """Make `catalogue` hold exactly `files` (ScannedFile-like: .path, .size, .mtime_ns) embedded by `runtime`,
    whose identity is `model` (clipedge.runtime.index.model_identity). `sources` (what was scanned, how) is
    recorded so `index update DIR` can rescan without arguments. `progress(n, total)` after each batch of the
    `total` files that need a look (new or changed)."""
    summary = UpdateSummary()
    with catalogue.transaction() as db:
        model_id = catalogue.model_id(model, db)
        previous = catalogue.model
        if previous and model_key(previous) != model_key(model):
            log.warning("this index was made by %s; its rows are embedded again with %s (search refuses the index "
                        "until this update has finished)", _describe(previous), _describe(model))
        catalogue.set_meta("model", json.dumps(model), db)
        if sources is not None:
            catalogue.set_meta("sources", json.dumps(sources), db)
    rows, skipped_before = catalogue.rows(), catalogue.skipped()
    candidates, seen = _candidates(catalogue, files, rows, skipped_before, model_id, summary)
    batch = max(1, int(getattr(runtime, "batch_size", 32)))
    for start in range(0, len(candidates), batch):
        chunk = candidates[start : start + batch]
        _commit_chunk(catalogue, runtime, chunk, start, model_id, on_error, summary)
        if progress is not None:
            progress(len(chunk), len(candidates))
    _drop_missing(catalogue, rows, skipped_before, seen, summary)
    return summary


def _candidates(catalogue: Catalogue, files: Sequence[Any], rows: dict[str, Row],
                skipped_before: dict[str, tuple[int, int, str]], model_id: int, summary: UpdateSummary
                ) -> tuple[list[_Candidate], set[str]]:
    out, seen = [], set()
    for file in files:
        stored, absolute = catalogue.stored_path(file.path)
        if stored in seen:  # the same file reached twice (two spellings of one folder)
            continue
        seen.add(stored)
        row = rows.get(stored)
        if row is not None and (row.size, row.mtime_ns, row.model_id) == (file.size, file.mtime_ns, model_id):
            summary.unchanged += 1
            continue
        before = skipped_before.get(stored)
        if row is None and before is not None and before[:2] == (file.size, file.mtime_ns):
            summary.still_skipped += 1
            continue
        out.append(_Candidate(file.path, stored, absolute, file.size, file.mtime_ns, row))
    return out, seen


def _commit_chunk(catalogue: Catalogue, runtime, chunk: list[_Candidate], start: int, model_id: int,
                  on_error: str, summary: UpdateSummary) -> None:
    """Hash the chunk's files, reuse what is already embedded, embed the rest, and commit it all at once."""
    reuse: list[tuple[_Candidate, str, bytes]] = []
    embed: list[tuple[_Candidate, str]] = []
    unreadable: list[tuple[_Candidate, str]] = []
    for candidate in chunk:
        try:
            digest = file_sha256(candidate.given)
        except OSError as err:
            if on_error == "stop":
                raise InputError(f"cannot read {candidate.given!r}: {err.strerror or err} (--on-error skip leaves "
                                 "unreadable images out and goes on)") from err
            unreadable.append((candidate, err.strerror or str(err)))
            continue
        stored = catalogue.embedding_of(digest, model_id)
        if stored is not None:
            reuse.append((candidate, digest, stored))
        else:
            embed.append((candidate, digest))
    done = Batched()
    if embed:
        run_chunk([c.given for c, _ in embed], start, lambda paths: [runtime.encode_images(paths)], on_error, done)
    vectors = np.concatenate(done.results).astype(np.float32) if done.results else np.zeros((0, 0), np.float32)
    embedded = [(embed[i - start][0], embed[i - start][1], vectors[n].tobytes()) for n, i in enumerate(done.kept)]
    failed = {s["index"] - start: s["error"] for s in done.skipped}
    unreadable += [(embed[i][0], error) for i, error in failed.items()]
    with catalogue.transaction() as db:
        for reused, rows in ((True, reuse), (False, embedded)):
            for candidate, digest, blob in rows:
                _write_row(db, candidate, digest, blob, model_id, summary, reused)
        for candidate, error in unreadable:
            db.execute("INSERT OR REPLACE INTO skipped (path, absolute, size, mtime_ns, error) VALUES (?, ?, ?, ?, ?)",
                       (to_sql(candidate.stored), int(candidate.absolute), candidate.size, candidate.mtime_ns, error))
            if candidate.row is not None:  # its old embedding no longer describes the file
                db.execute("DELETE FROM images WHERE id = ?", (candidate.row.id,))
                summary.removed_ids.add(candidate.row.id)
            summary.skipped.append({"index": start + chunk.index(candidate), "image": candidate.given,
                                    "error": error})
        catalogue.bump_generation(db)


def _write_row(db, candidate: _Candidate, digest: str, blob: bytes, model_id: int, summary: UpdateSummary,
               reused: bool) -> None:
    row = candidate.row
    values = (to_sql(candidate.stored), int(candidate.absolute), candidate.size, candidate.mtime_ns, digest, model_id,
              blob)
    if row is None:
        cursor = db.execute("INSERT INTO images (path, absolute, size, mtime_ns, sha256, model_id, embedding) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?)", values)
        summary.changed_ids.add(cursor.lastrowid)
        if reused:
            summary.reused += 1
        else:
            summary.added += 1
    else:
        db.execute("UPDATE images SET path = ?, absolute = ?, size = ?, mtime_ns = ?, sha256 = ?, model_id = ?, "
                   "embedding = ? WHERE id = ?", (*values, row.id))
        if row.model_id != model_id:
            summary.reembedded_model += 1
        if row.sha256 != digest or row.model_id != model_id:
            summary.changed_ids.add(row.id)
        if reused:
            summary.touched += 1
        else:
            summary.changed += 1
    db.execute("DELETE FROM skipped WHERE path = ?", (to_sql(candidate.stored),))


def _drop_missing(catalogue: Catalogue, rows: dict[str, Row], skipped_before: dict[str, tuple[int, int, str]],
                  seen: set[str], summary: UpdateSummary) -> None:
    """Rows and skip records of files no longer found, in one transaction, after every reuse had its chance."""
    gone = [row.id for path, row in rows.items() if path not in seen]
    gone_skips = [path for path in skipped_before if path not in seen]
    if not gone and not gone_skips:
        return
    with catalogue.transaction() as db:
        db.executemany("DELETE FROM images WHERE id = ?", [(i,) for i in gone])
        db.executemany("DELETE FROM skipped WHERE path = ?", [(to_sql(p),) for p in gone_skips])
        catalogue.bump_generation(db)
    summary.removed += len(gone)
    summary.removed_ids.update(gone)


def _describe(model: dict[str, Any]) -> str:
    return f"model {str(model.get('sha256', ''))[:12]} ({model.get('format', '?')} {model.get('precision', '?')})"


def recorded_sources(catalogue: Catalogue) -> dict[str, Any]:
    """What the last build scanned and how ({"sources", "exclude", "default_excludes", "follow_symlinks"})."""
    sources = catalogue.meta_json("sources", {})
    if not isinstance(sources, dict) or not isinstance(sources.get("sources"), list):
        raise InputError(f"index {catalogue.directory} does not record what it was built from; give the folders: "
                         f"clipedge index update {catalogue.directory} PHOTOS...")
    # sources given relative were recorded relative to the index, so `update` works from any directory
    here = os.path.relpath(catalogue.directory)
    sources["sources"] = [s if os.path.isabs(s) else os.path.normpath(os.path.join(here, s))
                          for s in sources["sources"]]
    return sources


def sources_record(directory: Path, sources: Sequence[str], exclude: Sequence[str], default_excludes: bool,
                   follow_symlinks: bool) -> dict[str, Any]:
    """How this build scanned, for `recorded_sources`: relative folders relative to the index directory."""
    base = os.path.abspath(directory)
    return {"sources": [s if os.path.isabs(s) else os.path.relpath(os.path.abspath(s), base) for s in sources],
            "exclude": list(exclude), "default_excludes": default_excludes, "follow_symlinks": follow_symlinks}
