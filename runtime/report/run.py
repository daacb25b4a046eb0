"""`clipedge report BUNDLE`: every artifact of a bundle measured on this machine, and the artifact to pick per goal.

Per artifact (tower x format x precision x variant): file size; latency at batch 1 and a larger batch (median, p90);
peak memory of a fresh process that opens it and runs it once; embedding fidelity against the bundle's fp32 artifact
of the same format (cosine mean / 5th percentile / min on held-out photos and captions). Per image+text pair of one
format and precision: zero-shot top-1 on a labelled image folder and its agreement with fp32, text-to-image recall@1/@5
on image-caption pairs, and the same with one tower quantized and the other fp32 (embeddings of a quantized image model
searched against an fp32 text index, and the reverse). When torch and transformers are installed and the checkpoint
is a local HF directory, PyTorch fp32 runs in the same process as the baseline: its batch-1 latency (every latency
gets a ratio measured side by side) and its embeddings (fidelity of the fp32 artifacts against the reference).

Why it lives here and imports no TensorFlow: every artifact runs through the runtime's `ArtifactRunner` and is timed
by `clipedge.runtime.bench` (the same backends a device uses), the rest is numpy and json; matplotlib (the `report`
extra) only draws the PNG and torch only runs the baseline, both optional. So `clipedge report` runs on a
runtime-only install plus matplotlib, e.g. on the Pi itself, where the latencies and the interpreter's own int8
accuracy are the ones that matter.

This module measures; `report_analysis` draws the conclusions (pair rows, recommendations, Pareto frontiers),
`report_baseline` runs PyTorch and `report_render` writes the files.
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
from clipedge.runtime.datasets import (
    LabelledImages,
    Pairs,
    list_images,
    read_captions,
    read_eval_folder,
    read_pairs,
    shipped_data_dir,
)
from clipedge.runtime.errors import BackendError, InputError
from clipedge.runtime.manifest import Artifact, Manifest
from clipedge.runtime.metrics import TIE_MARGIN, cosine_stats
from clipedge.runtime.prompts import DEFAULT_TEMPLATE, fill_template
from clipedge.runtime.report.analysis import (
    WITHIN_POINTS,
    Outputs,
    artifact_key,
    classifier_rows,
    cross_rows,
    pair_rows,
    pareto,
    recommend,
)
from clipedge.runtime.report.baseline import run_baseline
from clipedge.runtime.report.selection import check_names, select_artifacts
from clipedge.runtime.runner import ArtifactRunner
from clipedge.runtime.scoring import l2_normalize

__all__ = [
    "REPORT_VERSION",
    "DEFAULT_BATCH",
    "DEFAULT_REPEATS",
    "DEFAULT_WARMUP",
    "ReportResult",
    "default_out_dir",
    "held_out_data",
    "measure_bundle",
    "run_report",
]

log = logging.getLogger(__name__)

REPORT_VERSION = 1
DEFAULT_BATCH = 8
DEFAULT_REPEATS = 20
DEFAULT_WARMUP = 2
CHUNK = 32  # images or texts per model call while embedding
SHIPPED = "calibration_data"  # how the export's calibration record names the shipped data


# ---- data -----------------------------------------------------------------------------------------------------------
def held_out_data(manifest: Manifest) -> tuple[list[Path], list[str], str]:
    """Shipped photos and captions the bundle's export did not calibrate on, and a sentence saying so.

    The export records what it calibrated on (`manifest.data["export"]["calibration"]`); reading that record, instead
    of recomputing the export's split, keeps the report on held-out data whatever the split rule becomes. A bundle
    from an older clipedge has no record: all shipped data are used, and the report says some may have been seen."""
    root = shipped_data_dir()
    if root is None or not (root / "photos").is_dir() or not (root / "captions.txt").is_file():
        raise InputError("the shipped calibration_data (photos/, captions.txt) is not installed; reinstall clipedge")
    photos = list_images(root / "photos")
    captions = read_captions(root / "captions.txt")
    record = (manifest.data.get("export") or {}).get("calibration")
    if not record:
        log.warning("%s does not record which files its export calibrated on (exported by an older clipedge): "
                    "fidelity is measured on all shipped photos and captions, some of which it may have calibrated "
                    "on", manifest.directory)
        return photos, captions, ("all of calibration_data/photos and captions.txt: the bundle does not record what "
                                  "its export calibrated on (an older clipedge), so some may have been seen")
    images_dir = root if record.get("images_dir", SHIPPED) == SHIPPED else Path(record["images_dir"])
    calibrated_images = {(images_dir / name).resolve() for name in record.get("calibrated_images", [])}
    calibrated_captions = set(record.get("calibrated_captions", []))
    held_photos = [p for p in photos if p.resolve() not in calibrated_images]
    held_captions = [c for c in captions if c not in calibrated_captions]
    note = (f"calibration_data/photos and captions.txt minus the {len(photos) - len(held_photos)} images and "
            f"{len(captions) - len(held_captions)} captions the export calibrated on (as its manifest records)")
    return held_photos, held_captions, note


def _labelled_and_pairs(eval_dir: str | Path | None, pairs: str | Path | None
                        ) -> tuple[LabelledImages | None, Pairs | None]:
    if eval_dir == "shipped":
        root = shipped_data_dir()
        eval_dir = root / "eval" if root is not None and (root / "eval").is_dir() else None
    labelled = read_eval_folder(eval_dir) if eval_dir is not None else None
    return labelled, read_pairs(pairs) if pairs is not None else None


def _data_sets(manifest: Manifest, photos: list[Path], captions: list[str], labelled: LabelledImages | None,
               pair_set: Pairs | None, template: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """NHWC pixels and token ids of every data set, prepared once for all models (each runner transposes for its own
    layout): preprocessing, not the models, would otherwise dominate a report of many small files."""
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


# ---- measuring one artifact -----------------------------------------------------------------------------------------
def _outputs(runner: ArtifactRunner, manifest: Manifest, pixel_sets: dict[str, np.ndarray],
             id_sets: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Embeddings (image/text, unit rows) or probabilities (classifier) of every data set the artifact's tower
    takes. The mobile variant takes uint8 RGB: it gets the same pixels, un-normalized, as an app would feed it."""
    tower = runner.artifact.tower
    if tower == "text":
        return {name: l2_normalize(runner.run(ids)) for name, ids in id_sets.items() if len(ids)}
    uint8 = runner.backend.inputs[0].dtype == "uint8"
    if uint8:
        from clipedge.runtime.preprocess import uint8_pixels

        config = manifest.data["preprocess"]
    out = {}
    for name, pixels in pixel_sets.items():
        if len(pixels):
            result = runner.run(uint8_pixels(pixels, config["mean"], config["std"]) if uint8 else pixels)
            out[name] = result if tower == "classifier" else l2_normalize(result)
    return out


