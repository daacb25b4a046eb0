"""The batch loop of `classify`, `embed` and `index build`, and their `--on-error skip|stop`.

Why its own module: a Pi working through a photo library must not lose the run to one unreadable file, and the error
must say which file, at its position in the whole input (the first version said `image 3 'many/35.jpg'`: the 4th of
a 32-image batch). With `stop` (the default) the first unreadable image ends the command with that message; with
`skip` it is left out, listed with the reason, and the rest is written.

Standard library only at import, like the CLI modules (`clipedge --help` on a Pi must not load numpy).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipedge.runtime.errors import ImageError

__all__ = ["ON_ERROR", "ON_ERROR_OPTION", "Batched", "counted", "run_chunk", "run_in_batches", "write_skipped"]

ON_ERROR = ("stop", "skip")
# `--on-error` as every batch command declares it (classify, embed, index build/update)
ON_ERROR_OPTION = {"choices": ON_ERROR, "default": "stop",
                   "help": "an image that cannot be read: stop there (default), or skip it, list it and go on"}

log = logging.getLogger("clipedge")


@dataclass
class Batched:
    """What a batch loop produced: `fn`'s results in input order, the input positions they belong to, and the
    images left out ({"index", "image", "error"}; index is the 0-based position in the whole input)."""

    results: list[Any] = field(default_factory=list)
    kept: list[int] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)


def run_in_batches(images: Sequence[str], batch: int, fn: Callable[[list[str]], list[Any]], on_error: str,
                   progress: Callable[[int], None] | None = None) -> Batched:
    """`fn(chunk)` over `images` in chunks of `batch`. `fn` returns one result per image (classify) or per chunk
    (embeddings: one array); a chunk with an unreadable image is redone one image at a time, so the bad one is named
    by its position and, with on_error="skip", the others still count. Nothing is read twice otherwise."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    out = Batched()
    for start in range(0, len(images), batch):
        chunk = list(images[start : start + batch])
        run_chunk(chunk, start, fn, on_error, out)
        if progress is not None:
            progress(len(chunk))
    if not out.kept and out.skipped:
        which = "the one image could not be read:" if len(images) == 1 else \
            f"none of the {len(images)} images could be read; the first:"
        raise ImageError(f"{which} image 0 {out.skipped[0]['image']!r}: {out.skipped[0]['error']}")
    return out


def run_chunk(chunk: list[str], start: int, fn: Callable[[list[str]], list[Any]], on_error: str, out: Batched) -> None:
    """One chunk of `run_in_batches` (also `index update`'s, which commits each chunk): `start` is the chunk's
    position in the whole input, so a bad image is named where the user would count it."""
    try:
        out.results += fn(chunk)
        out.kept += range(start, start + len(chunk))
    except ImageError:
        for index, image in enumerate(chunk, start):
            try:
                out.results += fn([image])
                out.kept.append(index)
            except ImageError as err:
                reason = getattr(err, "reason", None) or str(err)
                message = f"image {index} {image!r}: {reason}"
                if on_error == "stop":
                    raise ImageError(f"{message} (--on-error skip leaves unreadable images out and goes on)") from err
                out.skipped.append({"index": index, "image": image, "error": reason})
                log.warning("skipped %s", message)


def counted(n: int, noun: str) -> str:
    """`1 image`, `2 images`: a count and its noun, for messages (`noun` is the singular; plurals add an s)."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def write_skipped(path: Path, skipped: Sequence[dict[str, Any]]) -> Path:
    """The skipped images as TSV (index, path, reason), beside an output that leaves them out. Paths are written
    with their bytes as the file system has them (surrogateescape): a name that is not valid UTF-8 is not an error
    here, and `cut -f2` gives names that open."""
    lines = ["# index\timage\terror (clipedge --on-error skip: these inputs are not in the output)"]
    lines += [f"{s['index']}\t{s['image']}\t{' '.join(str(s['error']).split())}" for s in skipped]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogateescape")
    return path


def say_skipped(skipped: Sequence[dict[str, Any]], total: int, where: str = "") -> None:
    if skipped:
        print(f"clipedge: skipped {len(skipped)} of {counted(total, 'image')} that could not be read{where}",
              file=sys.stderr)
