"""`export_bundle`: checkpoint -> verified bundle, the product's main job (also `clipedge export`).

One job per (tower, format, precision, variant): convert, write into the bundle's temporary directory, run with the
runtime's own backends on held-out samples against the float TF model, record size/sha256/fidelity. The bundle is
renamed into place only when every job succeeded. `mobile=True` adds the MediaPipe-ready image (and classifier)
towers, TFLite `mobile` variant per precision (clipedge.export.mobile).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clipedge.export.bundle import BundleWriter
from clipedge.export.checkpoint import CLIPModel
from clipedge.export.model.clip import CLIPEncoder
from clipedge.export.onnx import ONNX_PRECISIONS, convert_onnx
from clipedge.export.samples import SampleSet, build_samples
from clipedge.export.tflite import TFLITE_PRECISIONS, convert_tflite, gpu_compatibility, io_quantization
from clipedge.export.towers import TowerSpec, tower_spec
from clipedge.export.verify import fidelity, judge, run_artifact
from clipedge.runtime.errors import ExportError, InputError
from clipedge.runtime.manifest import FORMATS, TOWERS, Artifact, artifact_file_name

__all__ = ["ExportResult", "Job", "Converter", "convert_job", "export_bundle", "SUPPORTED", "DEFAULT_PRECISIONS",
           "default_checkpoint"]

log = logging.getLogger(__name__)

SUPPORTED = {"tflite": (*TFLITE_PRECISIONS, "auto"), "onnx": (*ONNX_PRECISIONS, "auto")}
DEFAULT_PRECISIONS = ("fp32", "fp16", "dynamic-int8", "int8", "int16x8", "int4")
# Models this big convert one file per process (isolate=None): ViT-B/32 grew one process to ~20 GiB otherwise.
ISOLATE_PARAMETERS = 50_000_000


@dataclass(frozen=True)
class Job:
    tower: str  # "image" | "text" | "classifier"
    format: str
    precision: str
    variant: str = "default"

    @property
    def file(self) -> str:
        return artifact_file_name(self.tower, self.format, self.precision, self.variant)


@dataclass
class ExportResult:
    bundle: Path
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per artifact: the final table
    peak_rss: dict[str, int] = field(default_factory=dict)  # MiB: this process, the largest conversion process

    def table(self) -> str:
        header = f"{'artifact':<34} {'size':>10} {'cos mean':>9} {'cos min':>9} {'time':>7}  flags"
        lines = [header, "-" * len(header)]
        for r in self.rows:
            lines.append(f"{r['file']:<34} {r['bytes'] / 1e6:>8.2f}MB {r['cosine_mean']:>9.6f} "
                         f"{r['cosine_min']:>9.6f} {r['seconds']:>6.1f}s  {','.join(r['flags']) or '-'}")
        if self.peak_rss:
            lines.append("peak memory (RSS): " + ", ".join(f"{k.replace('_', ' ')} {v / 1024:.1f} GiB"
                                                        for k, v in self.peak_rss.items()))
        return "\n".join(lines)


def default_checkpoint() -> Path:
    """The demo CLIP shipped inside clipedge.export (trained by `clipedge demo train`)."""
    from importlib import resources

    path = Path(str(resources.files("clipedge.export") / "demo_checkpoint"))
    if not (path / "config.json").is_file():
        raise ExportError("no --checkpoint given and the shipped demo checkpoint is missing from this install")
    return path


def _preprocess_config(directory: Path, image_size: int):
    """From the checkpoint's preprocessor_config.json (HF), else OpenAI's values at the model's resolution."""
    from clipedge.runtime.preprocess import PreprocessConfig

    config = PreprocessConfig(image_size=image_size, crop_size=image_size)
    file = directory / "preprocessor_config.json"
    if file.is_file():
        data = json.loads(file.read_text())
        size = data.get("size", {})
        shortest = size.get("shortest_edge", image_size) if isinstance(size, dict) else int(size)
        crop = data.get("crop_size", image_size)
        crop = crop.get("height", image_size) if isinstance(crop, dict) else int(crop)
        config = PreprocessConfig(image_size=int(shortest), crop_size=int(crop),
                                  mean=tuple(data.get("image_mean", config.mean)),
                                  std=tuple(data.get("image_std", config.std)))
    if config.crop_size != image_size:
        raise ExportError(f"preprocessor crop_size {config.crop_size} does not match the model's image_size "
                          f"{image_size}")
    return config


