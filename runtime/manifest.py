"""The bundle contract between export and runtime: names, the manifest schema, and reading it safely.

A bundle is a directory: `manifest.json`, model files, `tokenizer/`. The manifest lists one entry per artifact
(tower x format x precision x variant) with its file's size and sha256, its signature's inputs and outputs, and the
fidelity measured at export. Export writes it (clipedge.export.bundle); the runtime only reads it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipedge.runtime.errors import BundleError
from clipedge.runtime.precisions import PRECISION_NAMES

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "TOWERS",
    "FORMATS",
    "PRECISIONS",
    "Artifact",
    "Manifest",
    "artifact_file_name",
    "sha256_file",
]

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
TOWERS = ("image", "text")
FORMATS = ("tflite", "onnx")
PRECISIONS = PRECISION_NAMES  # clipedge.runtime.precisions: the one table
SUFFIX = {"tflite": ".tflite", "onnx": ".onnx"}


def artifact_file_name(tower: str, fmt: str, precision: str, variant: str = "default") -> str:
    """`image_fp32.tflite`, `text_dynamic-int8.onnx`, `image_gpu_fp16.tflite`: one name per manifest entry."""
    stem = tower if variant == "default" else f"{tower}_{variant}"
    return f"{stem}_{precision}{SUFFIX[fmt]}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Artifact:
    tower: str  # "image" | "text" | "classifier"
    format: str  # "tflite" | "onnx"
    precision: str
    file: str
    bytes: int
    sha256: str
    signature: str  # TFLite signature key; the ONNX graph name
    inputs: list[dict[str, Any]]  # {"name", "shape", "dtype", "layout"?}
    outputs: list[dict[str, Any]]
    variant: str = "default"  # "default" | "gpu" | ...
    fidelity: dict[str, Any] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)  # e.g. "below-floor": fidelity under the precision's floor
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Artifact:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in names})

    @property
    def input_layout(self) -> str | None:
        return self.inputs[0].get("layout") if self.inputs else None


@dataclass(frozen=True)
class Manifest:
    directory: Path
    data: dict[str, Any]
    artifacts: list[Artifact]

    @property
    def logit_scale(self) -> float:
        """The multiplier of cosine similarities, exp() of the checkpoint's stored log value."""
        return float(self.data["logit_scale"])

    @property
    def embed_dim(self) -> int:
        return int(self.data["embed_dim"])

    @classmethod
    def read(cls, directory: str | Path) -> Manifest:
        directory = Path(directory)
        path = directory / MANIFEST_NAME
        if not directory.is_dir():
            raise BundleError(f"bundle directory {directory} does not exist")
        if not path.is_file():
            raise BundleError(f"{directory} is not a clipedge bundle: it has no {MANIFEST_NAME}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise BundleError(f"{path} is not valid JSON ({err}); re-export the bundle") from err
        version = data.get("format_version")
        if not isinstance(version, int):
            raise BundleError(f"{path} has no integer format_version")
        if version > FORMAT_VERSION:
            raise BundleError(
                f"{directory} is bundle format {version}, this clipedge reads up to {FORMAT_VERSION}: "
                "upgrade clipedge (pip install -U clipedge)"
            )
        for key in ("artifacts", "logit_scale", "embed_dim", "preprocess", "tokenizer"):
            if key not in data:
                raise BundleError(f"{path} lacks the required field {key!r}")
        try:
            artifacts = [Artifact.from_dict(a) for a in data["artifacts"]]
        except TypeError as err:
            raise BundleError(f"{path} has a malformed artifact entry: {err}") from err
        return cls(directory, data, artifacts)

    def find(self, tower: str, fmt: str | None = None, precision: str | None = None,
             variant: str = "default") -> Artifact:
        """The one artifact for a tower; format/precision None means the first listed (export lists fp32 first)."""
        matches = [a for a in self.artifacts if a.tower == tower and a.variant == variant
                   and (fmt is None or a.format == fmt) and (precision is None or a.precision == precision)]
        if not matches:
            have = sorted({f"{a.tower}/{a.format}/{a.precision}" + ("" if a.variant == "default" else f"/{a.variant}")
                           for a in self.artifacts})
            raise BundleError(
                f"{self.directory} has no {tower} model with format={fmt or 'any'}, precision={precision or 'any'}, "
                f"variant={variant}; it has: {', '.join(have) or 'none'}"
            )
        return matches[0]

    def verified_path(self, artifact: Artifact) -> Path:
        """The artifact's file, after checking it exists and its sha256 matches the manifest."""
        return self.verified_file(artifact.file, artifact.sha256)

    def verified_file(self, name: str, sha256: str) -> Path:
        """A bundle file, after checking it exists and its sha256 is the one the manifest gives."""
        path = self.directory / name
        if not path.is_file():
            raise BundleError(f"bundle file {path} is missing (listed in {MANIFEST_NAME}); re-export the bundle")
        actual = sha256_file(path)
        if actual != sha256:
            raise BundleError(
                f"bundle file {path} is damaged or was changed: sha256 {actual[:16]}... does not match the manifest's "
                f"{sha256[:16]}...; re-export or re-copy the bundle"
            )
        return path

    def tokenizer_dir(self) -> Path | None:
        files = self.data["tokenizer"].get("files") or []
        for name in files:
            if not (self.directory / name).is_file():
                raise BundleError(f"tokenizer file {self.directory / name} is missing from the bundle")
        return (self.directory / files[0]).parent if files else None
