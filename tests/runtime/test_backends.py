"""clipedge.runtime.backends.open against numpy on tiny models built here with TensorFlow (TFLite) and tf2onnx (ONNX).

Weights and inputs are small multiples of 1/8 and 1/4, so every product and sum is exact in float32: any interpreter,
any summation order, must give the numpy result to the bit (the rtol is a formality).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from clipedge.runtime.backends.open import Backend, BackendInfo, TensorSpec, open_backend
from clipedge.runtime.errors import BackendError, BundleError, InputError

RNG = np.random.default_rng(0)
W = (RNG.integers(-8, 8, size=(8, 4)) / 8).astype(np.float32)  # image projection
E = (RNG.integers(-8, 8, size=(50, 4)) / 8).astype(np.float32)  # token embedding table
PIXELS = (RNG.integers(-8, 8, size=(3, 8)) / 4).astype(np.float32)
IDS = RNG.integers(0, 50, size=(3, 5)).astype(np.int32)

INSTALLED = {
    "litert-compiled": importlib.util.find_spec("ai_edge_litert") is not None,
    "litert-interpreter": importlib.util.find_spec("ai_edge_litert") is not None,
    "tflite-runtime": importlib.util.find_spec("tflite_runtime") is not None,
    "tensorflow-lite": importlib.util.find_spec("tensorflow") is not None,
    "onnxruntime": importlib.util.find_spec("onnxruntime") is not None,
}
TFLITE = ["litert-compiled", "litert-interpreter", "tflite-runtime", "tensorflow-lite"]
ALL = [*TFLITE, "onnxruntime"]
# Whether this machine has a GPU device node at all; without one, accelerator="gpu" must fail.
GPU_PRESENT = any(os.path.exists(p) for p in ("/dev/nvidia0", "/dev/dri", "/dev/kgsl-3d0", "/dev/mali0"))


def _needs(prefer: str) -> None:
    if not INSTALLED[prefer]:
        pytest.skip(f"{prefer} is not installed")


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Write image/text/two-signature/dynamic-batch models as .tflite and .onnx; returns name -> path."""
    tf = pytest.importorskip("tensorflow")
    tf2onnx = pytest.importorskip("tf2onnx")
    out = tmp_path_factory.mktemp("models")

    image_spec = [tf.TensorSpec([1, 8], tf.float32, name="pixel_values")]
    text_spec = [tf.TensorSpec([1, 5], tf.int32, name="input_ids")]
    dyn_spec = [tf.TensorSpec([None, 8], tf.float32, name="pixel_values")]

    class Tiny(tf.Module):
        def __init__(self) -> None:
            self.w = tf.Variable(W)
            self.e = tf.Variable(E)

        @tf.function(input_signature=image_spec)
        def encode_image(self, pixel_values):
            return {"image_embeds": tf.matmul(pixel_values, self.w)}

        @tf.function(input_signature=text_spec)
        def encode_text(self, input_ids):
            return {"text_embeds": tf.reduce_sum(tf.gather(self.e, input_ids), axis=1)}

        @tf.function(input_signature=dyn_spec)
        def encode_image_dyn(self, pixel_values):
            return {"image_embeds": tf.matmul(pixel_values, self.w)}

    tiny = Tiny()
    # One concrete function alone would be renamed "serving_default"; a SavedModel keeps the signature key.
    saved = out / "saved"
    tf.saved_model.save(tiny, str(saved), signatures={
        "encode_image": tiny.encode_image.get_concrete_function(),
        "encode_text": tiny.encode_text.get_concrete_function(),
        "encode_image_dyn": tiny.encode_image_dyn.get_concrete_function(),
    })
    paths = {}
    for name, key in [("image", "encode_image"), ("text", "encode_text"), ("dyn", "encode_image_dyn")]:
        paths[f"{name}.tflite"] = out / f"{name}.tflite"
        paths[f"{name}.tflite"].write_bytes(
            tf.lite.TFLiteConverter.from_saved_model(str(saved), signature_keys=[key]).convert())
    # Several concrete functions keep their function names as signature keys.
    paths["both.tflite"] = out / "both.tflite"
    paths["both.tflite"].write_bytes(tf.lite.TFLiteConverter.from_concrete_functions(
        [tiny.encode_image.get_concrete_function(), tiny.encode_text.get_concrete_function()], tiny).convert())

    for name, fn, spec in [("image", tiny.encode_image, image_spec), ("text", tiny.encode_text, text_spec),
                           ("dyn", tiny.encode_image_dyn, dyn_spec)]:
        paths[f"{name}.onnx"] = out / f"{name}.onnx"
        tf2onnx.convert.from_function(fn, input_signature=spec, opset=17, output_path=str(paths[f"{name}.onnx"]))
    return paths


