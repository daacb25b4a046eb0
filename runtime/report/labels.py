"""Point labels that do not cover each other in `clipedge report`'s plots.

A bundle's precisions cluster: fp32 and fp16 pairs share an accuracy, dynamic-int8 and int8 a size, and the gpu
variant sits on fp32's point. A fixed offset put their labels on top of each other. Here each label takes the first
of a list of positions around its point whose box overlaps no label placed before it, no marker and not the axes'
edge, measured with the figure's own renderer after the layout is settled; when every near position is taken it goes
farther out with a leader line to its point.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["place_labels", "label_text_boxes"]

# (dx, dy) in points from the point, horizontal and vertical alignment of the text there
_NEAR = [(5, 3, "left", "bottom"), (5, -3, "left", "top"), (-5, 3, "right", "bottom"), (-5, -3, "right", "top"),
         (0, 7, "center", "bottom"), (0, -7, "center", "top"), (8, 0, "left", "center"), (-8, 0, "right", "center")]
_FAR = [(dx * scale, dy * scale, ha, va) for scale in (2.5, 4.0, 6.0) for dx, dy, ha, va in _NEAR]
MARKER_RADIUS_PT = 4.5
PAD_PX = 1.0


def _box(x: float, y: float, width: float, height: float, ha: str, va: str) -> tuple[float, float, float, float]:
    x0 = x - {"left": 0.0, "center": width / 2, "right": width}[ha]
    y0 = y - {"bottom": 0.0, "center": height / 2, "top": height}[va]
    return x0, y0, x0 + width, y0 + height


def _overlap(a: Sequence[float], b: Sequence[float]) -> float:
    """Shared area of two (x0, y0, x1, y1) boxes, padded a little so touching counts."""
    dx = min(a[2], b[2]) - max(a[0], b[0]) + PAD_PX
    dy = min(a[3], b[3]) - max(a[1], b[1]) + PAD_PX
    return dx * dy if dx > 0 and dy > 0 else 0.0


def _outside(box: Sequence[float], frame: Any) -> float:
    """How much of a box lies beyond the axes (area), so positions inside the plot win."""
    inner = (max(box[0], frame.x0), max(box[1], frame.y0), min(box[2], frame.x1), min(box[3], frame.y1))
    area = (box[2] - box[0]) * (box[3] - box[1])
    kept = max(0.0, inner[2] - inner[0]) * max(0.0, inner[3] - inner[1])
    return area - kept


def place_labels(fig: Any, groups: Sequence[tuple[Any, Sequence[tuple[float, float, str]]]],
                 fontsize: float = 8) -> list[Any]:
    """Annotate each axis's (x, y, text) points without overlaps; returns the annotations. Call after everything
    else is drawn on the figure: positions are measured on it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.font_manager import FontProperties

    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # settles the constrained layout, so data -> pixel transforms are final
    renderer = canvas.get_renderer()
    font = FontProperties(size=fontsize)
    px_per_pt = fig.dpi / 72.0
    radius = MARKER_RADIUS_PT * px_per_pt
    annotations = []
    for axis, labels in groups:
        frame = axis.get_window_extent(renderer)
        anchors = [tuple(axis.transData.transform((x, y))) for x, y, _ in labels]
        taken = [(px - radius, py - radius, px + radius, py + radius) for px, py in anchors]
        # crowded points first: they have the fewest free positions
        order = sorted(range(len(labels)), key=lambda i: -sum(
            abs(anchors[i][0] - a[0]) + abs(anchors[i][1] - a[1]) < 40 * px_per_pt for a in anchors))
        for i in order:
            x, y, text = labels[i]
            width, height, _ = renderer.get_text_width_height_descent(text, font, ismath=False)
            best, best_cost = None, None
            for dx, dy, ha, va in _NEAR + _FAR:
                box = _box(anchors[i][0] + dx * px_per_pt, anchors[i][1] + dy * px_per_pt, width, height, ha, va)
                cost = sum(_overlap(box, other) for other in taken) + _outside(box, frame)
                if best_cost is None or cost < best_cost:
                    best, best_cost = (dx, dy, ha, va, box), cost
                if cost == 0:
                    break
            dx, dy, ha, va, box = best
            far = (dx, dy, ha, va) not in _NEAR
            annotation = axis.annotate(
                text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize, ha=ha, va=va,
                arrowprops={"arrowstyle": "-", "color": "grey", "linewidth": 0.6, "shrinkA": 0,
                            "shrinkB": 3} if far else None)
            annotation.set_in_layout(False)  # labels follow the layout; they must not move it
            taken.append(box)
            annotations.append(annotation)
    return annotations


def label_text_boxes(fig: Any, annotations: Sequence[Any]) -> list[tuple[float, float, float, float]]:
    """The drawn text boxes of `annotations` (pixels), without their leader lines: what a test checks for
    overlaps."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    return [tuple(Text.get_window_extent(a, renderer).extents) for a in annotations]
