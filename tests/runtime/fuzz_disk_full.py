"""The disk-full cases of the fuzz (tests/runtime/fuzz_harness.py, issue #33), mixed into its `Cases`: embeddings
(`embed -o` as .npy with its rows' .json, or .npz) and an index written while the disk fills, at every place a write
can fail (the bytes written, fsync, the temporary file's creation, the rename), by an injected OSError (ENOSPC,
EDQUOT, EIO): no small tmpfs can be mounted without root. Each must end in a ClipEdgeError (the index's save: the
OSError itself, which the CLI says in one line, as the two CLI runs here check), with the earlier output whole,
loadable and unchanged, and no temporary file left; a save the fault did not reach must load whole.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from clipedge.runtime.embeddings_file import save_embeddings
from clipedge.runtime.errors import ClipEdgeError
from clipedge.runtime.index import EmbeddingIndex
from tests.runtime.fuzz_surfaces import Broken, check_rows_file, one_error_line, run_cli, say


def full_disk(mode: str, when: int, code: int) -> contextlib.ExitStack:
    """Patches that make the disk fill: after `when` bytes written (`write`), at the `when`-th fsync, mkstemp or
    rename. os.fdopen is what every atomic write opens its temporary file with (runtime/atomic.py, runtime/index.py)."""
    stack = contextlib.ExitStack()
    calls = [0]
    error = OSError(code, os.strerror(code))

    def nth(real):
        def call(*args, **kwargs):
            calls[0] += 1
            if calls[0] >= when:
                raise error
            return real(*args, **kwargs)
        return call

    if mode == "write":  # one budget for every file the write opens: the disk is full for all of them
        real_fdopen, budget = os.fdopen, [when]
        stack.callback(setattr, os, "fdopen", real_fdopen)
        os.fdopen = lambda *a, **k: FillingFile(real_fdopen(*a, **k), budget, error)
    else:
        module, name = {"fsync": (os, "fsync"), "mkstemp": (tempfile, "mkstemp"), "rename": (os, "replace")}[mode]
        stack.callback(setattr, module, name, getattr(module, name))
        setattr(module, name, nth(getattr(module, name)))
    return stack


# SQLite's own answer to a full disk (SQLITE_FULL) at the first commit, as its C code gives it to Python
SQLITE_FULL = """import sqlite3
_connect = sqlite3.connect
class _FullDisk(sqlite3.Connection):
    def execute(self, sql, *args):
        if sql.strip().upper().startswith("COMMIT"):
            raise sqlite3.OperationalError("database or disk is full")
        return super().execute(sql, *args)
def _connect_full(*args, **kwargs):
    return _connect(*args, factory=_FullDisk, **kwargs)
