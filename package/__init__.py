"""clipedge: CLIP from TensorFlow to quantized TFLite and ONNX for phones, a Raspberry Pi and the browser.

`clipedge.runtime` runs bundles (numpy, Pillow and one interpreter); `clipedge.export` writes them (TensorFlow, the
`export` extra). This top package holds only the version and `python -m clipedge`, so importing it costs nothing.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("clipedge")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
