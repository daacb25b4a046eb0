"""The bundle contract between export and runtime: names, the manifest schema, and reading it safely.

A bundle is a directory: `manifest.json`, model files, `tokenizer/`. The manifest lists one entry per artifact
(tower x format x precision x variant) with its file's size and sha256, its signature's inputs and outputs, and the
fidelity measured at export, and (`files`) the sha256 of every other file a bundle loads: the tokenizer's, the GPU
text variant's token table, labels.txt. Export writes it (clipedge.export.pipeline.bundle_writer); the runtime only
reads it.

Integrity rules, because a bundle is copied between machines and may be damaged or edited on the way: every field is
checked when the manifest is read (clipedge.runtime.manifest_schema); every file name must resolve inside the bundle
directory (no `..`, absolute paths or symlinks out of it); every file is checked against its sha256 before it is
used, once per process while its size and mtime stay the same.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipedge.runtime.errors import BundleError
from clipedge.runtime.manifest_schema import check_manifest
from clipedge.runtime.precisions import PRECISION_NAMES

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "TOWERS",
    "FORMATS",
    "PRECISIONS",
    "ARTIFACT_TOWERS",
    "Artifact",
    "Manifest",
    "artifact_file_name",
    "sha256_file",
]

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
TOWERS = ("image", "text")  # what `clipedge export --towers` takes
ARTIFACT_TOWERS = (*TOWERS, "classifier")  # what a manifest entry can be (classifiers come with --labels)
FORMATS = ("tflite", "onnx")
PRECISIONS = PRECISION_NAMES  # clipedge.runtime.precisions: the one table
SUFFIX = {"tflite": ".tflite", "onnx": ".onnx"}

log = logging.getLogger(__name__)


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
    # (resolved path, size, mtime_ns) -> sha256 already checked: a load, then each tower's first use, hash once
    _checked: dict[tuple[str, int, int], str] = field(default_factory=dict, compare=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)

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
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
            raise BundleError(f"{path} is not valid JSON ({str(err)[:200]}); re-export the bundle") from err
        except OSError as err:
            raise BundleError(f"cannot read {path}: {err.strerror or err}") from err
        version = data.get("format_version") if isinstance(data, dict) else None
        if not isinstance(version, int) or isinstance(version, bool):
            raise BundleError(f"{path} has no integer format_version; is it a clipedge bundle's manifest?")
        if version > FORMAT_VERSION:
            raise BundleError(
                f"{directory} is bundle format {version}, this clipedge reads up to {FORMAT_VERSION}: "
                "upgrade clipedge (pip install -U clipedge)"
            )
        check_manifest(data, str(path), FORMATS)
        return cls(directory, data, [Artifact.from_dict(a) for a in data["artifacts"]])

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

    def path(self, name: str) -> Path:
        """A file of the bundle by its manifest name, refused when it resolves outside the bundle directory (a
        symlink out of it; the names themselves were checked on read)."""
        root = self.directory.resolve()
        resolved = (root / name).resolve()
        if resolved != root and root not in resolved.parents:
            raise BundleError(f"bundle file {name!r} resolves to {resolved}, outside the bundle {root}: a bundle may "
                              "only use its own files; re-copy the bundle without links out of it")
        return resolved

    def verified_file(self, name: str, sha256: str) -> Path:
        """A bundle file, after checking it exists and its sha256 is the one the manifest gives."""
        path = self.path(name)
        try:
            stat = path.stat()
        except OSError:
            stat = None
        if stat is None or not path.is_file():
            raise BundleError(f"bundle file {self.directory / name} is missing (listed in {MANIFEST_NAME}); "
                              "re-export the bundle")
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            if self._checked.get(key) == sha256:
                return path
        try:
            actual = sha256_file(path)
        except OSError as err:
            raise BundleError(f"cannot read bundle file {path}: {err.strerror or err}") from err
        if actual != sha256:
            raise BundleError(
                f"bundle file {self.directory / name} is damaged or was changed: sha256 {actual[:16]}... does not "
                f"match the manifest's {sha256[:16]}...; re-export or re-copy the bundle"
            )
        with self._lock:
            self._checked[key] = sha256
        return path

    def verified_extra_file(self, name: str) -> Path:
        """A non-model file (tokenizer, labels, token table) checked against the manifest's `files` section. A bundle
        written before that section existed loads with a warning: its extra files cannot be checked."""
        files = self.data.get("files")
        if files is None:
            _warn_unchecked(self.directory)
            path = self.path(name)
            if not path.is_file():
                raise BundleError(f"bundle file {self.directory / name} is missing (listed in {MANIFEST_NAME}); "
                                  "re-export the bundle")
            return path
        if name not in files:
            raise BundleError(f"{self.directory / MANIFEST_NAME} lists {name!r} but gives no sha256 for it in "
                              "'files': the file cannot be checked; re-export the bundle")
        return self.verified_file(name, files[name]["sha256"])

    def tokenizer_dir(self) -> Path | None:
        """The tokenizer file to load (`Tokenizer.from_files` takes it), each listed tokenizer file checked; None
        when the bundle ships none (OpenAI's vocabulary, built into clipedge, is used)."""
        files = self.data["tokenizer"].get("files") or []
        paths = [self.verified_extra_file(name) for name in files]
        names = [Path(name).name for name in files]
        for wanted in ("bpe_simple_vocab_16e6.txt.gz", "vocab.json"):  # the file the tokenizer reads first
            if wanted in names:
                return paths[names.index(wanted)]
        return paths[0] if paths else None

    def verify_all(self) -> list[tuple[str, str]]:
        """(file, problem) for every file the manifest names, problem "" when the file is there, inside the bundle
        and matches its sha256. `clipedge info --verify`."""
        checks: dict[str, str | None] = {a.file: a.sha256 for a in self.artifacts}
        for artifact in self.artifacts:
            if "token_table" in artifact.extra:
                checks[artifact.extra["token_table"]["file"]] = artifact.extra["token_table"]["sha256"]
        files = self.data.get("files")
        for name in self.data["tokenizer"].get("files") or []:
            checks.setdefault(name, None)
        for name, entry in (files or {}).items():
            checks[name] = entry["sha256"]
        results = []
        for name, sha256 in checks.items():
            problem = ""
            if sha256 is None:
                problem = f"no sha256 in {MANIFEST_NAME} (the bundle was written before 'files' existed)"
            else:
                try:
                    self.verified_file(name, sha256)
                except BundleError as err:
                    problem = str(err)
            results.append((name, problem))
        return results


_warned: set[str] = set()


def _warn_unchecked(directory: Path) -> None:
    if str(directory) not in _warned:
        _warned.add(str(directory))
        log.warning("%s was exported before clipedge recorded the sha256 of its tokenizer files: they are used "
                    "unchecked; re-export the bundle to have them checked", directory)