sqlite3.connect = _connect_full"""


class FillingFile:
    """A file that takes what is left of `budget[0]` bytes, then fails as a full disk does (a part written, then
    the error)."""

    def __init__(self, f: Any, budget: list[int], error: OSError) -> None:
        self._f, self._left, self._error = f, budget, error

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        if len(view) > self._left[0]:
            self._f.write(view[: self._left[0]])
            self._left[0] = 0
            raise self._error
        self._left[0] -= len(view)
        return self._f.write(view)

    def __enter__(self) -> FillingFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._f.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def restore(directory: Path, files: dict[str, bytes]) -> None:
    shutil.rmtree(directory)
    directory.mkdir()
    for name, data in files.items():
        (directory / name).write_bytes(data)


class DiskFullCases:
    """Mixed into `Cases` (which gives srng, work, bundle, photo and `_nth`)."""

    srng: Any
    work: Path
    bundle: Path
    photo: Path

    def setup_disk_full(self) -> None:
        """An earlier output of each kind, kept as bytes: what every failed write must leave as it was."""
        self.outputs = {kind: self.work / f"out-{kind}" for kind in ("npy", "npz", "index")}
        vectors = np.random.default_rng(2).normal(size=(5, 32)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        names = [f"p{i}.jpg" for i in range(5)]
        model = {"sha256": "0" * 64, "name": "m", "format": "tflite", "precision": "fp32", "embed_dim": 32}
        save_embeddings(self.outputs["npy"] / "e.npy", vectors, names, "image", model)
        save_embeddings(self.outputs["npz"] / "e.npz", vectors, names, "image", model)
        EmbeddingIndex([str(self.outputs["index"] / n) for n in names], vectors, model).save(self.outputs["index"])
        self.written = {kind: snapshot(path) for kind, path in self.outputs.items()}

    def disk_full(self) -> str | None:
        nth = self._nth("disk-full")
        if nth < 2:
            return self._disk_full_cli(["embed", "index"][nth])
        # every output, every place a write can fail, and the first and second such call (of two files or
        # renames, the second), in turn; the sizes, the byte the disk fills at and the errno drawn
        kind, mode = sorted(self.outputs)[nth % 3], ["write", "fsync", "mkstemp", "rename"][nth // 3 % 4]
        rows = self.srng.randint(1, 40)
        when = self.srng.randrange(rows * 128 + 600) if mode == "write" else 1 + (kind != "npz" and nth // 12 % 2)
        code = self.srng.choice([errno.ENOSPC, errno.ENOSPC, errno.EDQUOT, errno.EIO])
        vectors = np.random.default_rng(rows).normal(size=(rows, 32)).astype(np.float32)
        names = [f"n{i}.jpg" for i in range(rows)]
        say(f"{kind}: {rows} rows, {errno.errorcode[code]} at {mode} {when}")
        directory = self.outputs[kind]
        try:
            with full_disk(mode, when, code):
                self._write(kind, directory, vectors, names)
        except OSError as err:  # the index's save says a full disk as the OSError it is; the CLI makes it one line
            if kind != "index" or err.errno != code:
                raise
            self._check_untouched(kind, directory)
            return f"OSError({errno.errorcode[code]})"
        except ClipEdgeError:
            self._check_untouched(kind, directory)
            raise
        self._check_written(kind, directory, names)
        restore(directory, self.written[kind])
        return None

    def _write(self, kind: str, directory: Path, vectors: np.ndarray, names: list[str]) -> None:
        model = {"sha256": "1" * 64, "name": "m", "format": "tflite", "precision": "fp32", "embed_dim": 32}
        if kind == "index":
            EmbeddingIndex([str(directory / n) for n in names], vectors, model).save(directory)
        else:
            save_embeddings(directory / f"e.{kind}", vectors, names, "image", model)

    def _check_untouched(self, kind: str, directory: Path) -> None:
        now = snapshot(directory)
        if now != self.written[kind]:
            before = self.written[kind]
            changed = sorted(set(now) ^ set(before) | {n for n in now if now[n] != before.get(n)})
            if kind == "npy" and {"e.npy", "e.json"} <= set(now):  # the pair that must match: what each says now
                changed.append(f"e.npy now holds {np.load(directory / 'e.npy').shape} rows, e.json says "
                               f"{json.loads(now['e.json'])['shape']}")
            restore(directory, before)
            raise Broken(f"a failed write changed the earlier {kind} output: {changed}")
        self._check_written(kind, directory, [f"p{i}.jpg" for i in range(5)])

    def _check_written(self, kind: str, directory: Path, names: list[str]) -> None:
        """The output loads whole and matching: the rows named, a matrix with as many rows, no temporary file."""
        left = [p.name for p in directory.iterdir() if p.name.startswith(".")]
        if left:
            raise Broken(f"temporary files left in the {kind} output: {left}")
        if kind == "index":
            loaded = EmbeddingIndex.load(directory)
            if [Path(i).name for i in loaded.items] != names:
                raise Broken(f"the index holds {loaded.items[:3]}..., not {names[:3]}...")
            return
        if kind == "npz":
            with np.load(directory / "e.npz") as f:
                items, matrix = list(f["items"]), f["embeddings"]
        else:
            check_rows_file((directory / "e.json").read_bytes(), names)
            items, matrix = names, np.load(directory / "e.npy")
        if items != names or matrix.shape != (len(names), 32):
            raise Broken(f"the {kind} output holds {matrix.shape} for {len(items)} items, not {len(names)}")

    def _disk_full_cli(self, command: str) -> str:
        """The CLI with the disk full at the first fsync: one line, exit 2, the earlier output as it was."""
        prelude = ("import errno, os\ndef _full(fd):\n    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))\n"
                   "os.fsync = _full")
        kind = "npy" if command == "embed" else "index"
        if kind == "index":  # the catalogue is written by SQLite (C, not os.fsync): its commit fails, disk full
            prelude = SQLITE_FULL
        directory = self.outputs[kind]
        args = ["embed", "--text", "a dog", "a cat", "-o", str(directory / "e.npy")] if command == "embed" else \
            ["index", "build", str(self.photo), "-o", str(directory)]
        say(f"clipedge {' '.join(args)} on a full disk")
        result = run_cli([*args, "--bundle", str(self.bundle)], prelude=prelude)
        one_error_line(result, "No space left on device" if kind == "npy" else "database or disk is full")
        self._check_untouched(kind, directory)
        return "cli-exit-2"
