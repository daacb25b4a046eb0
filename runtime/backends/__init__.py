"""The interpreters: `open` picks and opens one (LiteRT or ONNX Runtime, CPU or GPU), `base` is their common
contract, `litert` / `onnxruntime` the two, `litert_gpu` LiteRT's GPU accelerator, `probe` / `probe_child` open every
model file first in a child process, `gpu_check` the export's check of a gpu file in a process without TensorFlow."""
