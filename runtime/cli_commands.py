"""The `clipedge` subcommands: what each command does with its parsed arguments (the parser and the process setup
are clipedge.runtime.cli). On-device commands need only the runtime; `export` and `demo train` import the export
package inside the function, after saying how to install it when TensorFlow is missing.

Kept cheap to import (errors and the standard library only at module level): `clipedge --help` on a Pi must not load
numpy or Pillow.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clipedge.runtime.errors import ClipEdgeError

log = logging.getLogger("clipedge")


class Progress:
    """tqdm when installed (the export extra has it), else a plain counter on stderr; silent for few items."""

    def __init__(self, total: int, desc: str, enabled: bool) -> None:
        self.total, self.desc, self.done = total, desc, 0
        self.bar = None
        self.enabled = enabled and total >= 8
        if self.enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, desc=desc, unit="img", file=sys.stderr)
            except ImportError:
                pass

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled:
            print(f"\r{self.desc}: {self.done}/{self.total}", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            print(file=sys.stderr)


def expand_images(sources: Sequence[str]) -> list[str]:
    """Files as given; directories expanded (recursively) to their image files, sorted."""
    from clipedge.runtime.datasets import IMAGE_SUFFIXES, list_images  # numpy: not paid for by --help

    out: list[str] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            found = [str(p) for p in list_images(path)]
            if not found:
                raise ClipEdgeError(f"directory {path} has no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
            out += found
        else:
            out.append(source)
    return out


def parse_labels(args: argparse.Namespace) -> list[str]:
    labels: list[str] = []
    for item in args.labels or []:
        labels += [part.strip() for part in item.split(",")] if "," in item else [item.strip()]
    if args.labels_file:
        path = Path(args.labels_file)
        if not path.is_file():
            raise ClipEdgeError(f"labels file {path} does not exist")
        labels += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    labels = [label for label in labels if label]
    if not labels:
        raise ClipEdgeError("no labels: pass --labels cat dog (or 'cat,dog') or --labels-file FILE")
    return labels


def load_runtime(args: argparse.Namespace):
    from clipedge.runtime.clip import load

    return load(args.bundle, precision=args.precision, format=args.format, accelerator=args.accelerator,
                threads=args.threads)


def emit(args: argparse.Namespace, payload: Any, human: str) -> None:
    print(json.dumps(payload, indent=2) if args.json else human)


def in_batches(runtime, images: list[str], progress: Progress, fn):
    batch = runtime.batch_size
    results = []
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        results += fn(chunk)
        progress.update(len(chunk))
    progress.close()
    return results


# ---- commands ---------------------------------------------------------------------------------------------------
def cmd_classify(args: argparse.Namespace) -> int:
    labels = parse_labels(args)
    images = expand_images(args.images)
    runtime = load_runtime(args)
    progress = Progress(len(images), "classify", not args.json)
    results = in_batches(runtime, images, progress, lambda chunk: runtime.classify(chunk, labels, args.template))
    top = min(args.top, len(labels))
    payload = [{"image": image, "top": [{"label": label, "probability": round(p, 6)}
                                        for label, p in result.ranked(top)]}
               for image, result in zip(images, results, strict=True)]
    lines = [f"{item['image']}: " + ", ".join(f"{t['label']} ({t['probability']:.3f})" for t in item["top"])
             for item in payload]
    emit(args, payload, "\n".join(lines))
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    import numpy as np

    if bool(args.images) == bool(args.text):
        raise ClipEdgeError("embed takes image files/directories or --text TEXT..., not both and not neither")
    runtime = load_runtime(args)
    if args.text:
        embeddings = runtime.encode_texts(args.text)
        items = args.text
    else:
        items = expand_images(args.images)
        progress = Progress(len(items), "embed", not args.json)
        embeddings = np.concatenate(in_batches(runtime, items, progress, lambda c: [runtime.encode_images(c)]))
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, embeddings)
    emit(args, {"output": str(out), "shape": list(embeddings.shape), "items": items},
         f"wrote {embeddings.shape[0]} x {embeddings.shape[1]} embeddings to {out}")
    return 0


def cmd_index_build(args: argparse.Namespace) -> int:
    from clipedge.runtime.index import EmbeddingIndex

    images = expand_images(args.images)
    runtime = load_runtime(args)
    progress = Progress(len(images), "index", not args.json)
    index = EmbeddingIndex.build(runtime, images, batch_size=runtime.batch_size, progress=progress.update)
    progress.close()
    index.save(args.output)
    emit(args, {"index": args.output, "items": len(images)}, f"indexed {len(images)} images into {args.output}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from clipedge.runtime.index import EmbeddingIndex

    index = EmbeddingIndex.load(args.index)
    runtime = load_runtime(args)
    hits = index.search(runtime, args.query, k=args.k)
    payload = [{"rank": h.rank, "item": h.item, "score": round(h.score, 6)} for h in hits]
    emit(args, payload, "\n".join(f"{h.rank:>3}  {h.score:.4f}  {h.item}" for h in hits))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from clipedge.runtime.manifest import Manifest

    manifest = Manifest.read(args.bundle)
    data = manifest.data
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    model = data.get("model", {})
    print(f"bundle    {manifest.directory}  (format {data['format_version']})")
    print(f"model     {model.get('name', '?')}  sha256 {model.get('sha256', '')[:16]}")
    print(f"embed dim {manifest.embed_dim}   logit scale {manifest.logit_scale:.2f}")
    print(f"{'artifact':<34} {'size':>10} {'cos min':>9}  flags")
    for a in manifest.artifacts:
        cos = a.fidelity.get("cosine_min")
        print(f"{a.file:<34} {a.bytes / 1e6:>8.2f}MB {cos if cos is None else f'{cos:.6f}':>9}  "
              f"{','.join(a.flags) or '-'}")
    return 0


def require_export_extra(command: str) -> None:
    """Workstation commands need TensorFlow; on a runtime-only install say what to install, not a traceback."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow  # noqa: F401
    except ImportError as err:
        raise ClipEdgeError(
            f"`clipedge {command}` needs TensorFlow and the converters: pip install 'clipedge[export]' "
            "(this install has only the on-device runtime)"
        ) from err


