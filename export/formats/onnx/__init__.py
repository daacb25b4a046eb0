"""ONNX: tf2onnx conversion and ONNX Runtime's quantizers (`convert`), the fp32 graph rewrites before them
(`optimize`)."""
