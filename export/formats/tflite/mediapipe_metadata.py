"""MediaPipe-ready image towers: TFLite metadata for the `mobile` variant (uint8 RGB NHWC in, CLIP's normalization
inside the graph, see TowerSpec), so MediaPipe Tasks' `ImageEmbedder` / `ImageClassifier` load the file unchanged
on Android, iOS and the web.

MediaPipe crops the region of interest, resizes it (bilinear, no antialiasing) to the model's input size and, for a
uint8 input tensor, feeds the pixels as they are: the normalization must be in the graph. A float input tensor would
need `NormalizationOptions` metadata instead; the uint8 input keeps one file that runs with or without metadata and
that full-int8 quantization can take as is.

The metadata is written with the TFLite metadata flatbuffer schema (`metadata_schema_py_generated`, shipped in the
mediapipe wheel and in tflite-support; its own metadata writers need a compiled module that wheel lacks), following
the layout of tflite-support's `MetadataPopulator`: a `ModelMetadata` buffer (file identifier "M001") named
`TFLITE_METADATA` in the model's `metadata` list, and associated files (the classifier's labels) appended to the model
as an uncompressed zip archive, which a TFLite interpreter ignores.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence

import numpy as np

from clipedge.export.formats.tflite.flatbuffer import input_shape, metadata_bytes, read_model, set_metadata, write_model
from clipedge.runtime.errors import ExportError

__all__ = ["METADATA_NAME", "LABELS_FILE", "ROI_SETTINGS", "add_metadata", "read_metadata",
           "metadata_schema", "centre_square", "clip_crop", "mediapipe_embed", "mediapipe_classify"]

METADATA_NAME = "TFLITE_METADATA"
LABELS_FILE = "labels.txt"
# Every field written here exists since metadata schema 1.0.0 (see metadata_schema.fbs history); MediaPipe refuses
# metadata whose min_parser_version is newer than its parser's.
MIN_PARSER_VERSION = "1.0.0"


def metadata_schema():
    """The TFLite metadata flatbuffer module: from the mediapipe wheel, else tflite-support."""
    try:
        from mediapipe.tasks.metadata import metadata_schema_py_generated as schema
    except ImportError:
        try:
            from tflite_support import metadata_schema_py_generated as schema
        except ImportError as err:
            raise ExportError("writing MediaPipe metadata needs the TFLite metadata schema: "
                              "pip install 'clipedge[mobile]' (mediapipe) or tflite-support") from err
    return schema


def _pack(table, identifier: bytes) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(table.Pack(builder), file_identifier=identifier)
    return bytes(builder.Output())


def add_metadata(model_bytes: bytes, tower: str, name: str, description: str, image_size: int,
                 mean: Sequence[float], std: Sequence[float], output_width: int,
                 labels: Sequence[str] | None = None) -> bytes:
    """The .tflite with MediaPipe metadata: input image properties (RGB, image_size square) and the identity
    NormalizationOptions of a uint8 input (mean 0, std 1: the pixels go in as they are; CLIP's `mean`/`std`, on
    0..1 pixels, are applied in the graph and stated in the description); for the classifier, the labels as a
    TENSOR_AXIS_LABELS file on the probabilities output."""
    md = metadata_schema()
    if tower not in ("image", "classifier"):
        raise ExportError(f"MediaPipe metadata is for the image and classifier towers, not {tower!r}")
    if tower == "classifier" and not labels:
        raise ExportError("the classifier's MediaPipe metadata needs its labels")
    if labels is not None and len(labels) != output_width:
        raise ExportError(f"{len(labels)} labels for a classifier with {output_width} outputs")

    image = md.TensorMetadataT()
    image.name = "image"
    image.description = (f"RGB uint8 [1, {image_size}, {image_size}, 3], 0..255. Normalized inside the model: "
                         f"(x / 255 - mean) / std, mean {list(mean)}, std {list(std)}.")
    image.content = md.ContentT()
    image.content.contentPropertiesType = md.ContentProperties.ImageProperties
    image.content.contentProperties = md.ImagePropertiesT()
    image.content.contentProperties.colorSpace = md.ColorSpaceType.RGB
    normalization = md.ProcessUnitT()
    normalization.optionsType = md.ProcessUnitOptions.NormalizationOptions
    normalization.options = md.NormalizationOptionsT()
    normalization.options.mean, normalization.options.std = [0.0], [1.0]
    image.processUnits = [normalization]
    image.stats = md.StatsT()
    image.stats.max, image.stats.min = [255.0], [0.0]

    output = md.TensorMetadataT()
    output.content = md.ContentT()
    output.content.contentPropertiesType = md.ContentProperties.FeatureProperties
    output.content.contentProperties = md.FeaturePropertiesT()
    if tower == "classifier":
        output.name = "probabilities"
        output.description = "Softmax over logit_scale * cosine(image, label) for each label of labels.txt."
        output.stats = md.StatsT()
        output.stats.max, output.stats.min = [1.0], [0.0]
        labels_file = md.AssociatedFileT()
        labels_file.name = LABELS_FILE
        labels_file.description = "One label per line, in the order of the model's outputs."
        labels_file.type = md.AssociatedFileType.TENSOR_AXIS_LABELS
        output.associatedFiles = [labels_file]
    else:
        output.name = "image_embeds"
        output.description = (f"CLIP image embedding [1, {output_width}], projected, not normalized: L2-normalize "
                              "it (ImageEmbedderOptions l2_normalize) before comparing with text embeddings.")

    subgraph = md.SubGraphMetadataT()
    subgraph.inputTensorMetadata = [image]
    subgraph.outputTensorMetadata = [output]
    model_md = md.ModelMetadataT()
    model_md.name = name
    model_md.description = description
    model_md.version = "1"
    model_md.author = "clipedge"
    model_md.subgraphMetadata = [subgraph]
    model_md.minParserVersion = MIN_PARSER_VERSION
    metadata = _pack(model_md, md.ModelMetadataIdentifier() if hasattr(md, "ModelMetadataIdentifier") else b"M001")

    model = read_model(model_bytes)
    try:
        set_metadata(model, METADATA_NAME, metadata, replace=False)
    except ValueError:
        raise ExportError("the model already has TFLite metadata") from None
    data = write_model(model, len(model_bytes))
    if labels is not None:
        # zipfile's append mode on bytes that are not a zip adds an archive after them (tflite-support does the
        # same); ZIP_STORED, as MediaPipe reads the files in place
        stream = io.BytesIO(data)
        stream.seek(0, io.SEEK_END)
        with zipfile.ZipFile(stream, "a", compression=zipfile.ZIP_STORED) as archive:
            archive.writestr(LABELS_FILE, "\n".join(labels) + "\n")
        data = stream.getvalue()
    return data


def read_metadata(model_bytes: bytes) -> tuple[object | None, dict[str, bytes]]:
    """(ModelMetadataT or None, {associated file name: bytes}) of a .tflite."""
    md = metadata_schema()
    data = metadata_bytes(model_bytes, METADATA_NAME)
    metadata = None if data is None else md.ModelMetadataT.InitFromPackedBuf(data, 0)
    files: dict[str, bytes] = {}
    try:
        with zipfile.ZipFile(io.BytesIO(model_bytes)) as archive:
            files = {n: archive.read(n) for n in archive.namelist()}
    except zipfile.BadZipFile:
        pass
    return metadata, files


# ---- checking with MediaPipe itself (needs the `mobile` extra) ----------------------------------------------------
# "full": no region of interest (MediaPipe squashes the whole image); "centre-square": the largest centred square;
# "clip-crop": exactly the window of the original image that CLIP's resize-then-crop keeps (best: see README).
ROI_SETTINGS = ("full", "centre-square", "clip-crop")


def centre_square(width: int, height: int):
    """MediaPipe's normalized region of interest for the largest centred square: CLIP's centre crop, up to the
    integer rounding of its resized size and crop offset (see clip_crop)."""
    from mediapipe.tasks.python.components.containers.rect import RectF

    side = min(width, height)
    return RectF(left=(width - side) / 2 / width, top=(height - side) / 2 / height,
                 right=(width + side) / 2 / width, bottom=(height + side) / 2 / height)


def clip_crop(width: int, height: int, size: int):
    """The normalized window of a width x height image that the runtime's preprocessing keeps: it resizes the
    shortest side to `size` (the long side truncated to an int) and crops `size` at offset (resized - size) // 2,
    as HF's CLIPImageProcessor does. As MediaPipe's region of interest it halves the pixel gap of the plain centre
    square on the shipped photos."""
    from mediapipe.tasks.python.components.containers.rect import RectF

    from clipedge.runtime.preprocess import resized_size

    resized_h, resized_w = resized_size(height, width, size)
    top, left = (resized_h - size) // 2, (resized_w - size) // 2
    return RectF(left=left / resized_w, top=top / resized_h, right=(left + size) / resized_w,
                 bottom=(top + size) / resized_h)


def _mp_image(image):
    """RGB uint8 mediapipe.Image from a PIL image (EXIF-rotated, alpha dropped, as the runtime loads it)."""
    import mediapipe as mp

    pixels = np.ascontiguousarray(np.asarray(image.convert("RGB")))
    return mp.Image(image_format=mp.ImageFormat.SRGB, data=pixels)


def _options(image, roi: str, size: int):
    from mediapipe.tasks.python import vision

    if roi == "full":
        return None
    window = centre_square(*image.size) if roi == "centre-square" else clip_crop(*image.size, size)
    return vision.ImageProcessingOptions(region_of_interest=window)


def _input_size(model_path) -> int:
    """The square input side of a mobile model (uint8 [1, S, S, 3])."""
    with open(model_path, "rb") as f:
        return input_shape(f.read())[1]


def _check_roi(roi: str) -> None:
    if roi not in ROI_SETTINGS:
        raise ExportError(f"unknown region-of-interest setting {roi!r}; choose from {', '.join(ROI_SETTINGS)}")


def mediapipe_embed(model_path, images, roi: str = "clip-crop") -> np.ndarray:
    """float32 [N, D] embeddings of PIL images from MediaPipe's ImageEmbedder with the given model file (MediaPipe
    does its own crop-to-ROI and resize)."""
    from mediapipe.tasks.python import BaseOptions, vision

    _check_roi(roi)
    size = _input_size(model_path)
    options = vision.ImageEmbedderOptions(base_options=BaseOptions(model_asset_path=str(model_path)))
    with vision.ImageEmbedder.create_from_options(options) as embedder:
        rows = [embedder.embed(_mp_image(im), _options(im, roi, size)).embeddings[0].embedding for im in images]
    return np.asarray(rows, dtype=np.float32)


def mediapipe_classify(model_path, images, roi: str = "clip-crop") -> tuple[np.ndarray, list[str]]:
    """(top-1 label index [N], top-1 label names) from MediaPipe's ImageClassifier with the given model file."""
    from mediapipe.tasks.python import BaseOptions, vision

    _check_roi(roi)
    size = _input_size(model_path)
    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(model_path)),
                                            max_results=1)
    with vision.ImageClassifier.create_from_options(options) as classifier:
        tops = [classifier.classify(_mp_image(im), _options(im, roi, size)).classifications[0].categories[0]
                for im in images]
    return np.array([t.index for t in tops]), [t.category_name for t in tops]
