"""Which artifacts an export builds, in which order: read from the settings and the precision table."""

from __future__ import annotations

from clipedge.export.pipeline.job import Job
from clipedge.export.settings import ExportSettings
from clipedge.runtime.manifest import FORMATS
from clipedge.runtime.precisions import available, precision

__all__ = ["plan_jobs"]

_TOWER_ORDER = ("image", "text", "classifier")


def plan_jobs(settings: ExportSettings) -> list[Job]:
    """Every artifact to build, fp32 first whatever the order asked for (the runtime's default pick is the first
    listed, and the precisions made from the fp32 file reuse it), then the precisions in the order given: per precision,
    the towers (and the classifier) in each format that has it; the fp32 TFLite `gpu` variant; the `mobile` image models
    at every fixed precision."""
    classifier = settings.labels is not None
    jobs = []
    for name in settings.precisions:
        for fmt in (f for f in settings.formats if name in available(f)):
            jobs += [Job(tower, fmt, name) for tower in settings.towers]
            if classifier and precision(name).fixed:
                jobs.append(Job("classifier", fmt, name))
    if settings.gpu and "tflite" in settings.formats:
        jobs += [Job(tower, "tflite", "fp32", "gpu") for tower in settings.towers]
    if settings.mobile:  # MediaPipe Tasks take a TFLite image model: image tower and classifier
        fixed = [p for p in settings.precisions if precision(p).fixed]
        mobile_towers = ["image"] * ("image" in settings.towers) + ["classifier"] * classifier
        jobs += [Job(tower, "tflite", p, "mobile") for p in fixed for tower in mobile_towers]
    order = {p: i for i, p in enumerate(settings.precisions)}  # the gpu variant's fp32 may not be among them
    return sorted(jobs, key=lambda j: (FORMATS.index(j.format), j.variant != "default", j.precision != "fp32",
                                       order.get(j.precision, len(order)), _TOWER_ORDER.index(j.tower)))
