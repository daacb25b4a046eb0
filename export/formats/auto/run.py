"""`auto` for one tower and format inside an export: how candidates are scored (the runtime's runner on the
calibration samples, against the float TF model; on a labelled folder for a top-1 target) and which quantizer
searches the format's groups."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipedge.export.formats.auto.search import AutoResult, fixed_candidates, search
from clipedge.export.formats.auto.target import Target
from clipedge.export.model.clip import CLIPEncoder
from clipedge.export.pipeline.job import Job
from clipedge.export.pipeline.samples import SampleSet
from clipedge.export.towers.spec import TowerSpec
from clipedge.runtime.datasets import LabelledImages
from clipedge.runtime.metrics import cosine_stats, top1_accuracy, zero_shot_predictions
from clipedge.runtime.scoring import l2_normalize

__all__ = ["ZeroShotReference", "run_auto"]

# (spec, job, batch, calibration feeds, int8_io) -> (model bytes, int8 in/out quantization): the export's Converter
Convert = Callable[..., tuple[bytes, dict]]


@dataclass(frozen=True)
class ZeroShotReference:
    """A labelled folder as the float model sees it: what a candidate's top-1 drop is measured against."""

    pixels: np.ndarray  # NHWC, the runtime's preprocessing
    prompt_ids: np.ndarray
    truth: np.ndarray
    image_embeds: np.ndarray  # float TF, unit rows
    prompt_embeds: np.ndarray
    top1: float

    @classmethod
    def build(cls, model: CLIPEncoder, labelled: LabelledImages, preprocess_config, tokenizer, template: str,
              context: int) -> ZeroShotReference:
        from clipedge.runtime.preprocess import preprocess
        from clipedge.runtime.prompts import fill_template

        pixels = preprocess(labelled.files, preprocess_config, layout="NHWC")
        ids = tokenizer([fill_template(template, c) for c in labelled.classes], context_length=context)
        image, prompts = l2_normalize(model.encode_image(pixels).numpy()), l2_normalize(model.encode_text(ids).numpy())
        top1 = top1_accuracy(zero_shot_predictions(image, prompts), labelled.truth)
        return cls(pixels, ids, labelled.truth, image, prompts, top1)

    def drop(self, tower: str, outputs: np.ndarray) -> float:
        """Points of top-1 lost when `outputs` (this tower's candidate embeddings) replace the float ones."""
        image, prompts = (outputs, self.prompt_embeds) if tower == "image" else (self.image_embeds, outputs)
        return 100.0 * (self.top1 - top1_accuracy(zero_shot_predictions(image, prompts), self.truth))


def run_auto(spec: TowerSpec, job: Job, batch: int, samples: SampleSet, target: Target, convert: Convert,
             candidates: tuple[str, ...], say: Callable[[str], None],
             zero_shot: ZeroShotReference | None = None) -> AutoResult:
    """Score candidates on all the calibration samples (16 overfit: a mix at 0.9957 there was 0.96 held out), and on
    the labelled folder for a top-1 target; the held-out samples stay for the final fidelity, measured by the
    caller like every other artifact."""
    from clipedge.export.formats.auto.onnx_groups import OnnxGroupQuantizer
    from clipedge.export.formats.auto.tflite_groups import EdgeGroupQuantizer
    from clipedge.export.pipeline.verify import describe, run_file

    pixels, ids = samples.calibration_pixels, samples.calibration_ids
    calibration = spec.feeds(job.format, pixels, ids)
    inputs = spec.runner_inputs(pixels, ids)
    reference = (spec.model.encode_text(ids) if job.tower == "text" else spec.model.encode_image(pixels)).numpy()
    zero_shot_inputs = None
    if zero_shot is not None:
        zero_shot_inputs = zero_shot.prompt_ids if job.tower == "text" else zero_shot.pixels

    def evaluate(data: bytes, suffix: str) -> tuple[float, float, float | None]:
        with tempfile.TemporaryDirectory(prefix="clipedge-eval-") as tmp:
            path = Path(tmp) / f"candidate{suffix}"
            path.write_bytes(data)
            artifact = describe(spec, job, batch, path, {}, {})
            stats = cosine_stats(run_file(path, artifact, spec, inputs), reference)
            drop = None
            if zero_shot is not None:
                drop = zero_shot.drop(job.tower, run_file(path, artifact, spec, zero_shot_inputs))
        return stats["cosine_min"], stats["cosine_mean"], drop

    def fixed(precision: str) -> bytes:
        return convert(spec, Job(job.tower, job.format, precision), batch, calibration, False)[0]

    say("calibrate")
    if job.format == "tflite":
        quantizer = EdgeGroupQuantizer(fixed("fp32"), spec.signature, calibration)
    else:
        quantizer = OnnxGroupQuantizer(fixed("fp32"), calibration)
    suffix = quantizer.suffix
    try:
        fixed_list = fixed_candidates(candidates, fixed, evaluate, suffix, say)
        feeds = {name: values[:1] for name, values in calibration.items()}
        return search(quantizer, fixed_list, evaluate, target, feeds, suffix, say,
                      {"calibration_samples": len(next(iter(calibration.values())))})
    finally:
        quantizer.close()
