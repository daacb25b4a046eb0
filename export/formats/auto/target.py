"""What `auto` must keep: a min cosine to the float model and/or a bounded zero-shot top-1 loss. No heavy imports:
the export settings check a target before any slow work."""

from __future__ import annotations

from dataclasses import dataclass

from clipedge.runtime.errors import ExportError

__all__ = ["DEFAULT_TARGET_COSINE", "Target"]

DEFAULT_TARGET_COSINE = 0.995  # auto's target when neither a cosine nor a top-1 drop is given


@dataclass(frozen=True)
class Target:
    """On the search samples: a min cosine to the float model, and/or at most `top1_drop` percentage points of
    zero-shot top-1 lost on a labelled folder (both, when both are given)."""

    cosine_min: float | None = DEFAULT_TARGET_COSINE
    top1_drop: float | None = None

    def __post_init__(self) -> None:
        if self.cosine_min is None and self.top1_drop is None:
            raise ExportError("auto needs a target: a min cosine, a top-1 drop, or both")
        if self.cosine_min is not None and not 0.0 < self.cosine_min <= 1.0:
            raise ExportError(f"target cosine must be in (0, 1], got {self.cosine_min}")
        if self.top1_drop is not None and not 0.0 <= self.top1_drop <= 100.0:
            raise ExportError(f"target top-1 drop is in percentage points, 0..100; got {self.top1_drop}")

    def meets(self, candidate) -> bool:
        """`candidate` has `cosine_min` and `top1_drop` (a clipedge.export.formats.auto.search.Candidate)."""
        if self.cosine_min is not None and candidate.cosine_min < self.cosine_min:
            return False
        return self.top1_drop is None or (candidate.top1_drop is not None
                                          and candidate.top1_drop <= self.top1_drop + 1e-9)

    def describe(self) -> str:
        parts = [f"min cosine >= {self.cosine_min}" if self.cosine_min is not None else "",
                 f"top-1 drop <= {self.top1_drop} points" if self.top1_drop is not None else ""]
        return " and ".join(p for p in parts if p)