def _tokenizer(directory: Path, context: int):
    from clipedge.runtime.tokenizer import Tokenizer

    if (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
        return Tokenizer.from_files(directory, context_length=context)
    return Tokenizer.default(context_length=context)


def plan_jobs(formats, precisions, towers, gpu: bool, classifier: bool, mobile: bool = False) -> list[Job]:
    """Every artifact to build, fp32 first (the runtime's default pick is the first listed)."""
    for fmt in formats:
        if fmt not in FORMATS:
            raise ExportError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    for tower in towers:
        if tower not in TOWERS:
            raise ExportError(f"unknown tower {tower!r}; choose from {', '.join(TOWERS)}")
    if not formats or not precisions or not towers:
        raise ExportError("formats, precisions and towers must each name at least one")
    jobs = []
    for precision in precisions:
        available = [fmt for fmt in formats if precision in SUPPORTED[fmt]]
        if not available:
            raise ExportError(f"precision {precision!r} is not available for {', '.join(formats)}; available: "
                              + "; ".join(f"{f}: {', '.join(SUPPORTED[f])}" for f in formats))
        for fmt in available:
            jobs += [Job(tower, fmt, precision) for tower in towers]
            if classifier and precision != "auto":
                jobs.append(Job("classifier", fmt, precision))
    if gpu and "tflite" in formats:
        jobs += [Job(tower, "tflite", "fp32", "gpu") for tower in towers]
    if mobile:  # MediaPipe Tasks take a TFLite image model: image tower and classifier, every fixed precision
        if "tflite" not in formats or ("image" not in towers and not classifier):
            raise ExportError("mobile models are TFLite image models: they need the tflite format and the image "
                              "tower (or --labels)")
        fixed = [p for p in precisions if p != "auto"]
        jobs += [Job("image", "tflite", p, "mobile") for p in fixed if "image" in towers]
        jobs += [Job("classifier", "tflite", p, "mobile") for p in fixed if classifier]
    order = {p: i for i, p in enumerate(precisions)}  # the gpu variant's fp32 may not be among them
    return sorted(jobs, key=lambda j: (FORMATS.index(j.format), j.variant != "default",
                                       order.get(j.precision, len(order)),
                                       ("image", "text", "classifier").index(j.tower)))


def _calibration(job: Job, samples: SampleSet, spec: TowerSpec | None = None) -> dict[str, np.ndarray]:
    if job.tower == "text":
        return {"input_ids": samples.calibration_ids}
    pixels = samples.calibration_pixels
    if job.variant == "mobile":
        from clipedge.export.mobile import uint8_pixels

        return {"image": uint8_pixels(pixels, spec.mean, spec.std)}
    return {"pixel_values": np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)) if job.format == "onnx" else pixels}


def _label_embeddings(model: CLIPEncoder, tokenizer, labels: list[str], template: str, context: int) -> np.ndarray:
    from clipedge.runtime.clip import fill_template
    from clipedge.runtime.scoring import l2_normalize

    ids = tokenizer([fill_template(template, label) for label in labels], context_length=context)
    return l2_normalize(model.encode_text(ids).numpy())


def _reference(model: CLIPEncoder, samples: SampleSet, label_embeddings: np.ndarray | None) -> dict[str, np.ndarray]:
    from clipedge.runtime.scoring import zero_shot_probabilities

    reference = {"image": model.encode_image(samples.eval_pixels).numpy(),
                 "text": model.encode_text(samples.eval_ids).numpy()}
    if label_embeddings is not None:
        scale = float(np.exp(model.logit_scale.numpy()))
        reference["classifier"] = zero_shot_probabilities(reference["image"], label_embeddings, scale)
    return reference


