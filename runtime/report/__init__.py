"""`clipedge report`: every model of a bundle measured (size, speed, memory, fidelity, accuracy) through the runtime,
the conclusions drawn (`analysis`), the PyTorch baseline (`baseline`), the md and PNG (`render`, `labels`). Needs no
TensorFlow: it runs where the runtime runs, a Pi included, so latencies are measured on the device itself."""
