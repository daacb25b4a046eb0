"""One export in progress: the loaded model, its samples and float reference, the converter, and how one planned
job becomes a verified artifact in the bundle's temporary directory. Variant differences are the tower spec's
(clipedge.export.towers.spec); precision rules are the precision table's (clipedge.runtime.precisions)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from clipedge.export.checkpoint import files as checkpoint_files
from clipedge.export.checkpoint.loader import CLIPModel
from clipedge.export.equalize import plan_equalization
from clipedge.export.formats.auto import ZeroShotReference, run_auto
from clipedge.export.model.clip import CLIPEncoder
from clipedge.export.pipeline.bundle_writer import BundleWriter
from clipedge.export.pipeline.conversions import Converter
from clipedge.export.pipeline.job import Job
from clipedge.export.pipeline.samples import SampleSet, build_samples
from clipedge.export.pipeline.self_describe import file_facts, self_describe
from clipedge.export.pipeline.verify import Reference, describe, verify
from clipedge.export.settings import ExportSettings
from clipedge.export.towers import TowerSpec, eot_pool, tower_spec
from clipedge.runtime.datasets import LabelledImages
from clipedge.runtime.defaults import LATENCY_KEY
from clipedge.runtime.manifest import Artifact
from clipedge.runtime.precisions import auto_candidates
from clipedge.runtime.precisions import precision as precision_row
from clipedge.runtime.preprocess import PreprocessConfig
from clipedge.runtime.prompts import fill_template
from clipedge.runtime.scoring import l2_normalize
from clipedge.runtime.tokenizer import Tokenizer

__all__ = ["ExportRun"]

log = logging.getLogger(__name__)


@dataclass
class ExportRun:
    settings: ExportSettings
    writer: BundleWriter
    model: CLIPEncoder
    converter: Converter
    preprocess: PreprocessConfig
    tokenizer: Tokenizer
    samples: SampleSet
    reference: Reference
    tokenizer_files: list[str]
    zero_shot: ZeroShotReference | None = None
    companions: dict[str, dict[str, Any]] = field(default_factory=dict)  # written once: manifest key -> entry
    preprocess_check: dict[str, Any] = field(default_factory=dict)  # against the checkpoint's own library

    @classmethod
    def start(cls, settings: ExportSettings, writer: BundleWriter, checkpoint: str | Path,
              labelled: LabelledImages | None) -> ExportRun:
        """Load the model and prepare everything every job shares (seconds; the conversions are the slow part)."""
        model = CLIPModel.from_pretrained(checkpoint, architecture=settings.architecture)
        workdir = writer.path(".work")  # fp32 files and conversions in flight; removed before the bundle is final
        workdir.mkdir()
        converter = Converter(model, workdir, settings.isolate, settings.architecture)
        directory, config = model.checkpoint.directory, model.config
        context = config.text.max_position_embeddings
        preprocess = checkpoint_files.preprocess_config(directory, config.vision.image_size, model.checkpoint.layout,
                                                        settings.preprocess_overrides(), settings.mobile)
        tokenizer = checkpoint_files.tokenizer(directory, context)
        tokenizer_files = [f"tokenizer/{name}" for name in tokenizer.save(writer.path("tokenizer"))]
        samples = build_samples(config.vision.image_size, context, preprocess, tokenizer, settings.calibration,
                                settings.captions, samples=settings.samples, seed=settings.seed)
        label_embeddings = None
        if settings.labels is not None:
            ids = tokenizer([fill_template(settings.template, label) for label in settings.labels],
                            context_length=context)
            label_embeddings = l2_normalize(model.encode_text(ids).numpy())
            writer.write_bytes("labels.txt", ("\n".join(settings.labels) + "\n").encode())
        zero_shot = None if labelled is None else ZeroShotReference.build(
            model, labelled, preprocess, tokenizer, settings.template, context)
        reference = Reference.build(model, samples, label_embeddings)
        from clipedge.export.checkpoint.preprocess_check import check_preprocess  # the checkpoint's own preprocessing

        checked = check_preprocess(directory, model.checkpoint.layout, preprocess, settings.preprocess_overrides(),
                                   samples.eval_image_files, samples.eval_pixels,
                                   lambda pixels: model.encode_image(pixels).numpy(), reference.outputs["image"])
        if settings.equalize and any(not precision_row(p).float_weights for p in settings.precisions):
            converter.equalize(plan_equalization(model, samples.calibration_pixels, samples.calibration_ids))
        return cls(settings, writer, model, converter, preprocess, tokenizer, samples, reference, tokenizer_files,
                   zero_shot, preprocess_check=checked)

    def spec(self, job: Job) -> TowerSpec:
        labels = self.settings.labels if job.tower == "classifier" else None
        return tower_spec(self.model, job.tower, job.variant,
                          self.reference.label_embeddings if labels is not None else None,
                          mean=self.preprocess.mean, std=self.preprocess.std, labels=labels,
                          template=self.settings.template if labels is not None else None)

    def convert_onnx_fp32_first(self, jobs: list[Job], say: Callable[[str], None]) -> None:
        """tf2onnx is the memory peak (a ViT-B/32 tower took the process to ~20 GiB when it ran after the TFLite
        conversions in one process): each tower's fp32 ONNX first, reused by every ONNX precision."""
        for job in {(j.tower, j.variant): j for j in jobs if j.format == "onnx"}.values():
            say(f"{job.tower} tower, tf2onnx")
            self.converter.fp32_file(self.spec(job), "onnx", self.settings.batch)

    def build(self, job: Job, say: Callable[[str], None]) -> Artifact:
        """Convert, write, verify on the held-out samples; the artifact's manifest entry."""
        start = time.perf_counter()
        spec = self.spec(job)
        data, quantization, extra = self._model_file(spec, job, say)
        facts = file_facts(self.manifest_fields(), spec, job, self.settings.batch, quantization)
        data = self_describe(data, job.format, facts)  # facts inside the file (issue #20)
        path = self.writer.write_bytes(job.file, spec.finish(data, job.precision, self.model_name))
        checks, flags = spec.check(path, self.samples.eval_pixels, self.samples.eval_ids)
        extra = {**spec.extra(), **self._companions(spec), **extra, **checks}
        artifact = describe(spec, job, self.settings.batch, path, quantization, extra)
        stats, precision_flags, latency = verify(path, artifact, spec, self.samples, self.reference)
        flags = precision_flags + flags
        extra = {**artifact.extra, LATENCY_KEY: latency}
        if flags:
            log.warning("%s: %s (min cosine %.6f)", job.file, ", ".join(flags), stats["cosine_min"])
        seconds = round(time.perf_counter() - start, 2)
        return replace(artifact, fidelity={**stats, "export_seconds": seconds}, flags=flags, extra=extra)

    def _model_file(self, spec: TowerSpec, job: Job,
                    say: Callable[[str], None]) -> tuple[bytes, dict[str, dict[str, float]], dict[str, Any]]:
        """(bytes, int8 in/out quantization, manifest extras): a fixed precision's conversion, or auto's choice."""
        batch = spec.model_batch(self.settings.batch)
        if job.precision != "auto":
            calibration = spec.feeds(job.format, self.samples.calibration_pixels, self.samples.calibration_ids)
            data, quantization = self.converter.convert(spec, job, batch, calibration, self.settings.int8_io)
            return data, quantization, {}
        target = self.settings.target()
        candidates = self.settings.auto_candidates or auto_candidates(job.format)
        candidates = tuple(p for p in candidates if p in auto_candidates(job.format))
        auto = run_auto(spec, job, batch, self.samples, target, self.converter.convert, candidates,
                        lambda message: say(f"{job.file}: {message}"), self.zero_shot)
        table_name = f"auto_{job.tower}_{job.format}.md"
        self.writer.write_bytes(table_name, f"# auto: {job.tower} tower, {job.format}\n\n{auto.table()}\n".encode())
        if not auto.recipe["met_target"]:
            log.warning("auto %s %s: no candidate met %s; kept the most faithful (%s)", job.tower, job.format,
                        target.describe(), auto.chosen.name)
        return auto.chosen.data, {}, {
            "recipe": auto.recipe, "sensitivity_table": table_name,
            "candidates": [{"name": c.name, "bytes": c.bytes, "cosine_min": c.cosine_min,
                            "latency_ms": c.latency_ms} for c in auto.candidates]}

    def _companions(self, spec: TowerSpec) -> dict[str, dict[str, Any]]:
        """Companion files (the gpu text variant's token table), each written once into the bundle."""
        out = {}
        for key, (name, array) in spec.companions().items():
            if key not in self.companions:
                path = self.writer.path(name)
                np.save(path, array)
                self.companions[key] = {"file": name, **self.writer.describe_file(path)}
            out[key] = self.companions[key]
        return out

    @property
    def model_name(self) -> str:
        source = self.model.checkpoint.source
        return Path(str(source)).name or str(source)

    def manifest_fields(self) -> dict[str, Any]:
        """Everything in manifest.json but the artifacts (the writer adds those)."""
        info, config = self.model.checkpoint, self.model.config
        return {
            "model": {"name": self.model_name, "source": info.source, "weights_file": info.weights_file.name,
                      "sha256": info.sha256, "layout": info.layout, "config": config.to_hf_config()},
            "embed_dim": config.projection_dim,
            "logit_scale": float(math.exp(float(self.model.logit_scale.numpy()))),
            "logit_scale_log": float(self.model.logit_scale.numpy()),
            "preprocess": self.preprocess.to_dict(),
            "tokenizer": {"files": self.tokenizer_files, "context_length": config.text.max_position_embeddings,
                          "sot_token_id": self.tokenizer.sot_token_id, "eot_token_id": self.tokenizer.eot_token_id,
                          "pad_token_id": 0, "truncate": "keep-eot", "pool": eot_pool(config.text)},
            "export": {**self.settings.to_manifest(),
                       "eval_images": len(self.samples.eval_image_files),
                       "eval_captions": len(self.samples.eval_captions),
                       "calibration": self.samples.record(),
                       "preprocess_check": self.preprocess_check,
                       "isolated_conversions": self.converter.isolate,
                       "equalization": self.converter.equalization_record(),
                       "peak_rss_mib": self.converter.peak_rss_mib()},
        }