def _compare(job: Job, outputs: np.ndarray, reference: dict[str, np.ndarray]) -> dict[str, Any]:
    ref = reference[job.tower]
    if job.tower == "classifier":  # probabilities: what matters is the same answer and close confidences
        top1 = float(np.mean(outputs.argmax(-1) == ref.argmax(-1)))
        return {**fidelity(outputs, ref), "top1_agreement": top1,
                "max_abs_probability_diff": float(np.abs(outputs - ref).max())}
    stats = fidelity(outputs, ref)
    if job.tower == "image" and "classifier" in reference:  # top-1 agreement of zero-shot on the labels
        stats["top1_agreement"] = float(np.mean(
            (outputs @ reference["labels"].T).argmax(-1) == (ref @ reference["labels"].T).argmax(-1)))
    return stats


def export_bundle(out: str | Path, checkpoint: str | Path | None = None, formats=FORMATS,
                  precisions=DEFAULT_PRECISIONS, towers=TOWERS, batch: int = 1,
                  calibration: str | Path | None = None, captions: str | Path | None = None, samples: int = 64,
                  seed: int = 0, force: bool = False, architecture: str | None = None, int8_io: bool = False,
                  gpu: bool = True, labels: list[str] | None = None, template: str = "a photo of a {}.",
                  target_cosine: float | None = None, progress: bool = True, mobile: bool = False,
                  isolate: bool | None = None, target_top1_drop: float | None = None,
                  eval_dir: str | Path | None = None) -> ExportResult:
    """Convert, verify against the float TF model on held-out samples, and write the bundle atomically.

    Every artifact is judged by the runtime's own backends; one below its precision's floor is kept and flagged.
    `labels` adds an image-only `classifier` model per format and precision (labels folded in). `mobile` adds the
    MediaPipe-ready `mobile` variant of the image tower and classifier (uint8 input, TFLite metadata). `isolate`
    runs every conversion in its own process (memory back after each); None does so for models of
    ISOLATE_PARAMETERS parameters or more (ViT-B/32 has 151 M).

    `auto` meets `target_cosine` (min cosine to the float model on the calibration samples; 0.995 when no target is
    given) and/or `target_top1_drop` (at most that many points of zero-shot top-1 lost on the labelled `eval_dir`,
    one subfolder per class; default the shipped calibration_data/eval)."""
    from tqdm.auto import tqdm

    from clipedge.export.auto import DEFAULT_TARGET_COSINE, Target
    from clipedge.runtime.clip import DEFAULT_TEMPLATE

    if batch < 1:
        raise ExportError(f"batch must be >= 1, got {batch}")
    if samples < 1:
        raise ExportError(f"samples must be >= 1, got {samples}")
    if labels is not None and (not labels or not all(isinstance(x, str) and x.strip() for x in labels)):
        raise ExportError("labels must be a non-empty list of non-empty strings")
    jobs = plan_jobs(list(formats), list(precisions), list(towers), gpu, labels is not None, mobile)
    if target_cosine is None and target_top1_drop is None:
        target_cosine = DEFAULT_TARGET_COSINE
    target = Target(target_cosine, target_top1_drop)  # a bad target fails here, before any slow work
    labelled = None
    if target_top1_drop is not None and any(j.precision == "auto" for j in jobs):
        labelled = _labelled_folder(eval_dir)
    if mobile:  # the metadata schema comes with the `mobile` extra: say so before any slow work
        from clipedge.export.mobile import metadata_schema

        metadata_schema()
    writer = BundleWriter(out, force=force)  # refuses an existing bundle before any slow work
    with writer:
        model = CLIPModel.from_pretrained(checkpoint or default_checkpoint(), architecture=architecture)
        if isolate is None:
            isolate = _parameter_count(model) >= ISOLATE_PARAMETERS
        workdir = writer.path(".work")  # fp32 files and conversions in flight; removed before the bundle is final
        workdir.mkdir()
        converter = Converter(model, workdir, isolate, architecture)
        info, config = model.checkpoint, model.config
        preprocess_config = _preprocess_config(info.directory, config.vision.image_size)
        context = config.text.max_position_embeddings
        tokenizer = _tokenizer(info.directory, context)
        sample_set = build_samples(config.vision.image_size, context, preprocess_config, tokenizer,
                                   Path(calibration) if calibration else None, Path(captions) if captions else None,
                                   samples=samples, seed=seed)
        label_embeddings = None
        if labels is not None:
            label_embeddings = _label_embeddings(model, tokenizer, labels, template or DEFAULT_TEMPLATE, context)
            writer.write_bytes("labels.txt", ("\n".join(labels) + "\n").encode())
        reference = _reference(model, sample_set, label_embeddings)
        if label_embeddings is not None:
            reference["labels"] = label_embeddings
        zero_shot = (None if labelled is None else _ZeroShotReference.build(
            model, labelled, preprocess_config, tokenizer, template or DEFAULT_TEMPLATE, context))
        tokenizer_files = [f"tokenizer/{name}" for name in tokenizer.save(writer.path("tokenizer"))]
        pool = ({"rule": "argmax"} if config.text.eos_token_id == 2
                else {"rule": "first", "eot_token_id": int(config.text.eos_token_id)})
        token_table_entry = None
        result = ExportResult(Path(out))

        def spec_of(job: Job) -> TowerSpec:
            return tower_spec(model, job.tower, job.variant, label_embeddings if job.tower == "classifier" else None,
                              mean=preprocess_config.mean, std=preprocess_config.std)

        bar = tqdm(jobs, desc="export", unit="model", disable=not progress)
        # tf2onnx is the memory peak (a ViT-B/32 tower took the process to ~20 GiB when it ran after the TFLite
        # conversions in one process): convert each tower's fp32 ONNX first, and reuse it below.
        for job in {(j.tower, j.variant): j for j in jobs if j.format == "onnx"}.values():
            bar.set_postfix_str(f"{job.tower} tower, tf2onnx")
            converter.fp32_file(spec_of(job), "onnx", batch)
        for job in bar:
            bar.set_postfix_str(job.file)
            start = time.perf_counter()
            spec = spec_of(job)
            artifact_extra: dict[str, Any] = {}
            token_table = None
            job_batch = 1 if job.variant == "mobile" else batch  # MediaPipe Tasks feed one image
            if job.variant == "gpu" and job.tower == "text":
                if token_table_entry is None:
                    table_path = writer.path("text_gpu_token_embedding.npy")
                    np.save(table_path, model.text_model.token_embedding.numpy())
                    token_table_entry = {"file": table_path.name, **writer.describe_file(table_path)}
                artifact_extra.update(token_table=token_table_entry, pool=pool)
                token_table = model.text_model.token_embedding.numpy()
            if job.tower == "classifier":
                artifact_extra.update(labels=list(labels), template=template, labels_file="labels.txt")
            if job.precision == "auto":
                auto = _auto(spec, job, batch, model, sample_set, target, bar, converter.convert, zero_shot)
                data, quantization = auto.chosen.data, {}
                table_name = f"auto_{job.tower}_{job.format}.md"
                heading = f"# auto: {job.tower} tower, {job.format}"
                writer.write_bytes(table_name, f"{heading}\n\n{auto.table()}\n".encode())
                artifact_extra.update(recipe=auto.recipe, sensitivity_table=table_name,
                                      candidates=[{"name": c.name, "bytes": c.bytes, "cosine_min": c.cosine_min,
                                                   "latency_ms": c.latency_ms} for c in auto.candidates])
                if not auto.recipe["met_target"]:
                    log.warning("auto %s %s: no candidate met %s; kept the most faithful (%s)",
                                job.tower, job.format, target.describe(), auto.chosen.name)
            else:
                data, quantization = converter.convert(spec, job, job_batch, _calibration(job, sample_set, spec),
                                                       int8_io)
            if job.variant == "mobile":
                data = _mobile_metadata(data, spec, job, info.source, labels)
                artifact_extra["mediapipe"] = {
                    "task": "ImageClassifier" if job.tower == "classifier" else "ImageEmbedder",
                    "input": "uint8 RGB NHWC 0..255; CLIP normalization inside the graph",
                    "metadata": True,
                    **({"labels_file": "labels.txt (inside the .tflite)"} if job.tower == "classifier" else {})}
            path = writer.write_bytes(job.file, data)
            inputs, outputs = spec.io(job.format, job_batch if job.format == "tflite" else None)
            for entry in inputs + outputs:
                if entry["name"] in quantization:
                    entry["quantization"] = quantization[entry["name"]]
                    entry["dtype"] = "int8"
            if job.variant == "gpu":
                artifact_extra["gpu_analyzer"] = gpu_compatibility(data)
            eval_inputs = sample_set.eval_ids if job.tower == "text" else sample_set.eval_pixels
            if job.variant == "mobile":  # the runtime's resize and crop, as uint8: the model's own fidelity
                from clipedge.export.mobile import uint8_pixels

                eval_inputs = uint8_pixels(eval_inputs, spec.mean, spec.std)
            outputs_eval = run_artifact(path, spec.signature, eval_inputs, inputs[0].get("layout"),
                                        input_specs=inputs, output_quantization=outputs[0].get("quantization"),
                                        extra=artifact_extra, token_table=token_table)
            stats = _compare(job, outputs_eval, reference)
            flags = judge(job.precision, stats)
            if job.variant == "gpu" and not artifact_extra["gpu_analyzer"]["compatible"]:
                flags.append("gpu-incompatible")
            seconds = time.perf_counter() - start
            artifact = Artifact(tower=job.tower, format=job.format, precision=job.precision, file=job.file,
                                signature=spec.signature, inputs=inputs, outputs=outputs, variant=job.variant,
                                fidelity={**stats, "export_seconds": round(seconds, 2)}, flags=flags,
                                extra=artifact_extra, **writer.describe_file(path))
            writer.add_artifact(artifact)
            if flags:
                log.warning("%s: %s (min cosine %.6f)", job.file, ", ".join(flags), stats["cosine_min"])
            result.rows.append({"file": job.file, "bytes": artifact.bytes, **stats, "seconds": seconds,
                                "flags": flags})
        fields = {
            "model": {"name": Path(str(info.source)).name or str(info.source), "source": info.source,
                      "weights_file": info.weights_file.name, "sha256": info.sha256, "layout": info.layout,
                      "config": config.to_hf_config()},
            "embed_dim": config.projection_dim,
            "logit_scale": float(math.exp(float(model.logit_scale.numpy()))),
            "logit_scale_log": float(model.logit_scale.numpy()),
            "preprocess": preprocess_config.to_dict(),
            "tokenizer": {"files": tokenizer_files, "context_length": context,
                          "sot_token_id": tokenizer.sot_token_id, "eot_token_id": tokenizer.eot_token_id,
                          "pad_token_id": 0, "truncate": "keep-eot", "pool": pool},
            "export": {"batch": batch, "samples": samples, "seed": seed, "int8_io": int8_io,
                       "target_cosine": target_cosine, "target_top1_drop": target_top1_drop,
                       "eval_images": len(sample_set.eval_image_files), "eval_captions": len(sample_set.eval_captions),
                       "labels": labels, "template": template if labels else None,
                       "isolated_conversions": isolate, "peak_rss_mib": converter.peak_rss_mib()},
        }
        result.peak_rss = fields["export"]["peak_rss_mib"]
        shutil.rmtree(workdir)
        result.bundle = writer.finish(fields)
    return result


