"""Equalisation before quantization: exact reparametrisations of the float model that move activation outliers into
the weights (SmoothQuant / RepQ-ViT) and balance query against key, chosen on the calibration samples and folded
into every exported file. plan.py decides, rescale.py applies."""

from clipedge.export.equalize.plan import plan_equalization
from clipedge.export.equalize.rescale import KINDS, Rescale, apply_rescales

__all__ = ["KINDS", "Rescale", "apply_rescales", "plan_equalization"]
