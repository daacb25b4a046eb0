"""A small embedding index for image search on a device: brute-force cosine over a float32 matrix.

Saved as `embeddings.npy` + `index.json` (item names, the bundle's model sha256, format and precision), so an index is
never searched with queries from a different model, and a search from another format or precision of the same model
is said (`clipedge report`'s cross-precision table measures what it costs). Image paths are stored relative to the
index's directory (version 2; version 1 stored them as given, relative to wherever `index build` ran), so an index
moved together with its photos, or searched from another directory, still names files that exist.

Brute force is the right tool up to ~10^5 items on a Pi:
one matrix-vector product, no extra dependency.

Writes are atomic: the matrix goes to a new `embeddings-<sha256 prefix>.npy`, then `index.json`, which names it with
its sha256 and shape, replaces the old one in one rename. The only file a save deletes is the matrix the replaced
index.json named (under that generated name): other `embeddings*.npy` files in the directory are someone's own.
A save killed at any point leaves the old index whole (or no index), never an index.json beside embeddings it does
not describe. The files end with the modes a plain write gives under the user's umask (clipedge.runtime.atomic), not
the temporary files' 0600. Loading checks every field and the matrix's sha256, shape and values, so a damaged index
is a BundleError, not a search that returns wrong names.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clipedge.runtime.atomic import publish, write_atomically
from clipedge.runtime.errors import BundleError, InputError
from clipedge.runtime.library.catalogue import CATALOGUE_FILE
from clipedge.runtime.library.vectors import exact_top_k
from clipedge.runtime.manifest import sha256_file
from clipedge.runtime.npy import load_npy
from clipedge.runtime.scoring import l2_normalize

__all__ = ["EmbeddingIndex", "SearchHit", "INDEX_VERSION"]

INDEX_VERSION = 2
PATHS_RELATIVE_TO_INDEX = "relative-to-index"

log = logging.getLogger(__name__)
EMBEDDINGS_FILE = "embeddings.npy"  # version 1's fixed name; later saves name theirs in index.json
META_FILE = "index.json"
_TMP_PREFIX = ".clipedge-index-tmp-"


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
    skipped: list[dict[str, Any]] = field(default_factory=list)  # inputs left out: {"index", "image", "error"}

    @classmethod
    def build(cls, runtime, images: Sequence[str | Path], batch_size: int = 32,
              progress: Callable[[int], None] | None = None, decode: str | None = None) -> EmbeddingIndex:
        """Embed image files with `runtime` (a CLIPRuntime). `progress(n)` is called after each batch of n.
        `decode`: "fast" or "exact" (see `CLIPRuntime.preprocess`); None: the runtime's own choice."""
        paths = [str(p) for p in images]
        if not paths:
            raise InputError("no images to index")
        parts = []
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            options = {} if decode is None else {"decode": decode}  # a runtime of its own may not take decode
            parts.append(runtime.encode_images(chunk, **options))
            if progress:
                progress(len(chunk))
        return cls(paths, np.concatenate(parts), model_identity(runtime))

    def save(self, directory: str | Path) -> Path:
        """Write the index into `directory` (new, empty, or an index to replace), atomically; `skipped` goes into
        index.json too, for a later rebuild."""
        directory = Path(directory)
        check_target(directory)
        matrix = np.ascontiguousarray(self.embeddings, np.float32)
        if matrix.ndim != 2 or len(matrix) != len(self.items):
            raise InputError(f"{matrix.shape} embeddings for {len(self.items)} items: one row per item")
        directory.mkdir(parents=True, exist_ok=True)
        replaced = own_matrix(directory)  # read before index.json is replaced: the one file this save may delete
        _remove_stale_temporaries(directory)
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=".npy", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, matrix)
                f.flush()
                os.fsync(f.fileno())
            digest = sha256_file(Path(tmp))
            name = f"embeddings-{digest[:16]}.npy"
            publish(tmp)  # mkstemp's 0600 would keep the index from anyone but its owner, whatever the umask says
            new_file = not (directory / name).exists()  # else the same matrix already there: not this save's
            os.replace(tmp, directory / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        try:
            self._write_meta(directory, name, digest, matrix.shape)
        except BaseException:
            if new_file and name != replaced:  # this save's own matrix, named by nothing now
                (directory / name).unlink(missing_ok=True)
            raise
        if replaced is not None and replaced != name:  # the replaced index's matrix, now named by nothing
            (directory / replaced).unlink(missing_ok=True)
        return directory

    def _write_meta(self, directory: Path, name: str, digest: str, shape: tuple[int, ...]) -> None:
        meta = {"version": INDEX_VERSION, "paths": PATHS_RELATIVE_TO_INDEX,
                "items": [_relative_to(item, directory) for item in self.items], "model": self.model,
                "embeddings": {"file": name, "sha256": digest, "shape": list(shape)}}
        if self.skipped:
            # relative to the index, as the items are (`paths`), not to wherever the build ran
            meta["skipped"] = [{**entry, "image": _relative_to(entry["image"], directory)} if isinstance(
                entry.get("image"), str) else dict(entry) for entry in self.skipped]
        # the rename of index.json is the moment the new index becomes the index
        write_atomically(directory / META_FILE, (json.dumps(meta, indent=1) + "\n").encode("utf-8"), _TMP_PREFIX)

    @classmethod
    def load(cls, directory: str | Path) -> EmbeddingIndex:
        """A version-1/2 index, or a catalogue (version 3, `clipedge index build`'s) read whole into memory: paths
        joined to the index directory, rows in path order. Large catalogues: clipedge.runtime.library.open_index."""
        directory = Path(directory)
        if (directory / CATALOGUE_FILE).is_file():
            return cls._from_catalogue(directory)
        if not (directory / META_FILE).is_file():
            raise BundleError(f"{directory} is not a clipedge index (it has no {META_FILE})")
        try:
            meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        except (ValueError, OSError, RecursionError) as err:
            raise BundleError(f"index {directory} is damaged: {META_FILE} is not readable JSON ({err})") from err
        matrix_file, digest = _check_meta(meta, directory)
        path = directory / matrix_file
        if not path.is_file():
            raise BundleError(f"index {directory} is damaged: {META_FILE} names {matrix_file}, which is missing")
        if digest is not None and sha256_file(path) != digest:
            raise BundleError(f"index {directory} is damaged: {matrix_file} does not match the sha256 in {META_FILE} "
                              "(a save interrupted by hand, or a copy gone wrong); rebuild the index")
        try:
            embeddings = load_npy(path)
        except ValueError as err:
            raise BundleError(f"index {directory} is damaged: {matrix_file} is not a readable .npy ({err})") from err
        items = list(meta["items"])
        _check_matrix(embeddings, meta, directory)
        if meta.get("paths") == PATHS_RELATIVE_TO_INDEX:
            items = [os.path.normpath(os.path.join(directory, item)) for item in items]
        return cls(items, embeddings.astype(np.float32), meta.get("model", {}))

    @classmethod
    def _from_catalogue(cls, directory: Path) -> EmbeddingIndex:
        from clipedge.runtime.library.catalogue import Catalogue

        with Catalogue.open(directory) as catalogue:
            catalogue.check_one_model()
            matrix, _, paths, _ = catalogue.embeddings()
            skipped = [{"image": os.path.normpath(os.path.join(directory, path)), "error": error}
                       for path, (_, _, error) in sorted(catalogue.skipped().items())]
            return cls([os.path.normpath(os.path.join(directory, path)) for path in paths], matrix.copy(),
                       catalogue.model, skipped)

    def search(self, runtime, query: Any, k: int = 5) -> list[SearchHit]:
        """`query`: a text (str) or an image (a `pathlib.Path`, bytes, PIL image, array). A str is always a text,
        even when a file has that name. Text-vs-image needs the runtime's text tower; image-vs-image only the image
        tower."""
        check_k(k)
        self.check_model(runtime)
        return self.search_vector(query_vector(runtime, query), k)

    @property
    def count(self) -> int:
        return len(self.items)

    def check_model(self, runtime) -> None:
        check_query_model(self.model, runtime)

    def search_vector(self, vector: np.ndarray, k: int = 5) -> list[SearchHit]:
        vector = l2_normalize(np.asarray(vector, np.float32).reshape(-1))
        if vector.shape[0] != self.embeddings.shape[1]:
            raise InputError(f"query has {vector.shape[0]} dimensions, the index {self.embeddings.shape[1]}")
        positions, scores = exact_top_k(self.embeddings, vector, k)
        ranked = zip(positions, scores, strict=True)
        return [SearchHit(self.items[i], float(s), rank) for rank, (i, s) in enumerate(ranked, 1)]


def check_target(directory: Path) -> None:
    """Refuse, before any image is embedded, a place an index cannot go: a file, or a folder of other things
    (an index there would be mixed into someone's files; a replaced index is the only folder written into)."""
    if directory.is_file() or (directory.exists() and not directory.is_dir()):
        raise InputError(f"index output {directory} is a file; give a directory (new, empty, or an index to replace)")
    if directory.is_dir() and not (directory / META_FILE).is_file() and not (directory / CATALOGUE_FILE).is_file():
        try:
            orphans = set(_orphan_matrices(directory))
            other = sorted(p.name for p in directory.iterdir() if not p.name.startswith(_TMP_PREFIX)
                           and p.name not in orphans)
        except OSError as err:
            raise InputError(f"cannot read the index output directory {directory}: {err.strerror or err}") from err
        if other:
            raise InputError(f"index output {directory} is a directory of other files ({', '.join(other[:3])}"
                             f"{', ...' if len(other) > 3 else ''}) and not an index; give a new or empty directory")


def own_matrix(directory: Path) -> str | None:
    """The matrix file an earlier save provably wrote: the one the index.json being replaced names, under the name
    only `save` gives (`embeddings-` and its sha256's first 16 hex digits). Anything else matching `embeddings*.npy`
    (a user's `embeddings-backup.npy`, an `embeddings.npy` from `clipedge embed`, a version-1 index's matrix) is
    left alone (issue #33: a rebuild deleted every embeddings*.npy in the directory)."""
    try:
        record = json.loads((directory / META_FILE).read_text(encoding="utf-8")).get("embeddings")
        name, digest = record["file"], record["sha256"]
    except (OSError, ValueError, RecursionError, AttributeError, TypeError, KeyError):
        return None
    if isinstance(digest, str) and len(digest) == 64 and name == f"embeddings-{digest[:16]}.npy":
        return name
    return None


def _orphan_matrices(directory: Path) -> list[str]:
    """Matrices a killed first save left before its index.json existed (issue #33: every rerun then refused the
    directory as "other files"). Provably `save`'s: named `embeddings-` + the first 16 hex digits of their own
    sha256, which no other file is by chance. Only looked for where no index.json names a matrix."""
    if (directory / META_FILE).exists():
        return []
    found = []
    for path in directory.glob("embeddings-*.npy"):
        stem = path.name[len("embeddings-"):-len(".npy")]
        if len(stem) == 16 and all(c in "0123456789abcdef" for c in stem) and path.is_file() \
                and not path.is_symlink() and sha256_file(path)[:16] == stem:
            found.append(path.name)
    return found


def _remove_stale_temporaries(directory: Path) -> None:
    """What a killed save left (a temp file never renamed, a matrix whose index.json was never written); a save
    running at the same time in the same directory is not supported."""
    for leftover in directory.glob(f"{_TMP_PREFIX}*"):
        leftover.unlink(missing_ok=True)
    for name in _orphan_matrices(directory):
        (directory / name).unlink(missing_ok=True)


def _check_meta(meta: Any, directory: Path) -> tuple[str, str | None]:
    """Every field load and search read, with the bad value named; the matrix's file name and sha256."""
    def bad(field: str, value: Any, expected: str) -> BundleError:
        return BundleError(f"index {directory} is damaged: {META_FILE} field {field!r} is {value!r:.80}, expected "
                           f"{expected}; rebuild the index")

    if not isinstance(meta, dict):
        raise bad("(top)", type(meta).__name__, "an object")
    version = meta.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise bad("version", version, "an int >= 1")
    if version > INDEX_VERSION:
        raise BundleError(f"index {directory} is version {version}; upgrade clipedge to read it")
    items = meta.get("items")
    if not isinstance(items, list) or not all(isinstance(item, str) and "\x00" not in item for item in items):
        raise bad("items", items, "a list of strings")
    if meta.get("paths") not in (None, PATHS_RELATIVE_TO_INDEX):
        raise bad("paths", meta.get("paths"), f"{PATHS_RELATIVE_TO_INDEX!r}")
    model = meta.get("model", {})
    if not isinstance(model, dict) or not all(isinstance(model.get(key, ""), str)
                                              for key in ("sha256", "name", "format", "precision")):
        raise bad("model", model, "an object of strings (sha256, name, format, precision) and embed_dim")
    record = meta.get("embeddings")
    if record is None:
        return EMBEDDINGS_FILE, None
    if not isinstance(record, dict):
        raise bad("embeddings", record, "an object with file, sha256 and shape")
    name, digest = record.get("file"), record.get("sha256")
    if not isinstance(name, str) or not name.startswith("embeddings") or not name.endswith(".npy") or "/" in name \
            or "\\" in name or ".." in name:
        raise bad("embeddings.file", name, "a file name embeddings*.npy in the index directory")
    if not isinstance(digest, str) or len(digest) != 64:
        raise bad("embeddings.sha256", digest, "64 hex digits")
    shape = record.get("shape")
    if not isinstance(shape, list) or len(shape) != 2 or shape[0] != len(items):
        raise bad("embeddings.shape", shape, f"[{len(items)}, D]: one row per item")
    return name, digest


def _check_matrix(embeddings: Any, meta: dict[str, Any], directory: Path) -> None:
    items = meta["items"]
    if not isinstance(embeddings, np.ndarray) or embeddings.ndim != 2 or len(embeddings) != len(items) \
            or embeddings.dtype.kind != "f" or (items and embeddings.shape[1] < 1):
        raise BundleError(f"index {directory} is damaged: {getattr(embeddings, 'shape', '?')} "
                          f"{getattr(embeddings, 'dtype', '?')} embeddings for {len(items)} items; rebuild the index")
    record = meta.get("embeddings")
    if record is not None and list(embeddings.shape) != record["shape"]:
        raise BundleError(f"index {directory} is damaged: the matrix is {embeddings.shape}, {META_FILE} says "
                          f"{record['shape']}; rebuild the index")
    if not np.isfinite(embeddings).all():
        raise BundleError(f"index {directory} is damaged: its embeddings hold NaN or infinity; rebuild the index")


def _relative_to(item: str, directory: Path) -> str:
    try:
        return os.path.relpath(os.path.abspath(item), os.path.abspath(directory))
    except ValueError:  # another drive (Windows): no relative path exists
        return os.path.abspath(item)


def check_k(k: Any) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InputError(f"k must be >= 1, got {k}")


def query_vector(runtime, query: Any) -> np.ndarray:
    """A str is always a text (even when a file has that name); anything else an image."""
    return (runtime.encode_texts([query]) if isinstance(query, str) else runtime.encode_images([query]))[0]


def check_query_model(built: dict[str, Any], runtime) -> None:
    """Queries must come from the model that made the rows (same checkpoint sha256); another format or precision
    of it is said, not refused: scores shift by the two models' fidelity."""
    identity = model_identity(runtime)
    if built.get("sha256") and identity.get("sha256") != built.get("sha256"):
        raise InputError(f"this index was built with model {str(built.get('sha256'))[:12]} and the bundle loaded is "
                         f"{str(identity.get('sha256'))[:12]}: search with that bundle, or rebuild the index with "
                         "this one (`clipedge index update INDEX --bundle BUNDLE`)")
    was, now = _format_precision(built), _format_precision(identity)
    if built.get("format") and was != now:
        log.warning("this index was built with the %s model and the query runs on %s: scores shift by the two "
                    "models' fidelity (see `clipedge report`'s cross-precision table); load the bundle with "
                    "precision=%r, format=%r (CLI: --precision %s --format %s) for the index's own scores",
                    was, now, built.get("precision"), built.get("format"), built.get("precision"), built.get("format"))


def _format_precision(model: dict[str, Any]) -> str:
    return f"{model.get('format', '?')} {model.get('precision', '?')}"


def model_identity(runtime) -> dict[str, Any]:
    """Embeddings are comparable when they come from the same checkpoint: the bundle's source sha256 says so
    (precisions and formats of one checkpoint share an embedding space, within their fidelity)."""
    model = runtime.manifest.data.get("model", {})
    return {"sha256": model.get("sha256", ""), "name": model.get("name", ""), "format": runtime.format,
            "precision": runtime.precision, "embed_dim": runtime.manifest.embed_dim}
