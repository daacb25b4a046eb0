"""Everything that writes or rewrites a .tflite or .onnx file: each format's converter and quantization recipes
(`tflite/`, `onnx/`), the int4 recipe both share (`int4`), and the per-layer mixed precision search (`auto/`). A new
precision is a row in `clipedge.runtime.precisions` plus its recipe here (docs/architecture.md)."""