def _mobile_metadata(data: bytes, spec: TowerSpec, job: Job, source, labels: list[str] | None) -> bytes:
    from clipedge.export.mobile import add_metadata

    name = Path(str(source)).name or str(source)
    task = "image classifier over baked-in labels" if job.tower == "classifier" else "image embedder"
    return add_metadata(data, job.tower, name=f"{name} CLIP {task} ({job.precision})",
                        description=f"clipedge export of {name}: CLIP {task} for MediaPipe Tasks, {job.precision}.",
                        image_size=spec.model.config.vision.image_size, mean=spec.mean, std=spec.std,
                        output_width=(len(labels) if job.tower == "classifier" else spec.model.config.projection_dim),
                        labels=labels if job.tower == "classifier" else None)


def _labelled_folder(eval_dir: str | Path | None):
    from clipedge.export.report import read_eval_folder
    from clipedge.export.samples import default_calibration_dir

    if eval_dir is None:
        shipped = default_calibration_dir()
        if shipped is None or not (shipped / "eval").is_dir():
            raise ExportError("--target-top1-drop needs a labelled folder: pass --eval DIR (one subfolder of images "
                              "per class, named after the label)")
        eval_dir = shipped / "eval"
    try:
        return read_eval_folder(eval_dir)
    except InputError as err:
        raise ExportError(str(err)) from err


