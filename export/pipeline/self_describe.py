"""Self-describing model files: what someone handed one `image_int8.onnx` or `text_fp32.tflite` alone needs to use
it (tower, precision, input layout, preprocessing, tokenizer, logit_scale, embedding size, the source checkpoint and
the clipedge that wrote it), inside the file rather than only in the bundle's manifest.

ONNX: one `metadata_props` entry per fact (what Netron shows and onnxruntime's `get_modelmeta().custom_metadata_map`
returns; lists and objects as JSON text), a `doc_string`, and the dynamic batch axis named `batch` instead of
tf2onnx's `unk__546`. TFLite: the same facts as one JSON document in the model's `metadata` list under the name
`clipedge` (MediaPipe's own `TFLITE_METADATA`, which the mobile variant adds, is left to it). Both are read back with
`read_description`.
"""

from __future__ import annotations

import json
import logging
from importlib import metadata as package_metadata
from typing import TYPE_CHECKING, Any

from clipedge.runtime.errors import ExportError

if TYPE_CHECKING:  # the types only: this module is imported by the pipeline, and needs no TensorFlow itself
    from clipedge.export.pipeline.job import Job
    from clipedge.export.towers.spec import TowerSpec

__all__ = ["METADATA_NAME", "file_facts", "self_describe", "describe_onnx", "describe_tflite", "read_description"]

log = logging.getLogger(__name__)

METADATA_NAME = "clipedge"  # the TFLite metadata entry
FLATBUFFER_LIMIT = 2**31 - 2**24  # a flatbuffer's offsets are 32-bit: keep a margin for the tables

_OUTPUT_NOTES = {
    "image": "projected image embedding, not normalized: L2-normalize it before cosine similarity",
    "text": "projected text embedding, not normalized: L2-normalize it before cosine similarity",
    "classifier": "softmax over logit_scale * cosine(image, label), one probability per label in `labels`",
}


def _version() -> str:
    try:
        return package_metadata.version("clipedge")
    except package_metadata.PackageNotFoundError:
        return "unknown"


def file_facts(fields: dict[str, Any], spec: TowerSpec, job: Job, batch: int | None,
               quantization: dict[str, Any]) -> dict[str, Any]:
    """The facts of one file, as JSON values: `fields` are the bundle's manifest fields (ExportRun.manifest_fields),
    `batch` the export's batch setting (None: dynamic), `quantization` the int8 in/out scales, if any."""
    model, tokenizer = fields["model"], fields["tokenizer"]
    inputs, outputs = spec.io(job.format, None if job.format == "onnx" else spec.model_batch(batch))
    facts: dict[str, Any] = {
        "producer": f"clipedge {_version()}", "clipedge_version": _version(),
        "tower": job.tower, "precision": job.precision, "format": job.format, "variant": job.variant,
        "inputs": inputs, "outputs": outputs, "output_note": _OUTPUT_NOTES[job.tower],
        "embed_dim": fields["embed_dim"], "logit_scale": fields["logit_scale"],
        "source_checkpoint": str(model["source"]), "source_sha256": model["sha256"], "model_name": model["name"],
    }
    if job.tower != "text":
        preprocess = fields["preprocess"]
        image = next(i for i in inputs if i["name"] in ("pixel_values", "image"))
        facts.update(input_layout=image.get("layout", "NHWC"), image_size=spec.model.config.vision.image_size,
                     mean=preprocess["mean"], std=preprocess["std"], preprocess=preprocess)
    if job.tower != "image":
        facts.update(tokenizer="OpenAI CLIP BPE (bpe_simple_vocab_16e6), lower-cased, ftfy-fixed",
                     context_length=tokenizer["context_length"], sot_token_id=tokenizer["sot_token_id"],
                     eot_token_id=tokenizer["eot_token_id"], pad_token_id=tokenizer["pad_token_id"],
                     pool=tokenizer["pool"])
    if job.tower == "classifier":
        facts.update(labels=list(spec.labels or ()), template=spec.template)
    if quantization:
        facts["int8_io"] = quantization
    return facts


def self_describe(data: bytes, fmt: str, facts: dict[str, Any]) -> bytes:
    """The model bytes with `facts` written in."""
    if fmt == "onnx":
        return describe_onnx(data, facts)
    if fmt == "tflite":
        return describe_tflite(data, facts)
    raise ExportError(f"no self-description for format {fmt!r}")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def describe_onnx(data: bytes, facts: dict[str, Any]) -> bytes:
    import onnx

    model = onnx.load_from_string(data)
    keep = [p for p in model.metadata_props if p.key not in facts]  # the quantizer's own entries stay
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in facts.items():
        model.metadata_props.add(key=key, value=_text(value))
    model.doc_string = (f"clipedge {facts['tower']} tower of {facts['model_name']}, {facts['precision']}: "
                        f"{facts['output_note']}. The metadata_props say how to feed it.")
    _name_batch_axis(model.graph)
    return model.SerializeToString()


def _name_batch_axis(graph: Any) -> None:
    """tf2onnx names the dynamic batch axis of each input and output `unk__N`: one name, `batch`, everywhere it
    appears (inputs, outputs, intermediate shapes), which also tells onnxruntime the outputs have the inputs'
    batch."""
    batch_names = set()
    for value in [*graph.input, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            batch_names.add(dims[0].dim_param)
            dims[0].dim_param = "batch"
    batch_names.discard("")
    for value in graph.value_info:
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param") and dim.dim_param in batch_names:
                dim.dim_param = "batch"


def describe_tflite(data: bytes, facts: dict[str, Any]) -> bytes:
    from clipedge.export.formats.tflite.flatbuffer import read_model, set_metadata, write_model

    if len(data) >= FLATBUFFER_LIMIT:
        log.warning("%s %s: %d bytes, over what one flatbuffer holds; the file carries no clipedge metadata",
                    facts["tower"], facts["precision"], len(data))
        return data
    model = read_model(data)
    set_metadata(model, METADATA_NAME, json.dumps(facts, indent=1).encode())  # described before: replaced
    return write_model(model, len(data))



def read_description(data: bytes) -> dict[str, Any] | None:
    """The facts written by `self_describe` (JSON values, for both formats), or None when the file has none."""
    if data[4:8] == b"TFL3":
        from clipedge.export.formats.tflite.flatbuffer import metadata_bytes

        content = metadata_bytes(data, METADATA_NAME)
        return None if content is None else json.loads(content)
    import onnx

    props = {p.key: p.value for p in onnx.load_from_string(data).metadata_props}
    if "producer" not in props or not props["producer"].startswith("clipedge"):
        return None
    return {key: json.loads(value) if key in _JSON_KEYS or value.startswith(("[", "{")) else value
            for key, value in props.items()}


# metadata_props are strings: these facts are numbers, written (and read back) as JSON
_JSON_KEYS = frozenset({"embed_dim", "logit_scale", "image_size", "context_length", "sot_token_id", "eot_token_id",
                        "pad_token_id"})