def _latencies(runner: ArtifactRunner, manifest: Manifest, batches: Sequence[int], repeats: int,
               warmup: int) -> dict[str, Any]:
    """The backend alone on synthetic feeds: latency is the model's, not the preprocessing's or the tokenizer's."""
    backend = runner.backend
    out: dict[str, Any] = {}
    for batch in batches:
        feeds = synthetic_feeds(backend.inputs, batch, runner.artifact, manifest)
        out[f"batch_{batch}"] = measure_latency(lambda f=feeds: backend.run(f), repeats, warmup).to_dict()
    fixed = next((s.shape[0] for s in backend.inputs if s.shape and s.shape[0] > 0), None)
    if fixed is not None:
        out["model_batch"] = fixed
    return out


def _companions(artifact: Artifact) -> list[dict[str, Any]]:
    """Files an artifact needs besides itself (the GPU text variant's token table: {"file", "bytes", "sha256"})."""
    return [artifact.extra["token_table"]] if "token_table" in artifact.extra else []


def _record(runner: ArtifactRunner, manifest: Manifest, batches: Sequence[int], repeats: int, warmup: int,
            base: dict[str, Any]) -> dict[str, Any]:
    artifact = runner.artifact
    latency = _latencies(runner, manifest, batches, repeats, warmup)
    record: dict[str, Any] = {
        "file": artifact.file, "tower": artifact.tower, "format": artifact.format,
        "precision": artifact.precision, "variant": artifact.variant,
        # What the device ships: the model file plus companions (the GPU text variant's token table).
        "bytes": artifact.bytes + sum(companion["bytes"] for companion in _companions(artifact)),
        "file_bytes": artifact.bytes, "companions": [companion["file"] for companion in _companions(artifact)],
        "flags": list(artifact.flags), "backend": runner.info.backend, "latency": latency,
        # what ran it: "cpu", or "gpu" with the adapter LiteRT selected (a software Vulkan's latency is no phone's)
        "accelerator": runner.info.accelerator, "device": runner.info.device, "accelerator_note": runner.info.note,
        "export_fidelity": {k: v for k, v in artifact.fidelity.items() if k != "export_seconds"},
    }
    if base.get("status") == "ran":
        torch_tower = "text" if artifact.tower == "text" else "image"
        record["latency_ratio_to_torch"] = latency["batch_1"]["median_ms"] / base["latency"][torch_tower]["median_ms"]
    return record


