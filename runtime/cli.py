"""The `clipedge` command: on-device subcommands (classify, embed, index, search, info, bench) that need only the
runtime; `report`, which needs only the runtime too (plus matplotlib for its PNG, torch for its baseline); and
`export` and `demo train`, which need the `export` extra (TensorFlow) and say how to get it when missing.

Interpreters (LiteRT's C++ core, TensorFlow) write INFO lines straight to file descriptor 2. Unless --verbose is
given, that descriptor is redirected to a temporary file for the duration of the command while Python's own
stderr (progress bars, warnings, errors) keeps the terminal; if the command fails, the captured native log's tail
is shown with the error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from clipedge.runtime.errors import BackendError, ClipEdgeError

__all__ = ["main", "build_parser"]

DEFAULT_BUNDLE = "clipedge-bundle"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}

log = logging.getLogger("clipedge")


# ---- helpers ----------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def native_stderr_captured(enabled: bool) -> Iterator[Path | None]:
    """Send fd 2 to a temp file; keep sys.stderr on the real terminal."""
    if not enabled:
        yield None
        return
    sys.stderr.flush()
    saved = os.dup(2)
    capture = tempfile.NamedTemporaryFile(prefix="clipedge-native-", suffix=".log", delete=False)
    os.dup2(capture.fileno(), 2)
    original_stderr = sys.stderr
    sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1, encoding=original_stderr.encoding or "utf-8",
                           errors="backslashreplace")
    try:
        yield Path(capture.name)
    finally:
        # fd 2 stays on the capture file: interpreters log again when they are torn down at process exit.
        # Python's sys.stderr goes back to the terminal through the saved descriptor.
        sys.stderr.flush()
        sys.stderr = os.fdopen(saved, "w", buffering=1, encoding=original_stderr.encoding or "utf-8",
                               errors="backslashreplace")
        capture.close()


def native_log_tail(path: Path | None, lines: int = 8) -> str:
    if path is None or not path.is_file():
        return ""
    text = path.read_text(errors="replace").strip().splitlines()
    interesting = [line for line in text if not line.startswith("INFO:")]
    return "\n".join(interesting[-lines:])


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
    out: list[str] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            found = sorted(str(p) for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
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
    from clipedge.export.pipeline import DEFAULT_PRECISIONS, export_bundle

    split = lambda value: [v.strip() for v in value.split(",") if v.strip()]  # noqa: E731
    labels = None
    if args.labels:
        path = Path(args.labels)
        if not path.is_file():
            raise ClipEdgeError(f"labels file {path} does not exist (one label per line)")
        labels = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    precisions = split(args.precisions) if args.precisions else list(DEFAULT_PRECISIONS)
    result = export_bundle(
        out=args.out, checkpoint=args.checkpoint, formats=split(args.formats), precisions=precisions,
        towers=split(args.towers), batch=args.batch, calibration=args.calibration, captions=args.captions,
        samples=args.samples, seed=args.seed, force=args.force, architecture=args.architecture,
        int8_io=args.int8_io, gpu=not args.no_gpu, labels=labels, template=args.template,
        target_cosine=args.target_cosine, progress=not args.json, mobile=args.mobile,
        isolate={"auto": None, "yes": True, "no": False}[args.isolate],
        target_top1_drop=args.target_top1_drop, eval_dir=args.eval_dir,
    )
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


def _int_at_least(minimum: int, what: str):
    """An argparse type: an integer >= minimum, with the bad text in the message."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_non_negative_int = _int_at_least(0, "an integer >= 0")


def _int_list(text: str) -> list[int]:
    """'1,4,8' -> [1, 4, 8]: positive integers, comma-separated."""
    parts = [part.strip() for part in text.split(",")]
    try:
        values = [int(part) for part in parts]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"must be comma-separated positive integers such as 1,4,8, got {text!r}")
    return list(dict.fromkeys(values))


def _batch_size(text: str) -> int:
    value = _positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"is the larger batch timed besides batch 1: must be >= 2, got {text!r}")
    return value


