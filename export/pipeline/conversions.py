"""Builds the model files of one export: each tower's fp32 file once (kept on disk, reused by every precision the
precision table says is made from it), and, when isolating, every conversion in its own process
(clipedge.export.pipeline.child_process) so that the exporting process does not grow with each conversion."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from clipedge.export.equalize import KINDS, Rescale, apply_rescales
from clipedge.export.model.clip import CLIPEncoder
from clipedge.export.pipeline.child_process import ConversionRequest, convert_isolated, peak_rss_bytes
from clipedge.export.pipeline.convert_job import convert_job
from clipedge.export.pipeline.job import Job
from clipedge.export.towers.spec import TowerSpec
from clipedge.runtime.precisions import precision as precision_row

__all__ = ["Converter", "ISOLATE_PARAMETERS", "parameter_count"]

log = logging.getLogger(__name__)

# Models this big convert one file per process by default: ViT-B/32 grew one process to ~20 GiB otherwise.
ISOLATE_PARAMETERS = 50_000_000


def parameter_count(model: CLIPEncoder) -> int:
    return sum(int(np.prod(v.shape)) for v in model.trainable_variables)


class Converter:
    def __init__(self, model: CLIPEncoder, workdir: Path, isolate: bool | None,
                 architecture: str | None = None) -> None:
        self.model, self.workdir, self.architecture = model, workdir, architecture
        self.isolate = parameter_count(model) >= ISOLATE_PARAMETERS if isolate is None else isolate
        self.fp32_files: dict[tuple[str, str, str, int | None], Path] = {}
        self.child_peak_rss = 0  # bytes, the largest conversion process so far
        self.rescales: list[Rescale] = []  # folded into the model before any file is built (equalize)

    def equalize(self, rescales: list[Rescale]) -> None:
        """Fold the equalisation into the model every file is made from (and, isolated, into each child's)."""
        if self.fp32_files:
            raise RuntimeError("equalize before the first conversion: built files would not match")
        apply_rescales(self.model, rescales)
        self.rescales = list(rescales)

    def equalization_record(self) -> dict[str, object]:
        """The manifest's record: how many rescales of each kind, and each one's choice and simulated error."""
        return {"rescales": {kind: sum(r.kind == kind for r in self.rescales) for kind in KINDS},
                "details": [r.summary() for r in self.rescales]}

    def fp32_file(self, spec: TowerSpec, fmt: str, batch: int | None) -> Path:
        """The tower's fp32 file in `fmt` at `batch` (None = dynamic), built once and reused by the precisions made
        from it."""
        key = (spec.tower, spec.variant, fmt, batch)
        if key not in self.fp32_files:
            path = self.workdir / f"{spec.tower}-{spec.variant}-b{'dynamic' if batch is None else batch}-fp32.{fmt}"
            self._build(spec, Job(spec.tower, fmt, "fp32", spec.variant), batch, {}, False, None, path)
            self.fp32_files[key] = path
        return self.fp32_files[key]

    def convert(self, spec: TowerSpec, job: Job, batch: int | None, calibration: dict[str, np.ndarray],
                int8_io: bool = False) -> tuple[bytes, dict[str, dict[str, float]]]:
        """Model bytes and the int8 in/out quantization (int8_io files) of one job."""
        from_fp32 = job.precision == "fp32" or job.format in precision_row(job.precision).from_fp32
        fp32 = self.fp32_file(spec, job.format, batch) if from_fp32 else None
        if job.precision == "fp32":
            return fp32.read_bytes(), {}
        if not self.isolate:
            return convert_job(spec, job, batch, calibration, int8_io, fp32.read_bytes() if fp32 else None)
        out = self.workdir / f"job.{job.format}"
        quantization = self._build(spec, job, batch, calibration, int8_io, fp32, out)
        data = out.read_bytes()
        out.unlink()
        return data, quantization

    def _build(self, spec: TowerSpec, job: Job, batch: int | None, calibration: dict[str, np.ndarray], int8_io: bool,
               fp32: Path | None, out: Path) -> dict[str, dict[str, float]]:
        """Convert `job` into the file `out`; returns its int8 in/out quantization."""
        if not self.isolate:
            data, quantization = convert_job(spec, job, batch, calibration, int8_io,
                                             fp32.read_bytes() if fp32 else None)
            out.write_bytes(data)
            return quantization
        info = self.model.checkpoint
        source = info.source if Path(str(info.source)).exists() else str(info.directory)  # hub ids: the download
        result = convert_isolated(ConversionRequest(
            checkpoint=str(source), architecture=self.architecture, tower=spec.tower, variant=spec.variant,
            fmt=job.format, precision=job.precision, batch=batch, out_file=str(out), calibration=calibration,
            int8_io=int8_io, fp32_file=str(fp32) if fp32 else None, label_embeddings=spec.label_embeddings,
            mean=spec.mean, std=spec.std, rescales=tuple(self.rescales)))
        self.child_peak_rss = max(self.child_peak_rss, result.peak_rss_bytes)
        log.info("%s %s %s (%s): conversion process peak %d MiB", spec.tower, job.format, job.precision, spec.variant,
                 result.peak_rss_bytes >> 20)
        return result.quantization

    def peak_rss_mib(self) -> dict[str, int]:
        """Peak resident memory so far: this process, and the largest conversion process when isolated."""
        peaks = {"export_process": peak_rss_bytes() >> 20}
        if self.isolate:
            peaks["largest_conversion_process"] = self.child_peak_rss >> 20
        return peaks
