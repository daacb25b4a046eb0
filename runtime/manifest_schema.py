"""What a `manifest.json` must hold before the runtime reads a field of it: the types, ranges and file names of every
field that is used on a device, checked once when the bundle is opened.

Why a schema and not `try: ... except (KeyError, TypeError)` where the fields are used: a manifest is outside input
(a copied, edited or damaged bundle), and a wrong type found deep in a run is a traceback, or worse a silent wrong
result (a string `logit_scale` multiplied into a softmax, an artifact `file` of `../x.tflite` read from outside the
bundle). Each failure is a `BundleError` that names the field, the bad value and what to do.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from clipedge.runtime.errors import BundleError, InputError
from clipedge.runtime.precisions import PRECISION_NAMES

__all__ = ["check_manifest", "check_file_name", "SHA256_PATTERN"]

SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
_DTYPES = frozenset({"float32", "float16", "float64", "int8", "uint8", "int16", "int32", "int64", "bool"})
_LAYOUTS = frozenset({"NHWC", "NCHW"})
_POOL_RULES = frozenset({"first", "argmax"})
_FIX = "re-export the bundle, or restore its manifest.json from a good copy"


class _Where:
    """The manifest path and the field being checked, so every message can say `artifacts[3].inputs[0].shape`."""

    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, field: str, value: Any, expected: str) -> BundleError:
        shown = repr(value)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        return BundleError(f"{self.path}: field {field!r} is {shown}, expected {expected}; {_FIX}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def check_file_name(name: Any) -> str:
    """A bundle-relative file name: no absolute path, drive, `..`, backslash or NUL, so that joining it to the bundle
    directory can only name something inside it (symlinks are checked where the file is opened)."""
    if not isinstance(name, str) or not name or "\x00" in name or "\\" in name:
        raise ValueError("a non-empty relative path with '/' separators")
    posix = PurePosixPath(name)
    if posix.is_absolute() or PureWindowsPath(name).drive or PureWindowsPath(name).is_absolute():
        raise ValueError("a path relative to the bundle directory, not an absolute one")
    if any(part in ("..", "") for part in name.split("/")) or name.startswith("./") or posix.name in ("", "."):
        raise ValueError("a path inside the bundle directory (no '..' and no empty parts)")
    return name


def _file(where: _Where, field: str, value: Any) -> str:
    try:
        return check_file_name(value)
    except ValueError as err:
        raise where.fail(field, value, str(err)) from None


def _sha(where: _Where, field: str, value: Any) -> None:
    if not isinstance(value, str) or not SHA256_PATTERN.fullmatch(value):
        raise where.fail(field, value, "64 lowercase hex digits (a sha256)")


def _typed(where: _Where, field: str, value: Any, check: Callable[[Any], bool], expected: str) -> Any:
    if not check(value):
        raise where.fail(field, value, expected)
    return value


def _choice(where: _Where, field: str, value: Any, options: frozenset[str] | tuple[str, ...]) -> None:
    _typed(where, field, value, lambda v: isinstance(v, str) and v in options, f"one of {sorted(options)}")


def _str_list(where: _Where, field: str, value: Any) -> None:
    _typed(where, field, value, lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
           "a list of strings")


def _tensor(where: _Where, field: str, spec: Any) -> None:
    _typed(where, field, spec, lambda v: isinstance(v, dict), "an object with name, shape and dtype")
    _typed(where, f"{field}.name", spec.get("name"), lambda v: isinstance(v, str) and v, "a non-empty string")
    _typed(where, f"{field}.shape", spec.get("shape"),
           lambda v: isinstance(v, list) and all(_is_int(d) and d >= -1 for d in v), "a list of ints >= -1")
    _choice(where, f"{field}.dtype", spec.get("dtype"), _DTYPES)
    if "layout" in spec and spec["layout"] is not None:
        _choice(where, f"{field}.layout", spec["layout"], _LAYOUTS)
    quantization = spec.get("quantization")
    if quantization is not None:
        _typed(where, f"{field}.quantization", quantization, lambda v: isinstance(v, dict),
               "an object with scale and zero_point")
        _typed(where, f"{field}.quantization.scale", quantization.get("scale"), lambda v: _is_number(v) and v > 0,
               "a finite number > 0")
        _typed(where, f"{field}.quantization.zero_point", quantization.get("zero_point"),
               lambda v: _is_int(v) and -128 <= v <= 255, "an int in [-128, 255]")


def _extra(where: _Where, field: str, extra: Any) -> None:
    _typed(where, field, extra, lambda v: isinstance(v, dict), "an object")
    table = extra.get("token_table")
    if table is not None:
        _typed(where, f"{field}.token_table", table, lambda v: isinstance(v, dict), "an object with file and sha256")
        _file(where, f"{field}.token_table.file", table.get("file"))
        _sha(where, f"{field}.token_table.sha256", table.get("sha256"))
    pool = extra.get("pool")
    if pool is not None:
        _typed(where, f"{field}.pool", pool, lambda v: isinstance(v, dict), "an object with a rule")
        _choice(where, f"{field}.pool.rule", pool.get("rule"), _POOL_RULES)
        if pool["rule"] == "first":
            _typed(where, f"{field}.pool.eot_token_id", pool.get("eot_token_id"), lambda v: _is_int(v) and v >= 0,
                   "an int >= 0")
    if "labels" in extra:
        _str_list(where, f"{field}.labels", extra["labels"])
    if "template" in extra:
        _typed(where, f"{field}.template", extra["template"], lambda v: isinstance(v, str), "a string")


def _artifact(where: _Where, index: int, entry: Any, formats: tuple[str, ...]) -> None:
    field = f"artifacts[{index}]"
    _typed(where, field, entry, lambda v: isinstance(v, dict), "an object describing one model file")
    for key in ("tower", "precision", "signature"):
        _typed(where, f"{field}.{key}", entry.get(key), lambda v: isinstance(v, str), "a string")
    _choice(where, f"{field}.format", entry.get("format"), formats)
    _typed(where, f"{field}.variant", entry.get("variant", "default"), lambda v: isinstance(v, str), "a string")
    _file(where, f"{field}.file", entry.get("file"))
    _typed(where, f"{field}.bytes", entry.get("bytes"), lambda v: _is_int(v) and v >= 0, "an int >= 0")
    _sha(where, f"{field}.sha256", entry.get("sha256"))
    for key in ("inputs", "outputs"):
        specs = _typed(where, f"{field}.{key}", entry.get(key), lambda v: isinstance(v, list) and v,
                       "a non-empty list of tensors")
        for i, spec in enumerate(specs):
            _tensor(where, f"{field}.{key}[{i}]", spec)
    _typed(where, f"{field}.fidelity", entry.get("fidelity", {}), lambda v: isinstance(v, dict), "an object")
    fidelity = entry.get("fidelity", {})
    if fidelity.get("cosine_min") is not None:
        _typed(where, f"{field}.fidelity.cosine_min", fidelity["cosine_min"], _is_number, "a finite number")
    _str_list(where, f"{field}.flags", entry.get("flags", []))
    _extra(where, f"{field}.extra", entry.get("extra", {}))


def _tokenizer(where: _Where, section: Any) -> None:
    _typed(where, "tokenizer", section, lambda v: isinstance(v, dict), "an object")
    files = section.get("files", [])
    _typed(where, "tokenizer.files", files, lambda v: isinstance(v, list), "a list of bundle file names")
    for i, name in enumerate(files):
        _file(where, f"tokenizer.files[{i}]", name)
    if "context_length" in section:
        _typed(where, "tokenizer.context_length", section["context_length"], lambda v: _is_int(v) and 2 <= v <= 4096,
               "an int from 2 to 4096")
    for key in ("sot_token_id", "eot_token_id", "pad_token_id"):
        if key in section:
            _typed(where, f"tokenizer.{key}", section[key], lambda v: _is_int(v) and v >= 0, "an int >= 0")


def _defaults(where: _Where, section: Any, formats: tuple[str, ...]) -> None:
    """`defaults.by_format.<format>.<cpu|gpu>`: a precision name (what `load` runs when none is asked for)."""
    _typed(where, "defaults", section, lambda v: isinstance(v, dict), "an object")
    by_format = _typed(where, "defaults.by_format", section.get("by_format", {}), lambda v: isinstance(v, dict),
                       "an object of format -> {cpu, gpu}")
    for fmt, entry in by_format.items():
        _choice(where, "defaults.by_format", fmt, formats)
        _typed(where, f"defaults.by_format.{fmt}", entry, lambda v: isinstance(v, dict), "an object {cpu, gpu}")
        for accelerator, name in entry.items():
            _choice(where, f"defaults.by_format.{fmt}", accelerator, ("cpu", "gpu"))
            _choice(where, f"defaults.by_format.{fmt}.{accelerator}", name, PRECISION_NAMES)


def check_manifest(data: Any, path: str, formats: tuple[str, ...]) -> None:
    """Raise BundleError naming the first field of `data` (a parsed manifest.json) the runtime cannot use."""
    where = _Where(path)
    if not isinstance(data, dict):
        raise BundleError(f"{path} is a JSON {type(data).__name__}, not an object; {_FIX}")
    for key in ("artifacts", "logit_scale", "embed_dim", "preprocess", "tokenizer"):
        if key not in data:
            raise BundleError(f"{path} lacks the required field {key!r}; {_FIX}")
    _typed(where, "logit_scale", data["logit_scale"], lambda v: _is_number(v) and 0 < v <= 1e4,
           "a finite number in (0, 10000]")
    _typed(where, "embed_dim", data["embed_dim"], lambda v: _is_int(v) and 1 <= v <= 1 << 16, "an int from 1 to 65536")
    _typed(where, "preprocess", data["preprocess"], lambda v: isinstance(v, dict), "an object")
    from clipedge.runtime.preprocess import PreprocessConfig  # numpy + Pillow: only once a bundle is read

    try:
        config = PreprocessConfig.from_dict(data["preprocess"])
    except (InputError, TypeError) as err:
        raise BundleError(f"{path}: field 'preprocess' is unusable ({err}); {_FIX}") from err
    for key in ("image_size", "crop_size"):  # a 10^5-pixel crop would be a 120 GB batch, not a model input
        _typed(where, f"preprocess.{key}", getattr(config, key), lambda v: v <= 4096, "at most 4096 pixels")
    _tokenizer(where, data["tokenizer"])
    model = data.get("model", {})
    _typed(where, "model", model, lambda v: isinstance(v, dict), "an object")
    for key in ("name", "sha256", "source"):
        if model.get(key) is not None:
            _typed(where, f"model.{key}", model[key], lambda v: isinstance(v, str), "a string")
    files = data.get("files", {})
    _typed(where, "files", files, lambda v: isinstance(v, dict), "an object of file name -> {bytes, sha256}")
    for name, entry in files.items():
        _file(where, f"files[{name!r}]", name)
        _typed(where, f"files[{name!r}]", entry, lambda v: isinstance(v, dict), "an object with bytes and sha256")
        _sha(where, f"files[{name!r}].sha256", entry.get("sha256"))
    if "defaults" in data:
        _defaults(where, data["defaults"], formats)
    artifacts = _typed(where, "artifacts", data["artifacts"], lambda v: isinstance(v, list), "a list of model files")
    for index, entry in enumerate(artifacts):
        _artifact(where, index, entry, formats)