# ---- parser -----------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clipedge", description="CLIP on the edge: export bundles, run them.")
    parser.add_argument("--verbose", "-v", action="store_true", help="show INFO logs, including the interpreters'")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output")
    run = argparse.ArgumentParser(add_help=False, parents=[common])
    run.add_argument("--bundle", default=DEFAULT_BUNDLE, help=f"bundle directory (default: ./{DEFAULT_BUNDLE})")
    run.add_argument("--precision", help="fp32, fp16, dynamic-int8, ... (default: the bundle's first)")
    run.add_argument("--format", choices=("tflite", "onnx"), help="default: the bundle's first")
    run.add_argument("--accelerator", choices=("cpu", "gpu", "auto"), default="cpu")
    run.add_argument("--threads", type=int, help="interpreter threads (default: the interpreter's choice)")

    p = sub.add_parser("classify", parents=[run], help="zero-shot classify images against labels")
    p.add_argument("images", nargs="+", help="image files or directories")
    p.add_argument("--labels", nargs="+", help="labels, space- or comma-separated")
    p.add_argument("--labels-file", help="a file with one label per line")
    p.add_argument("--template", default="a photo of a {}.", help="prompt template, {} is the label")
    p.add_argument("--top", type=int, default=3, help="labels to show per image")
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("embed", parents=[run], help="write L2-normalized embeddings to a .npy file")
    p.add_argument("images", nargs="*", help="image files or directories")
    p.add_argument("--text", nargs="+", help="texts to embed instead of images")
    p.add_argument("-o", "--output", required=True, help="output .npy file")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("index", help="build or search an image index")
    index_sub = p.add_subparsers(dest="index_command", required=True, metavar="ACTION")
    b = index_sub.add_parser("build", parents=[run], help="embed images into an index directory")
    b.add_argument("images", nargs="+", help="image files or directories")
    b.add_argument("-o", "--output", required=True, help="index directory to write")
    b.set_defaults(func=cmd_index_build)
    for name, target in (("search", index_sub), ("search", sub)):
        s = target.add_parser(name, parents=[run], help="search an index with a text or an image")
        s.add_argument("index", help="index directory")
        s.add_argument("query", help="a text, or the path of an image")
        s.add_argument("-k", type=int, default=5, help="results to show")
        s.set_defaults(func=cmd_search)

    p = sub.add_parser("info", parents=[common], help="show a bundle's models, sizes and fidelity")
    p.add_argument("bundle", nargs="?", default=DEFAULT_BUNDLE)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("bench", parents=[common], help="latency and throughput of one model across batches and threads")
    p.add_argument("target", help="a bundle directory (pick the model with --tower/--format/--precision) or one "
                                  ".tflite/.onnx file")
    p.add_argument("--tower", choices=("image", "text", "classifier"), help="default: image")
    p.add_argument("--format", choices=("tflite", "onnx"), help="default: the bundle's first")
    p.add_argument("--precision", help="fp32, fp16, dynamic-int8, ... (default: the bundle's first)")
    p.add_argument("--variant", default="default", help="'gpu' for the GPU variant (run here on the CPU)")
    p.add_argument("--batch", type=_int_list, default=[1, 8], help="comma-separated batch sizes (default: 1,8)")
    p.add_argument("--threads", type=_int_list, default=None,
                   help="comma-separated thread counts (default: the usable cores)")
    p.add_argument("--repeats", type=_positive_int, default=20, help="timed runs per measurement (default: 20)")
    p.add_argument("--warmup", type=_non_negative_int, default=2, help="untimed runs first (default: 2)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("report", parents=[common],
                       help="measure every model of a bundle: size, speed, memory, fidelity, accuracy (md/json/png)")
    p.add_argument("bundle", help="bundle directory")
    p.add_argument("--eval", help="labelled images, one subfolder per class named after the label (red_circle/); "
                                  "default: the shipped calibration_data/eval when installed")
    p.add_argument("--pairs", help="TSV of image path<TAB>caption for text-to-image recall@1/@5")
    p.add_argument("--threads", type=_positive_int, help="threads for every model and PyTorch (default: usable cores)")
    p.add_argument("--batch", type=_batch_size, default=8, help="the larger batch timed besides 1 (default: 8)")
    p.add_argument("--repeats", type=_positive_int, default=20, help="timed runs per latency (default: 20)")
    p.add_argument("--warmup", type=_non_negative_int, default=2, help="untimed runs first (default: 2)")
    p.add_argument("--out", help="output directory (default: BUNDLE/report)")
    p.add_argument("--baseline-checkpoint", help="HF checkpoint directory for the PyTorch baseline (default: the "
                                                 "manifest's model source when it is a local directory)")
    p.add_argument("--no-baseline", action="store_true", help="skip the PyTorch baseline")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--template", default="a photo of a {}.", help="zero-shot prompt template, {} is the label")
    p.add_argument("--note", help="a line shown at the top of report.md (e.g. 'random weights')")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("demo", help="the shipped demo CLIP (needs the 'export' extra)")
    demo_sub = p.add_subparsers(dest="demo_command", required=True, metavar="ACTION")
    t = demo_sub.add_parser("train", parents=[common],
                            help="train the demo CLIP from scratch on generated shapes (about 15 min on 2 cores)")
    t.add_argument("--out", required=True, help="checkpoint directory to write (HF format)")
    t.add_argument("--steps", type=_positive_int, help="training steps (default: the shipped model's)")
    t.add_argument("--seed", type=_non_negative_int, default=0, help="data and initialization seed")
    t.add_argument("--force", action="store_true", help="replace an existing checkpoint in --out")
    t.set_defaults(func=cmd_demo_train)
    p = sub.add_parser("export", parents=[common], help="checkpoint -> bundle (needs the 'export' extra)")
    p.add_argument("--checkpoint",
                   help="HF/OpenCLIP directory, weights file or hub id (default: the shipped demo CLIP, if installed)")
    p.add_argument("--architecture", help="preset name for OpenCLIP files, e.g. ViT-B-32 or ViT-B-32-quickgelu")
    p.add_argument("--out", default=DEFAULT_BUNDLE, help=f"bundle directory (default: ./{DEFAULT_BUNDLE})")
    p.add_argument("--formats", default="tflite,onnx")
    p.add_argument("--precisions",
                   help="comma-separated: fp32,fp16,dynamic-int8,int8,int16x8,int4,auto (default: all but auto)")
    p.add_argument("--towers", default="image,text")
    p.add_argument("--calibration", help="directory of images (default: the shipped calibration_data)")
    p.add_argument("--captions", help="text file, one caption per line (default: the shipped captions)")
    p.add_argument("--samples", type=int, default=64, help="calibration samples per tower")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=1, help="fixed batch of the TFLite models")
    p.add_argument("--force", action="store_true", help="replace an existing bundle")
    p.add_argument("--int8-io", action="store_true", help="full-int8 TFLite files take and return int8 tensors")
    p.add_argument("--no-gpu", action="store_true", help="skip the fp32 TFLite 'gpu' variant")
    p.add_argument("--mobile", action="store_true",
                   help="also write MediaPipe Tasks image models (uint8 input, metadata; classifier with --labels)")
    p.add_argument("--labels", help="labels file (one per line): also write image-only classifier models")
    p.add_argument("--template", default="a photo of a {}.", help="prompt template for --labels")
    p.add_argument("--target-cosine", type=float,
                   help="auto precision: minimum cosine to the float model on the calibration samples "
                        "(default 0.995 unless --target-top1-drop is given)")
    p.add_argument("--target-top1-drop", type=float, metavar="POINTS",
                   help="auto precision: at most this many points of zero-shot top-1 lost on --eval")
    p.add_argument("--eval", dest="eval_dir", metavar="DIR",
                   help="labelled folder for --target-top1-drop, one subfolder of images per class "
                        "(default: the shipped calibration_data/eval)")
    p.add_argument("--isolate", choices=("auto", "yes", "no"), default="auto",
                   help="convert each model file in its own process, so memory is returned after each "
                        "(auto: for models of 50 M parameters or more, e.g. ViT-B/32)")
    p.set_defaults(func=cmd_export)

    return parser


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    # SystemExit unwinds `with` blocks, so an export being stopped removes its temporary bundle directory.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the exact command, for reports
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    with native_stderr_captured(not args.verbose) as native_log:
        for handler in logging.getLogger().handlers:  # the terminal, not the capture file
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.setStream(sys.stderr)
        try:
            return args.func(args)
        except ClipEdgeError as err:
            tail = native_log_tail(native_log) if isinstance(err, BackendError) else ""
            print(f"clipedge: error: {err}" + (f"\n(interpreter log:)\n{tail}" if tail else ""), file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("clipedge: interrupted", file=sys.stderr)
            return 130
        finally:
            if native_log is not None:
                native_log.unlink(missing_ok=True)  # still writable through fd 2 until exit, then gone


if __name__ == "__main__":
    sys.exit(main())
