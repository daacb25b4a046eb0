"""The `clipedge` subcommands: what each command does with its parsed arguments (the parser and the process setup
are clipedge.runtime.cli.main). On-device commands need only the runtime; the exporter's
commands are registered by the export package itself (clipedge.export.commands, through clipedge.runtime.cli.registry).

Kept cheap to import (errors and the standard library only at module level): `clipedge --help` on a Pi must not load
numpy or Pillow.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clipedge.runtime.cli.batches import counted, say_skipped
from clipedge.runtime.errors import BundleError, ClipEdgeError, InputError

log = logging.getLogger("clipedge")
DEFAULT_BUNDLE = "clipedge-bundle"


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
    """--labels is either words or quoted phrases (`"red star" "blue star"`) or one comma-separated list
    (`'red star,blue star'`); unquoted phrases with commas would split silently into other labels, so mixing is
    refused, and so are duplicates (two equal prompts split the probability between them)."""
    given = args.labels or []
    if len(given) > 1 and any("," in item for item in given):
        raise InputError(f"--labels got {given}, which mixes spaces and commas: quote each label (--labels "
                         "'red star' 'blue star') or give one comma-separated list (--labels 'red star,blue star'); "
                         "labels with commas go in --labels-file")
    labels = [part.strip() for part in given[0].split(",")] if len(given) == 1 else [item.strip() for item in given]
    if args.labels_file:
        path = Path(args.labels_file)
        if not path.is_file():
            raise ClipEdgeError(f"labels file {path} does not exist")
        labels += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    labels = [label for label in labels if label]
    if not labels:
        raise ClipEdgeError("no labels: pass --labels cat dog (or 'cat,dog') or --labels-file FILE")
    keys = [" ".join(label.casefold().split()) for label in labels]  # what the tokenizer sees
    repeated = sorted({label for label, key in zip(labels, keys, strict=True) if keys.count(key) > 1})
    if repeated:
        raise InputError(f"duplicate labels {repeated}: give each label once (the tokenizer ignores case and extra "
                         "spaces, so 'Cat' and 'cat' are one label)")
    return labels


def check_bundle_dir(bundle: str, how: str = "--bundle DIR") -> None:
    """A missing bundle directory, said the way a new user needs: the option that names one, and how to make one."""
    if not Path(bundle).is_dir():
        raise BundleError(f"bundle directory {bundle} does not exist: name one ({how}) or export one there "
                          f"(`clipedge export --out {bundle}`)")


def load_runtime(args: argparse.Namespace):
    from clipedge.runtime.clip_runtime import load

    check_bundle_dir(args.bundle)
    return load(args.bundle, precision=args.precision, format=args.format, accelerator=args.accelerator,
                threads=args.threads, decode=args.decode, decode_workers=args.decode_threads)


def emit(args: argparse.Namespace, payload: Any, human: str) -> None:
    print(json.dumps(payload, indent=2) if args.json else human)


def in_batches(runtime, images: list[str], progress: Progress, fn, on_error: str = "stop"):
    """clipedge.runtime.cli.batches.run_in_batches with the runtime's batch size and this command's progress."""
    from clipedge.runtime.cli.batches import run_in_batches

    try:
        return run_in_batches(images, runtime.batch_size, fn, on_error, progress.update)
    finally:
        progress.close()


# ---- commands ---------------------------------------------------------------------------------------------------
def cmd_classify(args: argparse.Namespace) -> int:
    labels = parse_labels(args)
    images = expand_images(args.images)
    runtime = load_runtime(args)
    progress = Progress(len(images), "classify", args.progress)
    done = in_batches(runtime, images, progress, lambda chunk: runtime.classify(chunk, labels, args.template),
                      args.on_error)
    top = min(args.top, len(labels))
    # keyed by position, not by path: an image given twice is answered twice, each in its place (issue #33)
    by_position: dict[int, dict[str, Any]] = {s["index"]: {"image": s["image"], "error": s["error"]}
                                              for s in done.skipped}
    by_position.update({i: {"image": images[i], "top": [{"label": label, "probability": round(p, 6)}
                                                        for label, p in result.ranked(top)]}
                        for i, result in zip(done.kept, done.results, strict=True)})
    payload = [by_position[i] for i in sorted(by_position)]  # input order, skipped images in their place
    lines = [f"{item['image']}: " + (f"skipped ({item['error']})" if "error" in item else
                                     ", ".join(f"{t['label']} ({t['probability']:.3f})" for t in item["top"]))
             for item in payload]
    emit(args, payload, "\n".join(lines))
    say_skipped(done.skipped, len(images))
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    import numpy as np

    if bool(args.images) == bool(args.text):
        raise ClipEdgeError("embed takes image files/directories or --text TEXT..., not both and not neither")
    from clipedge.runtime.cli.batches import write_skipped

    skipped: list[dict[str, Any]] = []
    from clipedge.runtime.embeddings_file import embeddings_path, save_embeddings
    from clipedge.runtime.index import model_identity

    embeddings_path(args.output)  # a bad -o before the slow part
    runtime = load_runtime(args)
    if args.text:
        embeddings = runtime.encode_texts(args.text)
        items = args.text
    else:
        images = expand_images(args.images)
        progress = Progress(len(images), "embed", args.progress)
        done = in_batches(runtime, images, progress, lambda c: [runtime.encode_images(c)], args.on_error)
        embeddings, items, skipped = np.concatenate(done.results), [images[i] for i in done.kept], done.skipped
    written = save_embeddings(args.output, embeddings, items, "text" if args.text else "image",
                              model_identity(runtime))
    payload = {"output": str(written[0]), "rows": str(written[-1]), "shape": list(embeddings.shape), "items": items}
    note = ""
    if not args.text and skipped:
        listed = write_skipped(written[0].with_name(written[0].stem + ".skipped.tsv"), skipped)
        payload.update(skipped=skipped, skipped_list=str(listed))
        note = f"; {counted(len(skipped), 'unreadable image')} left out, listed in {listed}"
    emit(args, payload, f"wrote {embeddings.shape[0]} x {embeddings.shape[1]} embeddings to {written[0]}"
         + (f" (row order in {written[1]})" if len(written) > 1 else " (with their row order)") + note)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from clipedge.runtime.manifest import Manifest

    check_bundle_dir(args.bundle, "clipedge info DIR")
    manifest = Manifest.read(args.bundle)
    data = manifest.data
    checked = manifest.verify_all() if args.verify else []
    problems = [(name, problem) for name, problem in checked if problem]
    if args.json:
        print(json.dumps({**data, "verified": [{"file": f, "problem": p or None} for f, p in checked]}
                         if args.verify else data, indent=2))
        return _verdict(problems, len(checked))
    model = data.get("model", {})
    print(f"bundle    {manifest.directory}  (format {data['format_version']})")
    print(f"model     {model.get('name') or '?'}  sha256 {(model.get('sha256') or '')[:16]}")
    print(f"embed dim {manifest.embed_dim}   logit scale {manifest.logit_scale:.2f}")
    print(f"default   {_defaults_line(data)}")
    print(f"{'artifact':<34} {'size':>10} {'cos min':>9}  flags")
    for a in manifest.artifacts:
        cos = a.fidelity.get("cosine_min")
        print(f"{a.file:<34} {a.bytes / 1e6:>8.2f}MB {'-' if cos is None else f'{cos:.6f}':>9}  "
              f"{','.join(a.flags) or '-'}")
    if args.verify:
        print(f"verified  {len(checked) - len(problems)} of {len(checked)} files intact (inside the bundle, sha256 "
              "as in the manifest)")
        for name, problem in problems:
            print(f"  {name}: {problem}")
    return _verdict(problems, len(checked))


def _defaults_line(data: dict[str, Any]) -> str:
    """What runs when no --precision is given, per format (clipedge.runtime.defaults), and how it was chosen."""
    section = data.get("defaults") or {}
    by_format = section.get("by_format") or {}
    if not by_format:
        return "the first file listed (this bundle was exported before defaults were recorded)"
    runs = ", ".join(f"{fmt} {entry.get('cpu')}" + (f" (gpu: {entry['gpu']})" if "gpu" in entry else "")
                     for fmt, entry in by_format.items())
    tied = "; ".join(f"{fmt} tied with {', '.join(names)}" for fmt, names in (section.get("tied") or {}).items())
    return f"{runs}: {section.get('rule', '')}" + (f" ({tied})" if tied else "")


def _verdict(problems: list[tuple[str, str]], total: int) -> int:
    if problems:
        raise BundleError(f"{len(problems)} of {total} bundle files failed the check, the first: {problems[0][0]}: "
                          f"{problems[0][1]}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from clipedge.runtime.bench import bench, bench_table, machine_info, usable_cores

    if args.photos:
        from clipedge.runtime.bench_photos import photos_command

        payload, human = photos_command(args)
        emit(args, payload, human)
        return 0
    rows = bench(args.target, tower=args.tower, fmt=args.format, precision=args.precision, variant=args.variant,
                 batches=args.batch, threads=args.threads or [usable_cores()], repeats=args.repeats,
                 warmup=args.warmup, accelerator=args.accelerator)
    machine = machine_info()
    payload = {"machine": machine, "rows": [row.to_dict() for row in rows]}
    emit(args, payload, f"{bench_table(rows)}\n{machine['cpu']}, {machine['usable_cores']} usable cores, "
                        f"load average {machine['load_average']}; {args.repeats} timed runs after {args.warmup} "
                        "warm-up, model call only (no preprocessing or tokenization)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    import shlex

    from clipedge.runtime.report.run import run_report

    say = (lambda message: None) if args.json else (lambda message: print(message, file=sys.stderr, flush=True))
    result = run_report(
        args.bundle, out=args.out, command=shlex.join(["clipedge", *args.argv]), note=args.note,
        eval_dir=args.eval if args.eval is not None else "shipped", pairs=args.pairs, threads=args.threads,
        batch=args.batch, repeats=args.repeats, warmup=args.warmup, baseline=not args.no_baseline,
        baseline_checkpoint=args.baseline_checkpoint, memory=not args.no_memory, template=args.template,
        precisions=args.precisions, formats=args.formats, progress=say,
    )
    written = [str(p) for p in (result.json_path, result.markdown_path, result.png_path) if p is not None]
    rec = result.data["recommendations"]
    human = [f"wrote {', '.join(written)}"]  # no report.png: said once, by render's warning on stderr
    for goal in ("smallest", "fastest"):
        pick = rec.get(goal)
        if pick:
            label = f"{pick['format']} {pick['precision']}"
            tied = [name for name in pick.get("tied") or () if name != label]
            human.append(f"{goal} within the rule: {label} ({pick['bytes'] / 1e6:.2f} MB: {' + '.join(pick['files'])})"
                         + (f", tied within the timing noise with {', '.join(tied)}: the smallest" if tied else ""))
    emit(args, {"files": written, "recommendations": rec}, "\n".join(human))
    return 0


def cmd_web(args: argparse.Namespace) -> int:
    from clipedge.runtime.web import build_site

    site = build_site(args.bundle, args.out, precision=args.precision, mediapipe=args.mediapipe,
                      gallery=args.gallery, queries=args.queries, server=args.server)
    payload = {"site": str(site.path), "precision": site.precision, "bytes": site.bytes, "files": site.files,
               "bytes_by_part": site.sizes, "search_texts": site.texts, "gallery_images": site.gallery,
               "mediapipe_version": site.mediapipe_version}
    parts = ", ".join(f"{name} {size / 1e6:.2f}" for name, size in site.sizes.items() if size)  # none: no mediapipe
    emit(args, payload, f"wrote {site.path}: {site.files} files, {site.bytes / 1e6:.2f} MB ({parts} MB), "
                        f"{site.precision} models, {site.gallery} gallery images, {site.texts} search texts\n"
                        f"serve it: python3 -m http.server 8000 --bind 127.0.0.1 --directory {site.path}\n"
                        "then open http://127.0.0.1:8000/")
    return 0
