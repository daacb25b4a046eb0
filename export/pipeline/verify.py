"""Judging an exported file by running it the way the device will (the runtime's ArtifactRunner) on held-out
samples, against the float TF model; the floor it must reach comes from the precision table."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clipedge.export.model.clip import CLIPEncoder
from clipedge.export.pipeline.job import Job
from clipedge.export.pipeline.samples import SampleSet
from clipedge.export.towers.spec import TowerSpec
from clipedge.runtime.bench import measure_latency
from clipedge.runtime.manifest import Artifact, sha256_file
from clipedge.runtime.metrics import cosine_stats
from clipedge.runtime.precisions import precision
from clipedge.runtime.runner import ArtifactRunner
from clipedge.runtime.scoring import l2_normalize, zero_shot_probabilities

__all__ = ["Reference", "describe", "run_file", "verify"]


def describe(spec: TowerSpec, job: Job, batch: int, path: Path, quantization: dict[str, dict[str, float]],
             extra: dict[str, Any]) -> Artifact:
    """The manifest entry of a written file, before its fidelity is known."""
    inputs, outputs = spec.io(job.format, spec.model_batch(batch) if job.format == "tflite" else None)
    for entry in inputs + outputs:
        if entry["name"] in quantization:
            entry["quantization"] = quantization[entry["name"]]
            entry["dtype"] = "int8"
    return Artifact(tower=job.tower, format=job.format, precision=job.precision, file=path.name,
                    bytes=path.stat().st_size, sha256=sha256_file(path), signature=spec.signature, inputs=inputs,
                    outputs=outputs, variant=job.variant, extra=extra)


LATENCY_REPEATS = 10  # batch-1 calls timed per file: enough for a median's interval, ~1 s for a ViT-B/32 tower


def _runner(path: Path, artifact: Artifact, spec: TowerSpec) -> ArtifactRunner:
    token_table = spec.token_table() if "token_table" in artifact.extra else None
    return ArtifactRunner(path, artifact, token_table=token_table)


def run_file(path: Path, artifact: Artifact, spec: TowerSpec, inputs: np.ndarray) -> np.ndarray:
    """The file's outputs for `inputs` (spec.runner_inputs), fed as the runtime feeds it."""
    return _runner(path, artifact, spec).run(inputs)


@dataclass(frozen=True)
class Reference:
    """The float TF model's outputs on the held-out samples: what every file is compared with."""

    outputs: dict[str, np.ndarray]  # tower -> [N, D] embeddings, or the classifier's probabilities
    label_embeddings: np.ndarray | None  # unit rows, with a classifier

    @classmethod
    def build(cls, model: CLIPEncoder, samples: SampleSet, label_embeddings: np.ndarray | None) -> Reference:
        outputs = {"image": model.encode_image(samples.eval_pixels).numpy(),
                   "text": model.encode_text(samples.eval_ids).numpy()}
        if label_embeddings is not None:
            scale = float(np.exp(model.logit_scale.numpy()))
            outputs["classifier"] = zero_shot_probabilities(outputs["image"], label_embeddings, scale)
        return cls(outputs, label_embeddings)

    def compare(self, tower: str, outputs: np.ndarray) -> dict[str, Any]:
        """Cosine stats against the float outputs; for the classifier also the same answer and close confidences;
        for the image tower with labels, zero-shot top-1 agreement."""
        ref = self.outputs[tower]
        stats: dict[str, Any] = cosine_stats(outputs, ref)
        if tower == "classifier":
            stats.update(top1_agreement=float(np.mean(outputs.argmax(-1) == ref.argmax(-1))),
                         max_abs_probability_diff=float(np.abs(outputs - ref).max()))
        elif tower == "image" and self.label_embeddings is not None:
            labels = self.label_embeddings
            stats["top1_agreement"] = float(np.mean((l2_normalize(outputs) @ labels.T).argmax(-1)
                                                    == (l2_normalize(ref) @ labels.T).argmax(-1)))
        return stats


def verify(path: Path, artifact: Artifact, spec: TowerSpec, samples: SampleSet,
           reference: Reference) -> tuple[dict[str, Any], list[str], dict[str, float]]:
    """(fidelity on the held-out samples, flags, batch-1 latency): flags are "below-floor" / "low-fidelity" from
    the precision table; the latency (median and its 95% interval, ms, on this machine's CPU with the interpreter's
    default threads) is what picks the bundle's default precision (clipedge.runtime.defaults)."""
    runner = _runner(path, artifact, spec)
    inputs = spec.runner_inputs(samples.eval_pixels, samples.eval_ids)
    stats = reference.compare(artifact.tower, runner.run(inputs))
    latency = measure_latency(lambda: runner.run(inputs[:1]), repeats=LATENCY_REPEATS, warmup=2)
    return stats, precision(artifact.precision).flags(stats["cosine_min"]), latency.manifest_record()