def _add_fidelity(measured: list[Artifact], records: list[dict], outputs: Outputs,
                  base_embeds: dict[str, np.ndarray]) -> None:
    """Against the fp32 artifact of the same tower and format (default variant), and against PyTorch: the first
    isolates what quantization costs, the second what the whole conversion costs."""
    for artifact, record in zip(measured, records, strict=True):
        reference_key = (artifact.tower, artifact.format, "fp32", "default")
        reference = outputs.get(reference_key)
        ours = outputs[artifact_key(artifact)]
        if reference is not None:
            record["reference"] = next(a.file for a in measured if artifact_key(a) == reference_key)
            record["fidelity_vs_fp32"] = cosine_stats(ours["held_out"], reference["held_out"])
            if artifact.tower == "classifier":
                record["fidelity_vs_fp32"]["top1_agreement"] = float(np.mean(
                    ours["held_out"].argmax(-1) == reference["held_out"].argmax(-1)))
        if artifact.tower in base_embeds:
            record["fidelity_vs_torch"] = cosine_stats(ours["held_out"], base_embeds[artifact.tower])


# ---- the whole bundle -----------------------------------------------------------------------------------------------
def _checked_threads(batch: int, repeats: int, warmup: int, threads: int | None) -> int:
    """Bad settings fail before minutes of preprocessing and baseline, with the setting's name."""
    for name, value, low in (("batch", batch, 2), ("repeats", repeats, 1), ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputError(f"{name} must be an integer >= {low}, got {value!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise InputError(f"threads must be a positive integer, got {threads!r}")
    return threads or usable_cores()


def measure_bundle(bundle: str | Path, *, eval_dir: str | Path | None = "shipped", pairs: str | Path | None = None,
                   threads: int | None = None, batch: int = DEFAULT_BATCH, repeats: int = DEFAULT_REPEATS,
                   warmup: int = DEFAULT_WARMUP, baseline: bool = True,
                   baseline_checkpoint: str | Path | None = None, memory: bool = True,
                   template: str = DEFAULT_TEMPLATE, precisions: str | Sequence[str] | None = None,
                   formats: str | Sequence[str] | None = None,
                   progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every number of the report, as a json-ready dict. `eval_dir="shipped"` means calibration_data/eval when it
    exists, None means no zero-shot; `baseline=False` skips PyTorch; `memory=False` skips the memory processes;
    `precisions`/`formats` (comma lists or sequences, as export's) measure only those models, plus their fp32
    reference (report.selection)."""
    say = progress or (lambda message: None)
    threads = _checked_threads(batch, repeats, warmup, threads)
    fill_template(template, "x")  # checks the template before anything slow
    manifest = Manifest.read(bundle)
    if not manifest.artifacts:
        raise InputError(f"{bundle} lists no models")
    selection = select_artifacts(manifest, precisions, formats)
    started = _dt.datetime.now(_dt.timezone.utc)
    machine = machine_info(extra_libraries=("torch", "transformers", "matplotlib"))

    photos, captions, held_note = held_out_data(manifest)
    labelled, pair_set = _labelled_and_pairs(eval_dir, pairs)
    say(f"preprocessing {len(photos)} held-out photos"
        + (f", {len(labelled.files)} eval images" if labelled else "")
        + (f", {len(pair_set.images)} pair images" if pair_set else ""))
    pixel_sets, id_sets = _data_sets(manifest, photos, captions, labelled, pair_set, template)

    # Baseline first: its latency is measured in the same conditions (process, load) as the artifacts'.
    base: dict[str, Any] = {"status": "skipped", "reason": "disabled (--no-baseline)"}
    if baseline:
        base = run_baseline(manifest, baseline_checkpoint, pixel_sets["held_out"], id_sets["held_out"], threads,
                            repeats, warmup, say, CHUNK)
    base_embeds = base.pop("embeddings", {})

    # Every artifact: outputs on every data set, latency, memory.
    outputs: Outputs = {}
    records, measured, skipped = [], [], []
    for number, artifact in enumerate(selection.artifacts, 1):
        say(f"[{number}/{len(selection.artifacts)}] {artifact.file}")
        try:
            # gpu variants on LiteRT's GPU accelerator when there is one (else the CPU, and the record says why)
            runner = ArtifactRunner.open(manifest, artifact, threads=threads, chunk=CHUNK,
                                         accelerator="auto" if artifact.variant == "gpu" else "cpu")
        except BackendError as err:  # e.g. a Pi with LiteRT only: its .onnx models are reported as not run
            log.warning("%s not measured: %s", artifact.file, err)
            skipped.append({"file": artifact.file, "reason": str(err)})
            continue
        measured.append(artifact)
        outputs[artifact_key(artifact)] = _outputs(runner, manifest, pixel_sets, id_sets)
        record = _record(runner, manifest, [1, batch], repeats, warmup, base)
        del runner  # the memory process below is measured without this one's model in memory
        if memory:
            record["memory"] = peak_memory(manifest.directory, artifact.file, threads)
        records.append(record)
    _add_fidelity(measured, records, outputs, base_embeds)

    data: dict[str, Any] = {
        "report_version": REPORT_VERSION,
        "bundle": str(Path(bundle).resolve()),  # absolute: report.md is read from elsewhere than it was run
        "model": {k: manifest.data.get("model", {}).get(k) for k in ("name", "source", "sha256")},
        "embed_dim": manifest.embed_dim,
        "started": started.isoformat(timespec="seconds"),
        "machine": machine,
        "settings": {"threads": threads, "batches": [1, batch], "repeats": repeats, "warmup": warmup,
                     "template": template, "memory": memory, "within_points": WITHIN_POINTS,
                     "tie_margin": TIE_MARGIN},
        "data": {
            "held_out": {"images": len(photos), "captions": len(captions), "what": held_note},
            "eval": None if labelled is None else {"dir": str(labelled.root), "classes": len(labelled.classes),
                                                   "images": len(labelled.files), "labels": labelled.classes},
            "pairs": None if pair_set is None else {"file": str(pair_set.file), "images": len(pair_set.images),
                                                    "captions": len(pair_set.captions)},
        },
        "baseline": base,
        "selection": selection.record,
        "artifacts": records,
        "skipped": skipped,
    }
    data["pairs"] = pair_rows(records, outputs, labelled, pair_set)
    data["cross_precision"] = cross_rows(measured, outputs, labelled, pair_set)
    data["classifiers"] = classifier_rows(measured, records, outputs, labelled)
    data["recommendations"] = recommend(data)
    data["pareto"] = pareto(data)
    data["machine"]["load_average_end"] = machine_info()["load_average"]
    data["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return data


# ---- the whole job --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReportResult:
    data: dict[str, Any]
    json_path: Path
    markdown_path: Path
    png_path: Path | None  # None when matplotlib is not installed


def default_out_dir(bundle: str | Path, cwd: str | Path | None = None) -> Path:
    """./BUNDLENAME-report in the working directory. Not inside the bundle: a report is about a bundle, not part of
    it (files added to a bundle travel with it to every device, and the bundle a report measured would no longer be
    the bundle shipped). Run from inside the bundle, it goes beside the bundle instead."""
    bundle = Path(bundle).resolve()
    here = Path(cwd if cwd is not None else Path.cwd()).resolve()
    base = bundle.parent if here == bundle or bundle in here.parents else here
    return base / f"{bundle.name}-report"


def run_report(bundle: str | Path, out: str | Path | None = None, command: str | None = None,
               note: str | None = None, **settings: Any) -> ReportResult:
    """Measure (`measure_bundle(**settings)`) and write report.json, report.md and report.png into `out`
    (default `default_out_dir(bundle)`: ./BUNDLENAME-report, never inside the bundle unless `out` says so)."""
    from clipedge.runtime.report.render import write_report

    bundle = Path(bundle)
    check_names(settings.get("precisions"), settings.get("formats"))  # a misspelt name fails first, as in export
    Manifest.read(bundle)  # a missing or broken bundle fails here, before anything else
    data = measure_bundle(bundle, **settings)
    data["command"] = command or shlex.join(["clipedge", *sys.argv[1:]])
    data["note"] = note
    paths = write_report(data, Path(out) if out else default_out_dir(bundle))
    return ReportResult(data, *paths)
