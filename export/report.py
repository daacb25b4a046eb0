"""`clipedge report BUNDLE`: every artifact of a bundle measured on this machine, and the artifact to pick per goal.

Per artifact (tower x format x precision x variant): file size; latency at batch 1 and a larger batch (median, p90);
peak memory of a fresh process that opens it and runs it once; embedding fidelity against the bundle's fp32 artifact
of the same format (cosine mean / 5th percentile / min on held-out photos and captions). Per image+text pair of one
format and precision: zero-shot top-1 on a labelled image folder and its agreement with fp32, text-to-image recall@1/@5
on image-caption pairs, and the same with one tower quantized and the other fp32 (embeddings of a quantized image model
searched against an fp32 text index, and the reverse). When torch and transformers are installed and the checkpoint
is a local HF directory, PyTorch fp32 runs in the same process as the baseline: its batch-1 latency (every latency
gets a ratio measured side by side) and its embeddings (fidelity of the fp32 artifacts against the reference).

Why it lives here and imports no TensorFlow: the measuring is the runtime's (`clipedge.runtime.bench`, the same
backends a device uses), the rest is numpy and json; matplotlib (the `report` extra) only draws the PNG and torch
only runs the baseline, both optional. So `clipedge report` runs on a runtime-only install plus matplotlib, e.g. on
the Pi itself, where the latencies and the interpreter's own int8 accuracy are the ones that matter.
Writing the files is `clipedge.export.report_render`.
"""

from __future__ import annotations

import datetime as _dt
import logging
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clipedge.runtime.bench import machine_info, measure_latency, peak_memory, synthetic_feeds, usable_cores
from clipedge.runtime.clip import DEFAULT_TEMPLATE, CLIPRuntime, fill_template, gpu_text_feeds
from clipedge.runtime.errors import BackendError, InputError
from clipedge.runtime.manifest import Artifact, Manifest
from clipedge.runtime.scoring import l2_normalize

__all__ = [
    "REPORT_VERSION",
    "DEFAULT_BATCH",
    "DEFAULT_REPEATS",
    "ReportResult",
    "LabelledImages",
    "Pairs",
    "cosine_stats",
    "measure_bundle",
    "pareto",
    "pareto_front",
    "read_eval_folder",
    "read_pairs",
    "recall_at_k",
    "recommend",
    "run_report",
    "top1_accuracy",
    "torch_baseline",
]

log = logging.getLogger(__name__)

REPORT_VERSION = 1
DEFAULT_BATCH = 8
DEFAULT_REPEATS = 20
DEFAULT_WARMUP = 2
WITHIN_POINTS = 1.0  # "within 1 point of fp32": percentage points of zero-shot top-1
FIDELITY_STAND_IN = 0.99  # without a labelled folder: both towers' 5th-percentile cosine vs fp32 at least this
CHUNK = 32  # images or texts per model call while embedding
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