def _file(models: dict[str, Path], name: str, prefer: str) -> Path:
    return models[f"{name}.onnx" if prefer == "onnxruntime" else f"{name}.tflite"]


def _image_ref(x: np.ndarray) -> np.ndarray:
    return x @ W


def _text_ref(ids: np.ndarray) -> np.ndarray:
    return E[ids].sum(axis=1)


# ---------------------------------------------------------------------------------------------------------------
# Every path agrees with numpy


@pytest.mark.parametrize("prefer", ALL)
def test_each_backend_matches_numpy(models: dict[str, Path], prefer: str) -> None:
    _needs(prefer)
    image = open_backend(_file(models, "image", prefer), prefer=prefer)
    text = open_backend(_file(models, "text", prefer), prefer=prefer)
    assert isinstance(image, Backend)
    assert image.info.backend == prefer and image.info.accelerator == "cpu"
    # Signature names, not internal tensor names ("serving_default_pixel_values:0", "StatefulPartitionedCall:0").
    assert image.inputs == [TensorSpec("pixel_values", (1, 8), "float32")]
    assert image.outputs == [TensorSpec("image_embeds", (1, 4), "float32")]
    assert text.inputs == [TensorSpec("input_ids", (1, 5), "int32")]
    assert text.outputs == [TensorSpec("text_embeds", (1, 4), "float32")]

    got = image.run({"pixel_values": PIXELS[:1]})
    assert list(got) == ["image_embeds"] and got["image_embeds"].dtype == np.float32
    np.testing.assert_allclose(got["image_embeds"], _image_ref(PIXELS[:1]), rtol=1e-6)
    np.testing.assert_allclose(text.run({"input_ids": IDS[:1]})["text_embeds"], _text_ref(IDS[:1]), rtol=1e-6)


def test_default_order_prefers_litert_compiled_and_onnxruntime(models: dict[str, Path]) -> None:
    _needs("litert-compiled")
    info = open_backend(models["image.tflite"]).info
    assert info == BackendInfo("litert-compiled", "cpu", True, ("CPU",), "")
    _needs("onnxruntime")
    assert open_backend(models["image.onnx"]).info.backend == "onnxruntime"


@pytest.mark.parametrize("prefer", ALL)
def test_batch_of_three_through_a_batch_one_model(models: dict[str, Path], prefer: str) -> None:
    _needs(prefer)
    image = open_backend(_file(models, "image", prefer), prefer=prefer)
    text = open_backend(_file(models, "text", prefer), prefer=prefer)
    for rows in (3, 2, 1, 3):  # also back and forth, in case a backend keeps state between calls
        got = image.run({"pixel_values": PIXELS[:rows]})["image_embeds"]
        assert got.shape == (rows, 4) and got.dtype == np.float32
        np.testing.assert_allclose(got, _image_ref(PIXELS[:rows]), rtol=1e-6)
    got = text.run({"input_ids": IDS})["text_embeds"]
    assert got.shape == (3, 4) and got.dtype == np.float32
    np.testing.assert_allclose(got, _text_ref(IDS), rtol=1e-6)


@pytest.mark.parametrize("prefer", ["litert-compiled", "litert-interpreter", "onnxruntime"])
def test_dynamic_batch_is_resized_not_looped(models: dict[str, Path], prefer: str) -> None:
    _needs(prefer)
    dyn = open_backend(_file(models, "dyn", prefer), prefer=prefer)
    assert dyn.inputs == [TensorSpec("pixel_values", (-1, 8), "float32")]
    assert dyn.outputs[0].shape == (-1, 4)
    for rows in (3, 1, 2):
        np.testing.assert_allclose(dyn.run({"pixel_values": PIXELS[:rows]})["image_embeds"],
                                   _image_ref(PIXELS[:rows]), rtol=1e-6)


