"""`clipedge report --precisions ... --formats ...`: which of a bundle's models a report measures.

The names are spelled, listed and checked as `clipedge export` checks its own (same comma lists, same messages), but
from the runtime's tables (`runtime.precisions`, `runtime.manifest.FORMATS`): the runtime never imports the exporter.

fp32 stays measured when --precisions leaves it out, for the formats and towers asked: every fidelity (cosine vs
fp32), the "within 1 point of fp32" rule and the cross-precision rows are measured against it, and a report without
them could not say whether an int8 file is usable. Such a file is a reference only: report.md says so, and it is
never recommended (`selection.reference_files`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from clipedge.runtime.errors import InputError
from clipedge.runtime.manifest import FORMATS, Artifact, Manifest
from clipedge.runtime.precisions import available

__all__ = ["Selection", "check_names", "names", "select_artifacts"]

REFERENCE = "fp32"


@dataclass(frozen=True)
class Selection:
    artifacts: list[Artifact]  # what to measure, in manifest order, references included
    record: dict[str, Any] | None  # report.json's "selection"; None when everything is measured


def names(value: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """'a, b' or ['a', 'b'] -> ('a', 'b') (as export's comma lists read; repeats dropped); None stays None: all."""
    if value is None:
        return None
    parts = value.split(",") if isinstance(value, str) else value
    return tuple(dict.fromkeys(part.strip() for part in parts if part.strip()))


def check_names(precisions: str | Sequence[str] | None, formats: str | Sequence[str] | None) -> None:
    """Export's checks and messages: an unknown format, an empty list, a precision no asked format has. No bundle
    needed: a misspelt name fails first, as in export."""
    precisions, formats = names(precisions), names(formats)
    for fmt in formats or ():
        if fmt not in FORMATS:
            raise InputError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    if formats == () or precisions == ():
        raise InputError("formats and precisions must each name at least one")
    asked = formats or FORMATS
    for name in precisions or ():
        if not any(name in available(fmt) for fmt in asked):
            raise InputError(f"precision {name!r} is not available for {', '.join(asked)}; available: "
                             + "; ".join(f"{f}: {', '.join(available(f))}" for f in asked))


def _check_bundle(manifest: Manifest, precisions: tuple[str, ...] | None, formats: tuple[str, ...] | None) -> None:
    """A name the bundle lacks: one line naming what it has."""
    has = {"format": list(dict.fromkeys(a.format for a in manifest.artifacts)),
           "precision": list(dict.fromkeys(a.precision for a in manifest.artifacts))}
    for what, asked in (("format", formats), ("precision", precisions)):
        missing = [name for name in asked or () if name not in has[what]]
        if missing:
            raise InputError(f"{manifest.directory} has no {' or '.join(missing)} models; its {what}s: "
                             f"{', '.join(has[what])}")


def select_artifacts(manifest: Manifest, precisions: str | Sequence[str] | None = None,
                     formats: str | Sequence[str] | None = None) -> Selection:
    """The bundle's models of the asked precisions and formats (None: all), plus the fp32 reference of each asked
    format and tower when --precisions leaves fp32 out. Bad names fail before anything is measured."""
    wanted_precisions, wanted_formats = names(precisions), names(formats)
    if wanted_precisions is None and wanted_formats is None:
        return Selection(list(manifest.artifacts), None)
    check_names(wanted_precisions, wanted_formats)
    _check_bundle(manifest, wanted_precisions, wanted_formats)
    chosen = [a for a in manifest.artifacts if (wanted_formats is None or a.format in wanted_formats)
              and (wanted_precisions is None or a.precision in wanted_precisions)]
    if not chosen:
        have = ", ".join(dict.fromkeys(f"{a.format} {a.precision}" for a in manifest.artifacts))
        raise InputError(f"{manifest.directory} has no {' or '.join(wanted_precisions or ())} models in "
                         f"{' or '.join(wanted_formats or ())}; it has: {have}")
    needed = {(a.tower, a.format) for a in chosen}
    references = [a for a in manifest.artifacts if wanted_precisions is not None and REFERENCE not in wanted_precisions
                  and a.precision == REFERENCE and a.variant == "default" and (a.tower, a.format) in needed]
    keep = {a.file for a in chosen} | {a.file for a in references}
    record = {"precisions": list(wanted_precisions) if wanted_precisions is not None else None,
              "formats": list(wanted_formats) if wanted_formats is not None else None,
              "reference_precisions": [REFERENCE] if references else [],
              "reference_files": [a.file for a in references]}
    return Selection([a for a in manifest.artifacts if a.file in keep], record)
