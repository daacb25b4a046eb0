"""`ArtifactRunner`: the one way a model file of a bundle is run, as the device runs it.

The runtime's encoders, export's verification and `clipedge report` all go through it, so a number measured at
export or in a report is the number the device gets: the same feeds (NCHW transpose for ONNX, int8 quantization of
integer-I/O inputs, the GPU text variant's token lookup done in numpy) and the same backends.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from clipedge.runtime.backends.open import Backend, BackendInfo, open_backend
from clipedge.runtime.errors import BundleError, InputError, ModelOutputError
from clipedge.runtime.manifest import Artifact, Manifest
from clipedge.runtime.npy import load_npy
from clipedge.runtime.precisions import precision

__all__ = ["ArtifactRunner", "quantize", "dequantize", "gpu_text_feeds", "load_token_table"]


def _per_call_formats(name: str) -> tuple[str, ...]:
    try:
        return precision(name).per_call_ranges
    except KeyError:  # a precision this runtime does not know: batch as usual
        return ()


class ArtifactRunner:
    """One opened model file and the manifest entry that says how to feed it."""

    def __init__(self, path: Path, artifact: Artifact, *, threads: int | None = None, accelerator: str = "cpu",
                 token_table: np.ndarray | None = None, chunk: int = 32, sha256: str | None = None) -> None:
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise InputError(f"chunk must be a positive integer, got {chunk!r}")
        self.path = Path(path)
        self.artifact = artifact
        self.token_table = token_table
        # a file that takes its activation ranges per call over the whole batch runs one row per call, so a row's
        # result never depends on the rows sent with it (runtime.precisions.Precision.per_call_ranges)
        self.rows_per_call_only = artifact.format in _per_call_formats(artifact.precision)
        self.chunk = 1 if self.rows_per_call_only else chunk
        self.backend: Backend = open_backend(self.path, signature=artifact.signature or None, threads=threads,
                                             accelerator=accelerator, sha256=sha256)
        self._input_quantization = {spec.get("name"): spec.get("quantization") for spec in artifact.inputs}
        self._output_quantization = artifact.outputs[0].get("quantization") if artifact.outputs else None

    @classmethod
    def open(cls, manifest: Manifest, artifact: Artifact, *, threads: int | None = None, accelerator: str = "cpu",
             chunk: int = 32) -> ArtifactRunner:
        """From a bundle: the file's sha256 (and its token table's, for the GPU text variant) is checked first, so a
        damaged or swapped file fails with the file's name instead of giving wrong numbers."""
        path = manifest.verified_path(artifact)
        table = None
        if "token_table" in artifact.extra:
            entry = artifact.extra["token_table"]
            table = load_token_table(manifest.verified_file(entry["file"], entry["sha256"]))
        return cls(path, artifact, threads=threads, accelerator=accelerator, token_table=table, chunk=chunk,
                   sha256=artifact.sha256)

    @property
    def info(self) -> BackendInfo:
        return self.backend.info

    @property
    def gpu_text(self) -> bool:
        """The GPU text variant takes token embeddings and an EOT mask, not ids: LiteRT's GPU has no 2-D GATHER."""
        return "token_table" in self.artifact.extra and "pool" in self.artifact.extra

    def run_feeds(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        """The model's single output as float for float feeds by input name: an int8_io file gets its inputs
        quantized and its output dequantized here, so callers never see the file's integer scales. Every model
        output passes here once and is checked: NaN or infinity is a ModelOutputError naming the file, never an
        embedding or a probability (issue #33: `cat (nan)` with exit 0, NaN rows written to disk)."""
        arrays = {name: quantize(value, self._input_quantization.get(name)) for name, value in feeds.items()}
        output = dequantize(next(iter(self.backend.run(arrays).values())), self._output_quantization)
        self._check_finite(output, feeds)
        return output

    def _check_finite(self, output: np.ndarray, feeds: Mapping[str, np.ndarray]) -> None:
        output = np.asarray(output)
        if output.dtype.kind not in "fc" or np.isfinite(output).all():
            return
        rows = output.reshape(len(output), -1) if output.ndim > 1 else output.reshape(-1, 1)
        bad = int((~np.isfinite(rows)).any(axis=1).sum())
        inputs_bad = any(np.asarray(v).dtype.kind in "fc" and not np.isfinite(v).all() for v in feeds.values())
        why = ("its inputs hold NaN or infinity too: check what was passed in" if inputs_bad else
               "the file is damaged or was exported wrong; re-export the bundle")
        where = "its output" if len(rows) == 1 else f"{bad} of its {len(rows)} output rows"
        raise ModelOutputError(f"model file {self.path} gave NaN or infinity in {where}: {why}")

    def run(self, inputs: np.ndarray) -> np.ndarray:
        """NHWC pixels (uint8 for the mobile variant's `image` input) or int32 ids [N, context] -> raw outputs, in
        chunks of `chunk` rows to bound memory. Not normalized: embeddings are normalized by the caller, and a
        classifier's outputs are already probabilities."""
        inputs = np.asarray(inputs)
        if len(inputs) == 0:  # what concatenating zero chunks would have given, had numpy allowed it
            return np.zeros((0, *(max(d, 0) for d in self.backend.outputs[0].shape[1:])), np.float32)
        parts = [self.run_feeds(self._feeds(inputs[start : start + self.chunk]))
                 for start in range(0, len(inputs), self.chunk)]
        return np.concatenate(parts)

    def _feeds(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        if self.gpu_text:
            if self.token_table is None:
                raise BundleError(f"{self.artifact.file} is the GPU text variant and needs its token table "
                                  f"({self.artifact.extra['token_table'].get('file')}): open it with "
                                  "ArtifactRunner.open(manifest, artifact)")
            if rows.size and (rows.min() < 0 or rows.max() >= len(self.token_table)):
                raise BundleError(f"token ids up to {rows.max()} for a token table of {len(self.token_table)} rows "
                                  f"({self.artifact.extra['token_table'].get('file')}): the bundle's tokenizer and "
                                  "GPU text model do not belong together; re-export the bundle")
            return gpu_text_feeds(rows, self.token_table, self.artifact.extra["pool"])
        if self.artifact.input_layout == "NCHW":  # preprocessing is NHWC everywhere; ONNX (like HF) takes NCHW
            rows = rows.transpose(0, 3, 1, 2)
        return {self.backend.inputs[0].name: np.ascontiguousarray(rows)}


def load_token_table(path: Path) -> np.ndarray:
    """The GPU text variant's token embeddings: a 2-D float matrix, or BundleError (a checked sha256 says the bytes
    are the exported ones, not that an edited manifest points at a sensible file)."""
    try:
        table = load_npy(path)
    except ValueError as err:
        raise BundleError(f"token table {path} is not a readable .npy file ({err}); re-export the bundle") from err
    if not isinstance(table, np.ndarray) or table.ndim != 2 or table.dtype.kind != "f" or not table.size:
        raise BundleError(f"token table {path} is {getattr(table, 'dtype', '?')} {getattr(table, 'shape', '?')}, "
                          "expected a 2-D float matrix (tokens x width); re-export the bundle")
    return table


def quantize(x: np.ndarray, quantization: dict | None) -> np.ndarray:
    """float -> int8 with the file's input scale/zero point; unchanged when the input is float."""
    if not quantization:
        return x
    q = np.round(np.asarray(x, np.float32) / quantization["scale"]) + quantization["zero_point"]
    return np.clip(q, -128, 127).astype(np.int8)


def dequantize(y: np.ndarray, quantization: dict | None) -> np.ndarray:
    """int8 -> float with the file's output scale/zero point; unchanged when the output is float."""
    if not quantization:
        return y
    return ((y.astype(np.float32) - quantization["zero_point"]) * quantization["scale"]).astype(np.float32)


def gpu_text_feeds(ids: np.ndarray, table: np.ndarray, pool: dict) -> dict[str, np.ndarray]:
    """Inputs of the GPU text variant: the token lookup and the EOT position, done here because LiteRT's GPU
    accelerator has no 2-D GATHER. `pool` is the manifest's rule: {"rule": "first", "eot_token_id": id} (HF's
    first-EOT) or {"rule": "argmax"} (configs with eos_token_id == 2)."""
    ids = np.asarray(ids)
    if pool.get("rule") == "argmax":
        position = ids.argmax(axis=-1)
    else:
        position = (ids == pool["eot_token_id"]).argmax(axis=-1)
    mask = np.zeros(ids.shape, np.float32)
    mask[np.arange(len(ids)), position] = 1.0
    return {"token_embeddings": table[ids].astype(np.float32), "eot_mask": mask}