@pytest.mark.parametrize("prefer", ["litert-compiled", "litert-interpreter", "tensorflow-lite"])
def test_signature_is_chosen_by_name(models: dict[str, Path], prefer: str) -> None:
    _needs(prefer)
    first = open_backend(models["both.tflite"], prefer=prefer)
    assert [s.name for s in first.inputs] == ["pixel_values"]  # default: the first signature
    text = open_backend(models["both.tflite"], prefer=prefer, signature="encode_text")
    assert [s.name for s in text.inputs] == ["input_ids"]
    np.testing.assert_allclose(text.run({"input_ids": IDS})["text_embeds"], _text_ref(IDS), rtol=1e-6)
    with pytest.raises(InputError, match=r"encode_audio.*encode_image.*encode_text"):
        open_backend(models["both.tflite"], prefer=prefer, signature="encode_audio")


@pytest.mark.parametrize("prefer", ALL)
def test_threads_setting_is_accepted(models: dict[str, Path], prefer: str) -> None:
    _needs(prefer)
    for threads in (1, 2):
        backend = open_backend(_file(models, "image", prefer), prefer=prefer, threads=threads)
        np.testing.assert_allclose(backend.run({"pixel_values": PIXELS})["image_embeds"], _image_ref(PIXELS),
                                   rtol=1e-6)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InputError, match="threads"):
            open_backend(_file(models, "image", prefer), prefer=prefer, threads=bad)


# ---------------------------------------------------------------------------------------------------------------
# Accelerators


@pytest.mark.parametrize("name", ["image.tflite", "image.onnx"])
def test_gpu_without_a_gpu_is_a_backend_error(models: dict[str, Path], name: str) -> None:
    _needs("onnxruntime" if name.endswith(".onnx") else "litert-compiled")
    if GPU_PRESENT:
        pytest.skip("this machine has a GPU device")
    with pytest.raises(BackendError, match="GPU") as caught:
        open_backend(models[name], accelerator="gpu")
    assert name in str(caught.value)


@pytest.mark.parametrize("name", ["image.tflite", "image.onnx"])
def test_auto_falls_back_to_cpu_with_one_warning(
    models: dict[str, Path], name: str, caplog: pytest.LogCaptureFixture
) -> None:
    _needs("onnxruntime" if name.endswith(".onnx") else "litert-compiled")
    if GPU_PRESENT:
        pytest.skip("this machine has a GPU device")
    with caplog.at_level(logging.WARNING, logger="clipedge.runtime.backends.open"):
        backend = open_backend(models[name], accelerator="auto")
    warned = [r for r in caplog.records if r.name == "clipedge.runtime.backends.open" and r.levelno >= logging.WARNING]
    assert len(warned) == 1 and "\n" not in warned[0].getMessage()
    assert "CPU" in warned[0].getMessage()
    assert backend.info.accelerator == "cpu" and backend.info.note.startswith("GPU not used")
    np.testing.assert_allclose(backend.run({"pixel_values": PIXELS})["image_embeds"], _image_ref(PIXELS), rtol=1e-6)


