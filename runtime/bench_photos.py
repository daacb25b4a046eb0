"""`clipedge bench BUNDLE --photos DIR`: images per second and latency on real files, decode included, beside the
model call alone.

Why: `clipedge bench` times the model on synthetic pixels, and a 12 MP JPEG costs several times the model to decode
and resize (issue #18), so a device's real indexing speed is not what the model line says. Here the same photos go
through `CLIPRuntime.encode_images` as `clipedge index build` sends them (decode threads ahead of the model,
`clipedge.runtime.prefetch`) for each decode mode, and one at a time for the latency a single photo sees.

Rows: `model` (the image model on already preprocessed pixels of these photos: the ceiling), then per decode mode
`<mode> decode` (preprocessing alone, one photo at a time, in the calling thread), `<mode> single` (one photo
in, one embedding out) and `<mode> stream` (all photos in one call, the throughput an index build sees).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipedge.runtime.bench import Latency, measure_latency
from clipedge.runtime.errors import InputError

__all__ = ["PhotoRow", "bench_photos", "photos_table"]


@dataclass(frozen=True)
class PhotoRow:
    what: str  # "model", "<mode> decode", "<mode> single", "<mode> stream"
    images: int  # images per timed call
    latency: Latency  # per timed call

    @property
    def images_per_second(self) -> float:
        return self.images / (self.latency.median_ms / 1000.0) if self.latency.median_ms > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {"what": self.what, "images": self.images, "latency": self.latency.to_dict(),
                "images_per_second": round(self.images_per_second, 3)}


def _each(fn: Callable[[Any], Any], items: Sequence[Any]) -> Callable[[], Any]:
    """A call of `fn` on the next item each time: every photo gets timed, not the first one `repeats` times."""
    state = {"i": 0}

    def call() -> Any:
        item = items[state["i"] % len(items)]
        state["i"] += 1
        return fn(item)

    return call


def bench_photos(runtime, photos: Sequence[str | Path], *, decodes: Sequence[str] = ("fast", "exact"),
                 repeats: int = 3, warmup: int = 1) -> list[PhotoRow]:
    """Time `runtime` (a CLIPRuntime) on `photos`. Single-photo rows take `len(photos)` timed calls at least (each
    photo once or more); stream rows time the whole list `repeats` times."""
    paths = [str(p) for p in photos]
    if not paths:
        raise InputError("no photos to bench")
    runner = runtime.runner("image")
    pixels = runtime.preprocess(paths[:1], layout="NHWC", decode="exact")
    rows = [PhotoRow("model", 1, measure_latency(lambda: runner.run(pixels), repeats=max(20, len(paths)),
                                                  warmup=warmup + 1))]
    single = max(len(paths), repeats)
    for decode in decodes:
        one = _each(lambda path, d=decode: runtime.preprocess([path], layout="NHWC", decode=d), paths)
        rows.append(PhotoRow(f"{decode} decode", 1, measure_latency(one, repeats=single, warmup=warmup)))
        one = _each(lambda path, d=decode: runtime.encode_images([path], decode=d), paths)
        rows.append(PhotoRow(f"{decode} single", 1, measure_latency(one, repeats=single, warmup=warmup)))
        rows.append(PhotoRow(f"{decode} stream", len(paths), measure_latency(
            lambda d=decode: runtime.encode_images(paths, decode=d), repeats=repeats, warmup=warmup)))
    return rows


def photos_table(rows: Sequence[PhotoRow], header: str = "") -> str:
    """Plain text, one line per row; ms are per timed call, ms/img per image."""
    head = f"{'what':<14} {'images':>6} {'median ms':>10} {'p90 ms':>9} {'ms/img':>8} {'images/s':>9}"
    lines = ([header] if header else []) + [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.what:<14} {r.images:>6} {r.latency.median_ms:>10.2f} {r.latency.p90_ms:>9.2f} "
                     f"{r.latency.median_ms / r.images:>8.2f} {r.images_per_second:>9.1f}")
    return "\n".join(lines)


def photos_command(args: Any) -> tuple[dict[str, Any], str]:
    """`clipedge bench TARGET --photos DIR`: the payload for --json and the text, from the parsed arguments."""
    from clipedge.runtime.bench import machine_info, usable_cores
    from clipedge.runtime.clip_runtime import load
    from clipedge.runtime.datasets import list_images
    from clipedge.runtime.decode import check_decode

    if not Path(args.target).is_dir():
        raise InputError(f"--photos needs a bundle directory as TARGET, got {args.target}")
    if args.tower not in (None, "image") or args.variant != "default":
        raise InputError("--photos times the image tower of the default variant; drop --tower/--variant")
    photos_dir = Path(args.photos)
    if not photos_dir.is_dir():
        raise InputError(f"--photos {photos_dir} is not a directory")
    photos = [str(p) for p in list_images(photos_dir)]
    if not photos:
        raise InputError(f"--photos {photos_dir} has no image files")
    decodes = [check_decode(part.strip()) for part in args.decode.split(",") if part.strip()]
    threads = (args.threads or [usable_cores()])[0]
    runtime = load(args.target, precision=args.precision, format=args.format, accelerator=args.accelerator or "cpu",
                   threads=threads, decode_workers=args.decode_threads)
    rows = bench_photos(runtime, photos, decodes=decodes, repeats=args.repeats, warmup=min(args.warmup, 1))
    machine = machine_info()
    artifact = runtime.artifact("image")
    header = (f"{artifact.file} ({runtime.format} {runtime.precision}), {threads} interpreter threads, "
              f"{len(photos)} photos from {photos_dir}")
    note = (f"{machine['cpu']}, {machine['usable_cores']} usable cores, load average {machine['load_average']}; "
            "model: the model call on preprocessed pixels; decode: preprocessing one photo; single: one photo in, "
            "one embedding out; stream: all photos in one encode_images call (as index build runs them, decode "
            "threads overlapping the model)")
    payload = {"machine": machine, "file": artifact.file, "threads": threads, "photos": len(photos),
               "rows": [row.to_dict() for row in rows]}
    return payload, f"{photos_table(rows, header)}\n{note}"
