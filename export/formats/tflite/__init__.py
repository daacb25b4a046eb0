"""TFLite: the converter (`convert`), the one flatbuffer reader and writer (`flatbuffer`), full int8 on XNNPACK's
kernels (`int8_kernels`), ai-edge-quantizer's recipes (`edge_quantizer`, `int16x8`) and MediaPipe's metadata
(`mediapipe_metadata`)."""