@dataclass(frozen=True)
class _ZeroShotReference:
    """A labelled folder as the float model sees it: what a candidate's top-1 drop is measured against."""

    pixels: np.ndarray  # NHWC, the runtime's preprocessing
    prompt_ids: np.ndarray
    truth: np.ndarray
    image_embeds: np.ndarray  # float TF, unit rows
    prompt_embeds: np.ndarray
    top1: float

    @classmethod
    def build(cls, model: CLIPEncoder, labelled, preprocess_config, tokenizer, template: str,
              context: int) -> _ZeroShotReference:
        from clipedge.export.report import top1_accuracy, zero_shot_predictions
        from clipedge.runtime.clip import fill_template
        from clipedge.runtime.preprocess import preprocess
        from clipedge.runtime.scoring import l2_normalize

        pixels = preprocess(labelled.files, preprocess_config, layout="NHWC")
        ids = tokenizer([fill_template(template, c) for c in labelled.classes], context_length=context)
        image, prompts = l2_normalize(model.encode_image(pixels).numpy()), l2_normalize(model.encode_text(ids).numpy())
        top1 = top1_accuracy(zero_shot_predictions(image, prompts), labelled.truth)
        return cls(pixels, ids, labelled.truth, image, prompts, top1)

    def drop(self, tower: str, outputs: np.ndarray) -> float:
        """Points of top-1 lost when `outputs` (this tower's candidate embeddings) replace the float ones."""
        from clipedge.export.report import top1_accuracy, zero_shot_predictions

        image, prompts = (outputs, self.prompt_embeds) if tower == "image" else (self.image_embeds, outputs)
        return 100.0 * (self.top1 - top1_accuracy(zero_shot_predictions(image, prompts), self.truth))