def test_interpreter_gpu_needs_a_delegate_library(models: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    _needs("litert-interpreter")
    monkeypatch.delenv("CLIPEDGE_GPU_DELEGATE", raising=False)
    with pytest.raises(BackendError, match="gpu_delegate"):
        open_backend(models["image.tflite"], prefer="litert-interpreter", accelerator="gpu")
    with pytest.raises(BackendError, match="/nowhere/libgpu_delegate.so"):
        open_backend(models["image.tflite"], prefer="litert-interpreter", accelerator="gpu",
                     gpu_delegate="/nowhere/libgpu_delegate.so")
    monkeypatch.setenv("CLIPEDGE_GPU_DELEGATE", "/from/env/libgpu_delegate.so")
    with pytest.raises(BackendError, match="/from/env/libgpu_delegate.so"):
        open_backend(models["image.tflite"], prefer="litert-interpreter", accelerator="gpu")


def test_bad_arguments(models: dict[str, Path]) -> None:
    with pytest.raises(InputError, match="accelerator='tpu'"):
        open_backend(models["image.tflite"], accelerator="tpu")
    with pytest.raises(BackendError, match="prefer='onnxruntime'"):
        open_backend(models["image.tflite"], prefer="onnxruntime")
    with pytest.raises(BackendError, match="prefer='litert-compiled'"):
        open_backend(models["image.onnx"], prefer="litert-compiled")


# ---------------------------------------------------------------------------------------------------------------
# Feeds


@pytest.mark.parametrize("prefer", ["litert-compiled", "litert-interpreter", "onnxruntime"])
def test_bad_feeds_name_the_input(models: dict[str, Path], prefer: str) -> None:
    _needs(prefer)
    image = open_backend(_file(models, "image", prefer), prefer=prefer)
    text = open_backend(_file(models, "text", prefer), prefer=prefer)
    with pytest.raises(InputError, match=r"missing \['pixel_values'\]"):
        image.run({})
    with pytest.raises(InputError, match=r"unexpected \['attention_mask'\]"):
        image.run({"pixel_values": PIXELS, "attention_mask": PIXELS})
    with pytest.raises(InputError, match=r"'pixel_values': expected shape \(B, 8\), got \(1, 7\)"):
        image.run({"pixel_values": PIXELS[:1, :7]})
    with pytest.raises(InputError, match=r"'pixel_values': expected shape \(B, 8\), got \(8,\)"):
        image.run({"pixel_values": PIXELS[0]})
    with pytest.raises(InputError, match="'pixel_values': empty batch"):
        image.run({"pixel_values": PIXELS[:0]})
    with pytest.raises(InputError, match="'input_ids': expected dtype int32, got float32"):
        text.run({"input_ids": IDS.astype(np.float32)})
    with pytest.raises(InputError, match="'pixel_values': expected dtype float32, got uint8"):
        image.run({"pixel_values": np.zeros((1, 8), np.uint8)})
    with pytest.raises(InputError, match="'input_ids': int64 values .* do not fit int32"):
        text.run({"input_ids": IDS.astype(np.int64) + 2**40})
    with pytest.raises(InputError, match="'pixel_values': values overflow float32"):
        image.run({"pixel_values": np.full((1, 8), 1e300)})
    with pytest.raises(InputError, match="feeds must be a dict"):
        image.run([PIXELS])


@pytest.mark.parametrize("prefer", ["litert-compiled", "litert-interpreter", "onnxruntime"])
def test_numpy_default_dtypes_are_cast_safely(models: dict[str, Path], prefer: str) -> None:
    _needs(prefer)
    image = open_backend(_file(models, "image", prefer), prefer=prefer)
    text = open_backend(_file(models, "text", prefer), prefer=prefer)
    got = image.run({"pixel_values": PIXELS.astype(np.float64)})["image_embeds"]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, _image_ref(PIXELS), rtol=1e-6)
    got = text.run({"input_ids": IDS.tolist()})["text_embeds"]  # python ints: int64
    np.testing.assert_allclose(got, _text_ref(IDS), rtol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# Files


def test_missing_and_damaged_files(models: dict[str, Path], tmp_path: Path) -> None:
    missing = tmp_path / "nope.tflite"
    with pytest.raises(BackendError, match=f"not found: {missing}"):
        open_backend(missing)
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"this is not a flatbuffer at all")
    with pytest.raises(BackendError, match=f"{garbage} is not a TFLite model"):
        open_backend(garbage)
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(models["image.tflite"].read_bytes()[:600])  # right header, broken body
    for prefer in ("litert-compiled", "litert-interpreter"):
        _needs(prefer)
        # refused from the probe's child: CompiledModel itself would read it out of bounds (issue #17)
        with pytest.raises((BackendError, BundleError), match=str(truncated)) as caught:
            open_backend(truncated, prefer=prefer)
        assert "flatbuffer" in str(caught.value).lower()  # the interpreter's own words, not lost
    _needs("onnxruntime")
    garbage_onnx = tmp_path / "garbage.onnx"
    garbage_onnx.write_bytes(b"\x00\x01 not a protobuf")
    with pytest.raises(BackendError, match=str(garbage_onnx)):
        open_backend(garbage_onnx)
    with pytest.raises(BackendError, match=r"unknown model format '\.pt'"):
        open_backend(tmp_path / "model.pt")


def test_runtime_import_and_tflite_run_do_not_load_tensorflow(models: dict[str, Path]) -> None:
    _needs("litert-compiled")
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        import clipedge.runtime.backends.open as backends
        assert "tensorflow" not in sys.modules, "import loaded tensorflow"
        assert "ai_edge_litert" not in sys.modules and "onnxruntime" not in sys.modules, "import loaded an interpreter"
        out = backends.open_backend({str(models["image.tflite"])!r}).run({{"pixel_values": np.ones((2, 8), "f4")}})
        assert out["image_embeds"].shape == (2, 4)
        assert "tensorflow" not in sys.modules, "running a .tflite loaded tensorflow"
        assert "onnxruntime" not in sys.modules, "running a .tflite loaded onnxruntime"
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