def cmd_export(args: argparse.Namespace) -> int:
    require_export_extra("export")
    from clipedge.export.pipeline import export_bundle
    from clipedge.export.settings import ExportSettings

    labels = None
    if args.labels:
        path = Path(args.labels)
        if not path.is_file():
            raise ClipEdgeError(f"labels file {path} does not exist (one label per line)")
        labels = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    optional = {name: getattr(args, name) for name in ("formats", "precisions", "towers") if getattr(args, name)}
    settings = ExportSettings(
        out=args.out, checkpoint=args.checkpoint, batch=args.batch, calibration=args.calibration,
        captions=args.captions, samples=args.samples, seed=args.seed, force=args.force,
        architecture=args.architecture, int8_io=args.int8_io, gpu=not args.no_gpu, labels=labels,
        template=args.template, target_cosine=args.target_cosine, mobile=args.mobile,
        isolate={"auto": None, "yes": True, "no": False}[args.isolate], target_top1_drop=args.target_top1_drop,
        eval_dir=args.eval_dir, **optional)
    result = export_bundle(settings, progress=not args.json)
    emit(args, {"bundle": str(result.bundle), "artifacts": result.rows, "peak_rss_mib": result.peak_rss},
         f"{result.table()}\nbundle written to {result.bundle}")
    return 0


def cmd_demo_train(args: argparse.Namespace) -> int:
    require_export_extra("demo train")
    from clipedge.export.demo_train import TrainSettings, train

    settings = TrainSettings(seed=args.seed) if args.steps is None else TrainSettings(steps=args.steps, seed=args.seed)
    command = f"clipedge demo train --out {args.out} --steps {settings.steps} --seed {settings.seed}"
    result = train(args.out, settings, progress=not args.json, force=args.force, command=command)
    payload = {"checkpoint": str(result.checkpoint), "seconds": result.seconds,
               "loss_last_50": float(sum(result.losses[-50:]) / len(result.losses[-50:])),
               "zero_shot_top1_held_out": result.held_out_accuracy, "zero_shot_top1_eval_set": result.eval_set_accuracy}

    def pct(value: float | None) -> str:
        return "not measured" if value is None else f"{100 * value:.1f}%"

    emit(args, payload, f"demo CLIP written to {result.checkpoint} in {result.seconds['total']:.0f} s; zero-shot "
                        f"top-1 {pct(result.held_out_accuracy)} on held-out generated images, "
                        f"{pct(result.eval_set_accuracy)} on the shipped evaluation set")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from clipedge.runtime.bench import bench, bench_table, machine_info, usable_cores

    rows = bench(args.target, tower=args.tower, fmt=args.format, precision=args.precision, variant=args.variant,
                 batches=args.batch, threads=args.threads or [usable_cores()], repeats=args.repeats,
                 warmup=args.warmup)
    machine = machine_info()
    payload = {"machine": machine, "rows": [row.to_dict() for row in rows]}
    emit(args, payload, f"{bench_table(rows)}\n{machine['cpu']}, {machine['usable_cores']} usable cores, "
                        f"load average {machine['load_average']}; {args.repeats} timed runs after {args.warmup} "
                        "warm-up, model call only (no preprocessing or tokenization)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    import shlex

    from clipedge.export.report import run_report

    say = (lambda message: None) if args.json else (lambda message: print(message, file=sys.stderr, flush=True))
    result = run_report(
        args.bundle, out=args.out, command=shlex.join(["clipedge", *args.argv]), note=args.note,
        eval_dir=args.eval if args.eval is not None else "shipped", pairs=args.pairs, threads=args.threads,
        batch=args.batch, repeats=args.repeats, warmup=args.warmup, baseline=not args.no_baseline,
        baseline_checkpoint=args.baseline_checkpoint, memory=not args.no_memory, template=args.template,
        progress=say,
    )
    written = [str(p) for p in (result.json_path, result.markdown_path, result.png_path) if p is not None]
    rec = result.data["recommendations"]
    human = [f"wrote {', '.join(written)}"]
    if result.png_path is None:
        human.append("no report.png: pip install 'clipedge[report]' (matplotlib) and rerun to get the plots")
    for goal in ("smallest", "fastest"):
        pick = rec.get(goal)
        if pick:
            human.append(f"{goal} within the rule: {pick['format']} {pick['precision']} "
                         f"({pick['bytes'] / 1e6:.2f} MB: {' + '.join(pick['files'])})")
    emit(args, {"files": written, "recommendations": rec}, "\n".join(human))
    return 0