# ---- metrics (pure numpy; embeddings are rows) ---------------------------------------------------------------------
def cosine_stats(ours: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Row-wise cosine to the reference rows: mean, 5th percentile, min (and the number of rows)."""
    cos = np.sum(l2_normalize(ours) * l2_normalize(reference), axis=-1)
    return {"cosine_mean": float(cos.mean()), "cosine_p5": float(np.percentile(cos, 5)),
            "cosine_min": float(cos.min()), "samples": int(len(cos))}


def zero_shot_predictions(image_embeds: np.ndarray, label_embeds: np.ndarray) -> np.ndarray:
    """Index of the most similar label per image (the softmax's argmax: logit_scale does not change it)."""
    return np.argmax(l2_normalize(image_embeds) @ l2_normalize(label_embeds).T, axis=-1)


def top1_accuracy(predictions: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean(np.asarray(predictions) == np.asarray(truth)))


def recall_at_k(text_embeds: np.ndarray, image_embeds: np.ndarray, truth: np.ndarray,
                ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Text-to-image retrieval: the share of texts whose own image (`truth[i]`, a row of `image_embeds`) is among
    the k most similar images. Rank = number of images scoring strictly higher (ties count in the text's favour)."""
    scores = l2_normalize(text_embeds) @ l2_normalize(image_embeds).T
    own = scores[np.arange(len(truth)), truth]
    rank = (scores > own[:, None]).sum(axis=1)
    return {f"recall@{k}": float(np.mean(rank < k)) for k in ks}


# ---- data -----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelledImages:
    """An eval folder: `root/<label_with_underscores>/*.jpg`; class k's label is its folder name, `_` -> space."""

    root: Path
    files: list[Path]
    truth: np.ndarray  # class index per file
    classes: list[str]


@dataclass(frozen=True)
class Pairs:
    """Image-caption pairs from a TSV: each caption's own image is `images[truth[i]]` (images deduplicated)."""

    file: Path
    images: list[Path]
    captions: list[str]
    truth: np.ndarray


def read_eval_folder(root: str | Path) -> LabelledImages:
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"eval folder {root} does not exist (expected one subfolder of images per class)")
    classes, files, truth = [], [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not found:
            continue
        truth += [len(classes)] * len(found)
        files += found
        classes.append(folder.name.replace("_", " "))
    if len(classes) < 2:
        raise InputError(f"eval folder {root} has {len(classes)} class subfolder(s) with images; zero-shot top-1 "
                         "needs at least 2 (one subfolder per class, named after the label, e.g. red_circle/)")
    return LabelledImages(root, files, np.asarray(truth), classes)


def read_pairs(file: str | Path) -> Pairs:
    """TSV lines `image path<TAB>caption`; relative paths are relative to the TSV; blank and # lines are skipped."""
    file = Path(file)
    if not file.is_file():
        raise InputError(f"pairs file {file} does not exist (TSV: image path, tab, caption per line)")
    images: dict[Path, int] = {}
    captions, truth = [], []
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        path_text, tab, caption = line.partition("\t")
        if not tab or not caption.strip() or not path_text.strip():
            raise InputError(f"{file} line {number}: expected 'image path<TAB>caption', got {line!r}")
        path = Path(path_text.strip())
        path = path if path.is_absolute() else file.parent / path
        if not path.is_file():
            raise InputError(f"{file} line {number}: image {path} does not exist")
        truth.append(images.setdefault(path, len(images)))
        captions.append(caption.strip())
    if len(images) < 2:
        raise InputError(f"{file} has {len(images)} distinct image(s); retrieval needs at least 2")
    return Pairs(file, list(images), captions, np.asarray(truth))


def shipped_data() -> Path | None:
    from clipedge.export.samples import default_calibration_dir

    return default_calibration_dir()


def held_out_data(manifest: Manifest) -> tuple[list[Path], list[str], str]:
    """Shipped photos and captions the bundle's export did not calibrate on (its split recomputed from the
    manifest's seed and sample count; the shipped data are what `clipedge export` calibrates on by default)."""
    from clipedge.export.samples import _split, list_images, read_captions

    root = shipped_data()
    if root is None or not (root / "photos").is_dir() or not (root / "captions.txt").is_file():
        raise InputError("the shipped calibration_data (photos/, captions.txt) is not installed; reinstall clipedge")
    export = manifest.data.get("export", {})
    samples, seed = int(export.get("samples", 64)), int(export.get("seed", 0))
    all_images = list_images(root)  # what export listed (the whole calibration_data tree)
    captions = read_captions(root / "captions.txt")
    calibrated_images = set(_split(all_images, samples, 32, seed, "images")[0])
    calibrated_captions = set(_split(captions, samples, 32, seed, "captions")[0])
    photos = [p for p in list_images(root / "photos") if p not in calibrated_images]
    texts = [c for c in captions if c not in calibrated_captions]
    note = (f"calibration_data/photos and captions.txt minus the {len(calibrated_images)} images and "
            f"{len(calibrated_captions)} captions export (seed {seed}, {samples} samples) calibrated on")
    return photos, texts, note


# ---- the PyTorch baseline --------------------------------------------------------------------------------------------
def baseline_checkpoint_for(manifest: Manifest, given: str | Path | None) -> tuple[Path | None, str]:
    """The HF checkpoint directory to run in PyTorch, or None and why not."""
    if given is not None:
        path = Path(given)
        if not (path / "config.json").is_file():
            raise InputError(f"--baseline-checkpoint {path} is not a HF checkpoint directory (no config.json)")
        return path, "given"
    source = str(manifest.data.get("model", {}).get("source", ""))
    if source and (Path(source) / "config.json").is_file():
        return Path(source), "the manifest's model source"
    return None, (f"the manifest's model source {source!r} is not a local HF checkpoint directory; "
                  "pass --baseline-checkpoint DIR")


def torch_baseline(checkpoint: Path, pixels_nhwc: np.ndarray, ids: np.ndarray, threads: int,
                   repeats: int, warmup: int) -> dict[str, Any]:
    """transformers `CLIPModel` (PyTorch, fp32, eager) on the same inputs: batch-1 latency per tower with
    `torch.set_num_threads(threads)`, and embeddings of every given image and text (the reference)."""
    import torch
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(checkpoint).eval()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)

    def features(out: Any) -> np.ndarray:
        return getattr(out, "pooler_output", out).float().numpy()  # transformers 5 returns an output object

    pixels = torch.from_numpy(np.ascontiguousarray(pixels_nhwc.transpose(0, 3, 1, 2)))  # NHWC -> NCHW
    tokens = torch.from_numpy(ids.astype(np.int64))
    try:
        with torch.inference_mode():
            image_1, text_1 = pixels[:1], tokens[:1]
            latency = {
                "image": measure_latency(lambda: model.get_image_features(pixel_values=image_1), repeats, warmup),
                "text": measure_latency(lambda: model.get_text_features(input_ids=text_1), repeats, warmup),
            }
            image_embeds = np.concatenate([features(model.get_image_features(pixel_values=pixels[i : i + CHUNK]))
                                           for i in range(0, len(pixels), CHUNK)])
            text_embeds = np.concatenate([features(model.get_text_features(input_ids=tokens[i : i + CHUNK]))
                                          for i in range(0, len(tokens), CHUNK)])
    finally:
        torch.set_num_threads(previous)
    return {"status": "ran", "checkpoint": str(checkpoint), "threads": threads, "torch": torch.__version__,
            "latency": {tower: value.to_dict() for tower, value in latency.items()},
            "embeddings": {"image": l2_normalize(image_embeds), "text": l2_normalize(text_embeds)}}


# ---- measuring -------------------------------------------------------------------------------------------------------
def _layout(artifact: Artifact) -> str:
    return artifact.input_layout or ("NCHW" if artifact.format == "onnx" else "NHWC")


def _run_images(runtime: CLIPRuntime, tower: str, pixels_nhwc: np.ndarray, layout: str) -> np.ndarray:
    parts = []
    for start in range(0, len(pixels_nhwc), CHUNK):
        chunk = pixels_nhwc[start : start + CHUNK]
        chunk = np.ascontiguousarray(chunk.transpose(0, 3, 1, 2)) if layout == "NCHW" else chunk
        parts.append(runtime.run(tower, {"pixel_values": chunk}))
    out = np.concatenate(parts)
    return out if tower == "classifier" else l2_normalize(out)


def _run_texts(runtime: CLIPRuntime, artifact: Artifact, ids: np.ndarray) -> np.ndarray:
    """`encode_texts` on ids tokenized once for all models (tests/export/test_report.py checks they agree)."""
    table = None
    if "token_table" in artifact.extra:  # the GPU variant: the runtime looks the tokens up
        entry = artifact.extra["token_table"]
        table = np.load(runtime.manifest.verified_file(entry["file"], entry["sha256"]), allow_pickle=False)
    parts = []
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        feeds = {"input_ids": chunk} if table is None else gpu_text_feeds(chunk, table, artifact.extra["pool"])
        parts.append(runtime.run("text", feeds))
    return l2_normalize(np.concatenate(parts))


def _outputs(runtime: CLIPRuntime, artifact: Artifact, pixel_sets: dict[str, np.ndarray],
             id_sets: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Embeddings (image/text) or probabilities (classifier) of every data set the artifact's tower takes."""
    if artifact.tower == "text":
        return {name: _run_texts(runtime, artifact, ids) for name, ids in id_sets.items() if len(ids)}
    return {name: _run_images(runtime, artifact.tower, pixels, _layout(artifact))
            for name, pixels in pixel_sets.items() if len(pixels)}


def _latencies(runtime: CLIPRuntime, artifact: Artifact, batches: Sequence[int], repeats: int,
               warmup: int) -> tuple[dict[str, Any], str]:
    backend = runtime.backend(artifact.tower)
    out = {}
    for batch in batches:
        feeds = synthetic_feeds(backend.inputs, batch, artifact, runtime.manifest)
        out[f"batch_{batch}"] = measure_latency(lambda f=feeds: backend.run(f), repeats, warmup).to_dict()
    fixed = next((s.shape[0] for s in backend.inputs if s.shape and s.shape[0] > 0), None)
    if fixed is not None:
        out["model_batch"] = fixed
    return out, backend.info.backend


def _companions(artifact: Artifact) -> list[dict[str, Any]]:
    """Files an artifact needs besides itself (the GPU text variant's token table: {"file", "bytes", "sha256"})."""
    return [artifact.extra["token_table"]] if "token_table" in artifact.extra else []


def _key(artifact: Artifact) -> tuple[str, str, str, str]:
    return artifact.tower, artifact.format, artifact.precision, artifact.variant


def _data_sets(manifest: Manifest, photos: list[Path], captions: list[str], labelled: LabelledImages | None,
               pair_set: Pairs | None, template: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Pixels (NHWC; transposed per ONNX model) and token ids of every data set, prepared once for all models."""
    from clipedge.runtime.preprocess import PreprocessConfig, preprocess
    from clipedge.runtime.tokenizer import Tokenizer

    config = PreprocessConfig.from_dict(manifest.data["preprocess"])
    pixel_sets = {"held_out": preprocess(photos, config, layout="NHWC")}
    text_sets: dict[str, list[str]] = {"held_out": captions}
    if labelled:
        pixel_sets["eval"] = preprocess(labelled.files, config, layout="NHWC")
        text_sets["prompts"] = [fill_template(template, label) for label in labelled.classes]
    if pair_set:
        pixel_sets["pairs"] = preprocess(pair_set.images, config, layout="NHWC")
        text_sets["pairs"] = pair_set.captions
    tokenizer_dir = manifest.tokenizer_dir()
    tokenizer = Tokenizer.from_files(tokenizer_dir) if tokenizer_dir else Tokenizer.default()
    context = int(manifest.data["tokenizer"].get("context_length", 77))
    return pixel_sets, {name: tokenizer(texts, context_length=context) for name, texts in text_sets.items()}


def _baseline(manifest: Manifest, checkpoint: str | Path | None, pixels: np.ndarray, ids: np.ndarray, threads: int,
              repeats: int, warmup: int, say: Callable[[str], None]) -> dict[str, Any]:
    """`torch_baseline`, or {"status": "skipped", "reason"} when there is no checkpoint, torch or transformers."""
    path, why = baseline_checkpoint_for(manifest, checkpoint)
    if path is None:
        return {"status": "skipped", "reason": why}
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as err:
        return {"status": "skipped", "reason": f"{err.name} is not installed: pip install torch transformers"}
    say(f"PyTorch fp32 baseline: {path}")
    try:
        return torch_baseline(path, pixels, ids, threads, repeats, warmup)
    except (OSError, ValueError, KeyError, RuntimeError) as err:  # e.g. an OpenCLIP file, not a HF directory
        log.warning("PyTorch baseline skipped: %s", err)
        return {"status": "skipped", "reason": f"transformers could not run {path}: {err}"}


def measure_bundle(bundle: str | Path, *, eval_dir: str | Path | None = "shipped", pairs: str | Path | None = None,
                   threads: int | None = None, batch: int = DEFAULT_BATCH, repeats: int = DEFAULT_REPEATS,
                   warmup: int = DEFAULT_WARMUP, baseline: bool = True,
                   baseline_checkpoint: str | Path | None = None, memory: bool = True,
                   template: str = DEFAULT_TEMPLATE,
                   progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every number of the report, as a json-ready dict. `eval_dir="shipped"` means calibration_data/eval when it
    exists, None means no zero-shot; `baseline=False` skips PyTorch; `memory=False` skips the memory processes."""
    say = progress or (lambda message: None)
    for name, value, low in (("batch", batch, 2), ("repeats", repeats, 1), ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputError(f"{name} must be an integer >= {low}, got {value!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise InputError(f"threads must be a positive integer, got {threads!r}")
    threads = threads or usable_cores()
    fill_template(template, "x")  # checks the template before anything slow
    manifest = Manifest.read(bundle)
    if not manifest.artifacts:
        raise InputError(f"{bundle} lists no models")
    started = _dt.datetime.now(_dt.timezone.utc)
    machine = machine_info(extra_libraries=("torch", "transformers", "matplotlib"))

    photos, captions, held_note = held_out_data(manifest)
    if eval_dir == "shipped":
        root = shipped_data()
        eval_dir = root / "eval" if root is not None and (root / "eval").is_dir() else None
    labelled = read_eval_folder(eval_dir) if eval_dir is not None else None
    pair_set = read_pairs(pairs) if pairs is not None else None
    say(f"preprocessing {len(photos)} held-out photos"
        + (f", {len(labelled.files)} eval images" if labelled else "")
        + (f", {len(pair_set.images)} pair images" if pair_set else ""))
    pixel_sets, id_sets = _data_sets(manifest, photos, captions, labelled, pair_set, template)

    # Baseline first: its latency is measured in the same conditions (process, load) as the artifacts'.
    base: dict[str, Any] = {"status": "skipped", "reason": "disabled (--no-baseline)"}
    if baseline:
        base = _baseline(manifest, baseline_checkpoint, pixel_sets["held_out"], id_sets["held_out"], threads,
                         repeats, warmup, say)
    base_embeds = base.pop("embeddings", {})

    # Every artifact: outputs on every data set, latency, memory.
    batches = [1, batch]
    outputs: dict[tuple[str, str, str, str], dict[str, np.ndarray]] = {}
    records, measured, skipped = [], [], []
    for number, artifact in enumerate(manifest.artifacts, 1):
        say(f"[{number}/{len(manifest.artifacts)}] {artifact.file}")
        variant = artifact.variant if artifact.tower in ("image", "text") else "default"
        runtime = CLIPRuntime(manifest, artifact.format, artifact.precision, "cpu", threads, CHUNK, variant)
        try:
            runtime.backend(artifact.tower)
        except BackendError as err:  # e.g. a Pi with LiteRT only: its .onnx models are reported as not run
            log.warning("%s not measured: %s", artifact.file, err)
            skipped.append({"file": artifact.file, "reason": str(err)})
            continue
        measured.append(artifact)
        outputs[_key(artifact)] = _outputs(runtime, artifact, pixel_sets, id_sets)
        latency, backend_name = _latencies(runtime, artifact, batches, repeats, warmup)
        del runtime
        record: dict[str, Any] = {
            "file": artifact.file, "tower": artifact.tower, "format": artifact.format,
            "precision": artifact.precision, "variant": artifact.variant,
            # What the device ships: the model file plus companions (the GPU text variant's token table).
            "bytes": artifact.bytes + sum(companion["bytes"] for companion in _companions(artifact)),
            "file_bytes": artifact.bytes, "companions": [companion["file"] for companion in _companions(artifact)],
            "flags": list(artifact.flags), "backend": backend_name, "latency": latency,
            "export_fidelity": {k: v for k, v in artifact.fidelity.items() if k != "export_seconds"},
        }
        torch_tower = "text" if artifact.tower == "text" else "image"
        if base.get("status") == "ran":
            record["latency_ratio_to_torch"] = (
                latency["batch_1"]["median_ms"] / base["latency"][torch_tower]["median_ms"])
        if memory:
            record["memory"] = peak_memory(manifest.directory, artifact.file, threads)
        records.append(record)

    # Fidelity: against the fp32 artifact of the same tower and format (default variant), and against PyTorch.
    for artifact, record in zip(measured, records, strict=True):
        reference = outputs.get((artifact.tower, artifact.format, "fp32", "default"))
        ours = outputs[_key(artifact)]
        if reference is not None:
            record["reference"] = next(a.file for a in measured
                                       if _key(a) == (artifact.tower, artifact.format, "fp32", "default"))
            record["fidelity_vs_fp32"] = cosine_stats(ours["held_out"], reference["held_out"])
            if artifact.tower == "classifier":
                record["fidelity_vs_fp32"]["top1_agreement"] = float(np.mean(
                    ours["held_out"].argmax(-1) == reference["held_out"].argmax(-1)))
        if artifact.tower in base_embeds:
            record["fidelity_vs_torch"] = cosine_stats(ours["held_out"], base_embeds[artifact.tower])

    data: dict[str, Any] = {
        "report_version": REPORT_VERSION,
        "bundle": str(bundle),
        "model": {k: manifest.data.get("model", {}).get(k) for k in ("name", "source", "sha256")},
        "embed_dim": manifest.embed_dim,
        "started": started.isoformat(timespec="seconds"),
        "machine": machine,
        "settings": {"threads": threads, "batches": batches, "repeats": repeats, "warmup": warmup,
                     "template": template, "memory": memory, "within_points": WITHIN_POINTS},
        "data": {
            "held_out": {"images": len(photos), "captions": len(captions), "what": held_note},
            "eval": None if labelled is None else {"dir": str(labelled.root), "classes": len(labelled.classes),
                                                   "images": len(labelled.files), "labels": labelled.classes},
            "pairs": None if pair_set is None else {"file": str(pair_set.file), "images": len(pair_set.images),
                                                    "captions": len(pair_set.captions)},
        },
        "baseline": base,
        "artifacts": records,
        "skipped": skipped,
    }
    data["pairs"] = _pair_rows(records, outputs, labelled, pair_set)
    data["cross_precision"] = _cross_rows(measured, outputs, labelled, pair_set)
    data["classifiers"] = _classifier_rows(measured, records, outputs, labelled)
    data["recommendations"] = recommend(data)
    data["pareto"] = pareto(data)
    data["machine"]["load_average_end"] = machine_info()["load_average"]
    data["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return data


def _pair_metrics(image: dict[str, np.ndarray], text: dict[str, np.ndarray],
                  ref_image: dict[str, np.ndarray] | None, ref_text: dict[str, np.ndarray] | None,
                  labelled: LabelledImages | None, pair_set: Pairs | None) -> dict[str, Any]:
    """Zero-shot, retrieval and score drift of one image model's embeddings against one text model's."""
    out: dict[str, Any] = {}
    similarities = image["held_out"] @ text["held_out"].T  # cosines: both are unit rows
    if ref_image is not None and ref_text is not None:
        drift = np.abs(similarities - ref_image["held_out"] @ ref_text["held_out"].T)
        out["similarity_vs_fp32"] = {"mean_abs_diff": float(drift.mean()), "max_abs_diff": float(drift.max())}
    if labelled is not None:
        predictions = zero_shot_predictions(image["eval"], text["prompts"])
        zero_shot = {"top1": top1_accuracy(predictions, labelled.truth), "images": len(labelled.files)}
        if ref_image is not None and ref_text is not None:
            zero_shot["top1_agreement_fp32"] = top1_accuracy(
                predictions, zero_shot_predictions(ref_image["eval"], ref_text["prompts"]))
        out["zero_shot"] = zero_shot
    if pair_set is not None:
        out["retrieval"] = recall_at_k(text["pairs"], image["pairs"], pair_set.truth)
    return out


def _pair_rows(records: list[dict], outputs: dict, labelled: LabelledImages | None,
               pair_set: Pairs | None) -> list[dict[str, Any]]:
    by_key = {(r["tower"], r["format"], r["precision"], r["variant"]): r for r in records}
    rows = []
    for (tower, fmt, precision, variant), image_record in by_key.items():
        text_record = by_key.get(("text", fmt, precision, variant))
        if tower != "image" or text_record is None:
            continue
        ref_image = outputs.get(("image", fmt, "fp32", "default"))
        ref_text = outputs.get(("text", fmt, "fp32", "default"))
        row = {"format": fmt, "precision": precision, "variant": variant,
               "files": [image_record["file"], text_record["file"]],
               "bytes": image_record["bytes"] + text_record["bytes"],
               "latency_batch_1_ms": {"image": image_record["latency"]["batch_1"]["median_ms"],
                                      "text": text_record["latency"]["batch_1"]["median_ms"]},
               "min_cosine_p5_vs_fp32": _min_p5(image_record, text_record)}
        ours_image, ours_text = outputs[("image", fmt, precision, variant)], outputs[("text", fmt, precision, variant)]
        row.update(_pair_metrics(ours_image, ours_text, ref_image, ref_text, labelled, pair_set))
        rows.append(row)
    return rows


def _min_p5(*records: dict) -> float | None:
    values = [(r.get("fidelity_vs_fp32") or {}).get("cosine_p5") for r in records]
    return None if any(v is None for v in values) else min(values)


def _cross_rows(artifacts: list[Artifact], outputs: dict, labelled: LabelledImages | None,
                pair_set: Pairs | None) -> list[dict[str, Any]]:
    """One tower quantized, the other fp32, same format: e.g. a device's int8 image model against an index of fp32
    text embeddings built on a workstation."""
    rows = []
    for fmt in sorted({a.format for a in artifacts}):
        ref_image = outputs.get(("image", fmt, "fp32", "default"))
        ref_text = outputs.get(("text", fmt, "fp32", "default"))
        if ref_image is None or ref_text is None:
            continue
        for precision in dict.fromkeys(a.precision for a in artifacts if a.format == fmt):
            if precision == "fp32":
                continue
            for quantized in ("image", "text"):
                ours = outputs.get((quantized, fmt, precision, "default"))
                if ours is None:
                    continue
                image, text = (ours, ref_text) if quantized == "image" else (ref_image, ours)
                row = {"format": fmt, "image": precision if quantized == "image" else "fp32",
                       "text": precision if quantized == "text" else "fp32"}
                row.update(_pair_metrics(image, text, ref_image, ref_text, labelled, pair_set))
                rows.append(row)
    return rows


def _classifier_rows(artifacts: list[Artifact], records: list[dict], outputs: dict,
                     labelled: LabelledImages | None) -> list[dict[str, Any]]:
    rows = []
    for artifact, record in zip(artifacts, records, strict=True):
        if artifact.tower != "classifier":
            continue
        labels = list(artifact.extra.get("labels") or [])
        row: dict[str, Any] = {"file": artifact.file, "format": artifact.format, "precision": artifact.precision,
                               "bytes": artifact.bytes, "labels": len(labels),
                               "template": artifact.extra.get("template"),
                               "latency_batch_1_ms": record["latency"]["batch_1"]["median_ms"],
                               "labels_match_eval": bool(labelled and set(labels) == set(labelled.classes))}
        if row["labels_match_eval"]:
            predicted = np.asarray(labels)[outputs[_key(artifact)]["eval"].argmax(-1)]
            row["top1"] = top1_accuracy(predicted, np.asarray(labelled.classes)[labelled.truth])
            reference = outputs.get(("classifier", artifact.format, "fp32", "default"))
            if reference is not None:
                row["top1_agreement_fp32"] = top1_accuracy(outputs[_key(artifact)]["eval"].argmax(-1),
                                                           reference["eval"].argmax(-1))
        rows.append(row)
    return rows


# ---- recommendations -------------------------------------------------------------------------------------------------
def _fp32_pair(pairs: list[dict], fmt: str) -> dict | None:
    return next((p for p in pairs if p["format"] == fmt and p["precision"] == "fp32" and p["variant"] == "default"),
                None)


def recommend(data: dict[str, Any]) -> dict[str, Any]:
    """The artifact (image+text pair of one format and precision) to pick per goal, and the rule that picked it.

    "Within 1 point of fp32": zero-shot top-1 at most 1 percentage point below the fp32 pair of the same format on
    the eval folder; without an eval folder, the stand-in rule is both towers' 5th-percentile cosine vs fp32 >= 0.99.
    """
    pairs = [p for p in data["pairs"] if p["variant"] == "default"]
    with_accuracy = any("zero_shot" in p for p in pairs)

    def passes(pair: dict) -> bool:
        reference = _fp32_pair(pairs, pair["format"])
        if with_accuracy:
            if reference is None or "zero_shot" not in pair:
                return False
            return pair["zero_shot"]["top1"] >= reference["zero_shot"]["top1"] - WITHIN_POINTS / 100 - 1e-9
        return (pair["min_cosine_p5_vs_fp32"] or 0.0) >= FIDELITY_STAND_IN

    rule = (f"zero-shot top-1 within {WITHIN_POINTS:g} point of the fp32 pair of the same format" if with_accuracy
            else f"no labelled eval folder: both towers' 5th-percentile cosine vs fp32 >= {FIDELITY_STAND_IN}")
    good = [p for p in pairs if passes(p)]
    out: dict[str, Any] = {"rule": rule}

    def describe(pair: dict) -> dict[str, Any]:
        return {"format": pair["format"], "precision": pair["precision"], "variant": pair["variant"],
                "files": pair["files"], "bytes": pair["bytes"],
                "top1": pair.get("zero_shot", {}).get("top1"),
                "latency_batch_1_ms": pair["latency_batch_1_ms"]}

    if good:
        out["smallest"] = describe(min(good, key=lambda p: p["bytes"]))
        out["fastest"] = describe(min(good, key=lambda p: sum(p["latency_batch_1_ms"].values())))
    else:
        out["smallest"] = out["fastest"] = None
    if pairs:
        out["fastest_any"] = describe(min(pairs, key=lambda p: sum(p["latency_batch_1_ms"].values())))
    for tower, other in (("image", "text"), ("text", "image")):  # one tower quantized, the other kept fp32
        passing, top1 = [], {}
        for record in data["artifacts"]:
            if record["tower"] != tower or record["variant"] != "default":
                continue
            if record["precision"] == "fp32":
                passing.append(record)
                continue
            reference = _fp32_pair(pairs, record["format"])
            row = next((r for r in data["cross_precision"] if r["format"] == record["format"]
                        and r[tower] == record["precision"] and r[other] == "fp32"), None)
            if with_accuracy:
                fine = bool(row and reference and "zero_shot" in row and row["zero_shot"]["top1"]
                            >= reference["zero_shot"]["top1"] - WITHIN_POINTS / 100 - 1e-9)
            else:
                fine = (record.get("fidelity_vs_fp32") or {}).get("cosine_p5", 0.0) >= FIDELITY_STAND_IN
            if fine:
                passing.append(record)
                top1[record["file"]] = (row or {}).get("zero_shot", {}).get("top1")
        if passing:
            best = min(passing, key=lambda r: r["bytes"])
            if best["precision"] == "fp32":
                reference = _fp32_pair(pairs, best["format"])
                top1[best["file"]] = (reference or {}).get("zero_shot", {}).get("top1")
            out[f"smallest_{tower}"] = {"file": best["file"], "bytes": best["bytes"], "top1": top1.get(best["file"]),
                                        "latency_batch_1_ms": best["latency"]["batch_1"]["median_ms"]}
    gpu = [p for p in data["pairs"] if p["variant"] == "gpu"]
    if gpu:
        records = {r["file"]: r for r in data["artifacts"]}
        pair = gpu[0]
        out["gpu"] = {**describe(pair), "compatible": _gpu_compatible(data, pair["files"]),
                      "note": "the 'gpu' variant is fully delegated on LiteRT's GPU accelerator; its latency here "
                              "was measured on this machine's CPU, not on a GPU",
                      "cosine_p5_vs_fp32": {f: records[f].get("fidelity_vs_fp32", {}).get("cosine_p5")
                                            for f in pair["files"]}}
    else:
        out["gpu"] = None
    return out


def pareto_front(items: list[dict[str, Any]], cost: Callable[[dict], float],
                 quality: Callable[[dict], float]) -> list[dict[str, Any]]:
    """The items no other item beats: none is at most as costly and at least as good with one of the two strictly
    better. Sorted by cost, so the frontier reads as "what each step up in size or time buys"."""
    front = []
    for item in items:
        c, q = cost(item), quality(item)
        dominated = any((cost(o) <= c and quality(o) >= q) and (cost(o) < c or quality(o) > q) for o in items)
        if not dominated:
            front.append(item)
    return sorted(front, key=lambda i: (cost(i), -quality(i)))


def pair_quality(pair: dict[str, Any]) -> float | None:
    """The accuracy axis of the frontier: zero-shot top-1 when there is an eval folder, else the worse tower's
    5th-percentile cosine vs fp32."""
    if "zero_shot" in pair:
        return pair["zero_shot"]["top1"]
    return pair.get("min_cosine_p5_vs_fp32")


def pareto(data: dict[str, Any]) -> dict[str, Any]:
    """Accuracy-vs-size and accuracy-vs-latency frontiers over the image+text pairs (both formats together, the
    `auto` pairs included): the precisions worth shipping; everything off the frontier is beaten on both axes."""
    pairs = [p for p in data["pairs"] if p["variant"] == "default" and pair_quality(p) is not None]
    axis = "zero-shot top-1" if any("zero_shot" in p for p in pairs) else "5th-percentile cosine vs fp32"

    def names(front: list[dict]) -> list[str]:
        return [f"{p['format']} {p['precision']}" for p in front]

    latency = lambda p: sum(p["latency_batch_1_ms"].values())  # noqa: E731
    return {"quality": axis,
            "size": names(pareto_front(pairs, lambda p: p["bytes"], pair_quality)),
            "latency": names(pareto_front(pairs, latency, pair_quality))}


def _gpu_compatible(data: dict[str, Any], files: list[str]) -> bool:
    """Export's static check (LiteRT's GPU analyzer) found every op supported: no "gpu-incompatible" flag."""
    flags = {r["file"]: r["flags"] for r in data["artifacts"]}
    return not any("gpu-incompatible" in flags.get(f, []) for f in files)


# ---- the whole job --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReportResult:
    data: dict[str, Any]
    json_path: Path
    markdown_path: Path
    png_path: Path | None  # None when matplotlib is not installed


def run_report(bundle: str | Path, out: str | Path | None = None, command: str | None = None,
               note: str | None = None, **settings: Any) -> ReportResult:
    """Measure (`measure_bundle(**settings)`) and write report.json, report.md and report.png into `out`
    (default BUNDLE/report/)."""
    from clipedge.export.report_render import write_report

    bundle = Path(bundle)
    Manifest.read(bundle)  # a missing or broken bundle fails here, before anything else
    data = measure_bundle(bundle, **settings)
    data["command"] = command or shlex.join(["clipedge", *sys.argv[1:]])
    data["note"] = note
    paths = write_report(data, Path(out) if out else bundle / "report")
    return ReportResult(data, *paths)
