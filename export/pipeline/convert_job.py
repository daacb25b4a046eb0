"""One conversion: a job (tower, format, precision, variant) -> model bytes. A leaf module: the isolated child
process imports only this (and what it needs), never the pipeline."""

from __future__ import annotations

import numpy as np

from clipedge.export.formats.onnx.convert import convert_onnx
from clipedge.export.formats.tflite.convert import convert_tflite, io_quantization
from clipedge.export.pipeline.job import Job
from clipedge.export.towers.spec import TowerSpec

__all__ = ["convert_job"]


def convert_job(spec: TowerSpec, job: Job, batch: int, calibration: dict[str, np.ndarray], int8_io: bool,
                fp32: bytes | None = None) -> tuple[bytes, dict[str, dict[str, float]]]:
    """Model bytes and, for integer in/out files, the (scale, zero point) of each such input/output. `fp32` is the
    tower's fp32 file in the same format, for the precisions made from it (runtime.precisions: `from_fp32`)."""
    if job.precision == "fp32" and fp32 is not None:
        return fp32, {}
    if job.format == "tflite":
        int8_file = int8_io and job.precision == "int8"
        data = convert_tflite(spec, precision=job.precision, batch=batch, calibration=calibration,
                              int8_io=int8_file, fp32_model=fp32)
        return data, (io_quantization(data, spec.signature) if int8_file else {})
    return convert_onnx(spec, precision=job.precision, calibration=calibration, fp32_model=fp32), {}
