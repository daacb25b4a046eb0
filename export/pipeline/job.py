"""`Job`: one model file of the bundle to build (tower x format x precision x variant), the unit the pipeline plans
(plan.py), converts (convert.py, also in a child process), verifies and writes. No TensorFlow: a plain value."""

from __future__ import annotations

from dataclasses import dataclass

from clipedge.runtime.manifest import artifact_file_name

__all__ = ["Job"]


@dataclass(frozen=True)
class Job:
    """One artifact of the bundle to build."""

    tower: str  # "image" | "text" | "classifier"
    format: str
    precision: str
    variant: str = "default"

    @property
    def file(self) -> str:
        return artifact_file_name(self.tower, self.format, self.precision, self.variant)