def _auto(spec: TowerSpec, job: Job, batch: int, model: CLIPEncoder, samples: SampleSet, target, bar,
          convert: Callable[..., tuple[bytes, dict]], zero_shot: _ZeroShotReference | None = None):
    """Score candidates on all the calibration samples (16 overfit: a mix at 0.9957 there was 0.96 held out), and on
    the labelled folder for a top-1 target; held-out samples stay for the final fidelity, measured by the caller
    like every other artifact."""
    import tempfile

    from clipedge.export.auto import auto_onnx, auto_tflite

    calibration = _calibration(job, samples)
    name = next(iter(calibration))
    values = calibration[name]
    nhwc = samples.calibration_pixels if job.tower != "text" else None
    reference = (model.encode_text(values).numpy() if job.tower == "text" else model.encode_image(nhwc).numpy())
    layout = None if job.tower == "text" else ("NCHW" if job.format == "onnx" else "NHWC")
    inputs = values if job.tower == "text" else nhwc

    def evaluate(data: bytes, suffix: str) -> tuple[float, float, float | None]:
        with tempfile.TemporaryDirectory(prefix="clipedge-eval-") as tmp:
            path = Path(tmp) / f"candidate{suffix}"
            path.write_bytes(data)
            stats = fidelity(run_artifact(path, spec.signature, inputs, layout), reference)
            drop = None
            if zero_shot is not None:
                zero_shot_inputs = zero_shot.prompt_ids if job.tower == "text" else zero_shot.pixels
                drop = zero_shot.drop(job.tower, run_artifact(path, spec.signature, zero_shot_inputs, layout))
        return stats["cosine_min"], stats["cosine_mean"], drop

    def fixed(precision: str) -> bytes:
        return convert(spec, Job(job.tower, job.format, precision), batch, calibration, False)[0]

    feeds = {name: values[:1]}
    say = lambda message: bar.set_postfix_str(f"{job.file}: {message}")  # noqa: E731
    if job.format == "tflite":
        return auto_tflite(spec, batch, calibration, evaluate, fixed, feeds, target, say)
    return auto_onnx(evaluate, fixed, feeds, target, say, calibration)


