"""clipedge.runtime.backends.litert_gpu without a GPU: reading LiteRT's placement log, keeping native prints off stdout,
the GPU precision setting. (The GPU itself: tests/export/test_gpu.py.)"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from clipedge.runtime.backends.litert_gpu import GPU_PRECISION_ENV, gpu_precision, parse_placement
from clipedge.runtime.errors import InputError

# LiteRT 2.3 on Mesa 25 lavapipe, opening the demo's image gpu variant as exported before the class-token fix.
SPLIT_LOG = """\
INFO: [delegate_webgpu.cc:342] Create WebGPU environment (use_low_power=0, enable_host_mapped_pointer=1)
I0000 00:00:1795995270.793945   18782 environment.cc:532] Selected adapter: llvmpipe (LLVM 15.0.6, 256 bits), \
arch=software, vendor=mesa, backend=Vulkan, adapterType=CPU / Software
ERROR: Following operations are not supported by GPU delegate:
PAD: Expected 1 runtime input tensor(s), but node has 0 runtime input(s).
174 operations will run on the GPU, and the remaining 1 operations will run on the CPU.
I0000 00:00:1795995270.821797   18782 delegate_kernel.cc:984] Initializing WebGPU-based API from graph.
"""


def test_a_split_model_is_read_from_the_log():
    placement = parse_placement(SPLIT_LOG)
    assert placement.adapter == "llvmpipe (LLVM 15.0.6, 256 bits)" and placement.api == "Vulkan"
    assert placement.software and placement.label == "llvmpipe (LLVM 15.0.6, 256 bits), software"
    assert (placement.gpu_ops, placement.cpu_ops) == (174, 1)
    assert placement.unsupported == ("PAD: Expected 1 runtime input tensor(s), but node has 0 runtime input(s).",)


def test_a_whole_model_and_a_real_gpu():
    log = ("I0000 00:00:1.0 1 environment.cc:532] Selected adapter: Mali-G715, arch=valhall, vendor=arm, "
           "backend=Vulkan, adapterType=Integrated GPU\n")
    placement = parse_placement(log)
    assert (placement.gpu_ops, placement.cpu_ops, placement.unsupported) == (None, 0, ())
    assert not placement.software and placement.label == "Mali-G715, Integrated GPU, Vulkan"
    assert parse_placement("").label == "GPU (adapter not reported)"


def test_gpu_precision_setting(monkeypatch):
    monkeypatch.delenv(GPU_PRECISION_ENV, raising=False)
    assert gpu_precision() == "fp32"  # the fp32 files' floor needs it; LiteRT's own default is fp16
    monkeypatch.setenv(GPU_PRECISION_ENV, "FP16")
    assert gpu_precision() == "fp16"
    monkeypatch.setenv(GPU_PRECISION_ENV, "int8")
    with pytest.raises(InputError, match=GPU_PRECISION_ENV):
        gpu_precision()


def test_native_prints_go_to_stderr_not_stdout():
    """LiteRT printed "INFO: Failed to load OpenCL library" on stdout while setting up its GPU (from C, buffered when
    stdout is a pipe): inside native_output it lands on stderr and in the captured text."""
    code = textwrap.dedent("""
        import ctypes, sys
        from clipedge.runtime.backends.litert_gpu import native_output
        print("python before", flush=True)
        with native_output() as captured:
            ctypes.CDLL(None).printf(b"INFO: from C on stdout\\n")
        print("python after")
        sys.stderr.write("captured=" + repr(captured.text) + "\\n")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "python before\npython after\n"
    assert "INFO: from C on stdout" in done.stderr and "captured='INFO: from C on stdout\\n'" in done.stderr


def test_the_export_check_survives_a_file_that_kills_litert(small_bundle, tmp_path):
    """A file LiteRT dies on (here a truncated one) is the check's verdict, not the export's end; nothing is left in
    the temporary directory."""
    import numpy as np

    from clipedge.runtime.backends.gpu_check import gpu_check

    data = (small_bundle / "image_fp32.tflite").read_bytes()
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(data[: len(data) // 2])
    result = gpu_check(broken, {"pixel_values": np.zeros((1, 64, 64, 3), np.float32)}, "encode_image", timeout=300)
    assert result["status"] == "failed" and result["reason"], result
