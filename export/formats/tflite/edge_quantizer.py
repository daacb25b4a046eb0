"""ai-edge-quantizer glue shared by the precisions it makes from a float .tflite (int16x8, int4) and by `auto`:
calibration feeds in its per-sample form and silencing its console output. A leaf: it imports nothing of clipedge's
export modules, so each of them may import it."""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator, Mapping

import numpy as np

from clipedge.runtime.errors import ExportError

__all__ = ["calibrate_min_max", "per_sample_feeds", "quiet_quantizer"]


def per_sample_feeds(calibration: Mapping[str, np.ndarray] | None,
                     precision: str) -> list[dict[str, np.ndarray]]:
    """{input: [N, ...]} -> N feeds of batch 1, the form the TF converter and ai-edge-quantizer calibrate on."""
    if not calibration:
        raise ExportError(f"precision {precision} needs calibration samples")
    count = len(next(iter(calibration.values())))
    return [{name: values[i : i + 1] for name, values in calibration.items()} for i in range(count)]


@contextlib.contextmanager
def quiet_quantizer() -> Iterator[None]:
    noise = io.StringIO()  # ai-edge-quantizer prints sizes and tqdm bars; our own progress bar covers this step
    with contextlib.redirect_stdout(noise), contextlib.redirect_stderr(noise), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # its calibrator's "preserve_all_tensors is for debugging"
        yield


def calibrate_min_max(float_model: bytes, signature: str, feeds: list[dict[str, np.ndarray]],
                      recipe: list[dict]) -> dict:
    """ai-edge-quantizer calibration with each tensor's range the min/max over every sample (its Quantizer.calibrate
    has no such option: it keeps a moving average of each sample's min and max, smoothing 0.95, so later samples
    beyond it saturate; clipedge.export.formats.tflite.int16x8 has the measurements)."""
    from ai_edge_quantizer import calibrator, recipe_manager
    from ai_edge_quantizer.utils import qsv_utils

    manager = recipe_manager.RecipeManager()
    manager.load_quantization_recipe(recipe)
    calib = calibrator.Calibrator(float_model, num_threads=2, qsv_update_func=qsv_utils.min_max_update)
    calib.calibrate({signature: feeds}, manager)
    return calib.get_model_qsvs()