def convert_job(spec: TowerSpec, job: Job, batch: int, calibration: dict[str, np.ndarray], int8_io: bool,
                fp32: bytes | None = None) -> tuple[bytes, dict[str, dict[str, float]]]:
    """Model bytes and, for integer in/out files, the (scale, zero point) of each such input/output. `fp32` is the
    tower's fp32 file in the same format: the precisions derived from it (TFLite int16x8/int4, every ONNX one)
    start from it instead of converting again."""
    if job.precision == "fp32" and fp32 is not None:
        return fp32, {}
    if job.format == "tflite":
        int8_file = int8_io and job.precision == "int8"
        data = convert_tflite(spec, precision=job.precision, batch=batch, calibration=calibration,
                              int8_io=int8_file, fp32_model=fp32)
        return data, (io_quantization(data, spec.signature) if int8_file else {})
    return convert_onnx(spec, precision=job.precision, calibration=calibration, fp32_model=fp32), {}


def _parameter_count(model: CLIPEncoder) -> int:
    return sum(int(np.prod(v.shape)) for v in model.trainable_variables)


class Converter:
    """Builds the model files of one export: each tower's fp32 file once (kept on disk in `workdir`, reused by the
    precisions derived from it), and, when `isolate`, every conversion in its own process (clipedge.export.isolated)
    so the exporting process does not grow with each conversion."""

    def __init__(self, model: CLIPEncoder, workdir: Path, isolate: bool, architecture: str | None = None) -> None:
        self.model, self.workdir, self.isolate, self.architecture = model, workdir, isolate, architecture
        self.fp32_files: dict[tuple[str, str, str, int], Path] = {}
        self.child_peak_rss = 0  # bytes, the largest conversion process so far

    def fp32_file(self, spec: TowerSpec, fmt: str, batch: int) -> Path:
        key = (spec.tower, spec.variant, fmt, batch)
        if key not in self.fp32_files:
            path = self.workdir / f"{spec.tower}-{spec.variant}-b{batch}-fp32.{fmt}"
            self._build(spec, Job(spec.tower, fmt, "fp32", spec.variant), batch, {}, False, None, path)
            self.fp32_files[key] = path
        return self.fp32_files[key]

    def convert(self, spec: TowerSpec, job: Job, batch: int, calibration: dict[str, np.ndarray],
                int8_io: bool = False) -> tuple[bytes, dict[str, dict[str, float]]]:
        derived = job.format == "onnx" or job.precision in ("fp32", "int16x8", "int4")
        fp32 = self.fp32_file(spec, job.format, batch) if derived else None
        if job.precision == "fp32":
            return fp32.read_bytes(), {}
        if not self.isolate:
            return convert_job(spec, job, batch, calibration, int8_io, fp32.read_bytes() if fp32 else None)
        out = self.workdir / f"job.{job.format}"
        quantization = self._build(spec, job, batch, calibration, int8_io, fp32, out)
        data = out.read_bytes()
        out.unlink()
        return data, quantization

    def _build(self, spec: TowerSpec, job: Job, batch: int, calibration: dict[str, np.ndarray], int8_io: bool,
               fp32: Path | None, out: Path) -> dict[str, dict[str, float]]:
        """Convert `job` into the file `out`; returns its int8 in/out quantization."""
        if not self.isolate:
            data, quantization = convert_job(spec, job, batch, calibration, int8_io,
                                             fp32.read_bytes() if fp32 else None)
            out.write_bytes(data)
            return quantization
        from clipedge.export.isolated import ConversionRequest, convert_isolated

        info = self.model.checkpoint
        source = info.source if Path(str(info.source)).exists() else str(info.directory)  # hub ids: the download
        result = convert_isolated(ConversionRequest(
            checkpoint=str(source), architecture=self.architecture, tower=spec.tower, variant=spec.variant,
            fmt=job.format, precision=job.precision, batch=batch, out_file=str(out), calibration=calibration,
            int8_io=int8_io, fp32_file=str(fp32) if fp32 else None, label_embeddings=spec.label_embeddings,
            mean=spec.mean, std=spec.std))
        self.child_peak_rss = max(self.child_peak_rss, result.peak_rss_bytes)
        return result.quantization

    def peak_rss_mib(self) -> dict[str, int]:
        """Peak resident memory so far: this process, and the largest conversion process when isolated."""
        from clipedge.export.isolated import peak_rss_bytes

        peaks = {"export_process": peak_rss_bytes() >> 20}
        if self.isolate:
            peaks["largest_conversion_process"] = self.child_peak_rss >> 20
        return peaks
