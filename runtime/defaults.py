"""Which precision a bundle runs when none is asked for, and the warning when the one asked for was flagged.

Why not simply the first file listed (fp32, as clipedge did): the docs recommend dynamic-int8 for CPUs and a Pi, so
every command needed `--precision dynamic-int8`, and a user who forgot it ran a model three times slower. The export
knows better: it has just run every file on held-out samples (fidelity flags) and timed it at batch 1. It records in
the manifest, per format and accelerator, the fastest file pair that passed its precision's fidelity floor
(`choose_defaults`); among pairs tied within the timing noise (clipedge.runtime.metrics.latencies_tied) the smallest,
so a loaded exporting machine does not flip the choice. `clipedge export --default-precision P` overrides it;
`load(precision=...)` and `--precision` still pick any file. A bundle written before this record runs its first file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from clipedge.runtime.metrics import latencies_tied
from clipedge.runtime.precisions import FIDELITY_FLAGS

if TYPE_CHECKING:
    from clipedge.runtime.manifest import Artifact, Manifest

__all__ = ["LATENCY_KEY", "RULE", "choose_defaults", "default_precision", "fastest_faithful", "warn_if_flagged"]

LATENCY_KEY = "latency_batch_1_ms"  # an artifact's `extra` entry: {"median", "low", "high", "runs"} (bench.Latency)
RULE = ("fastest image+text pair at batch 1 on the exporting machine's CPU among files with no fidelity flag; "
        "pairs tied within the timing noise go to the smallest")
PAIR_TOWERS = ("image", "text")

log = logging.getLogger("clipedge")


@dataclass(frozen=True)
class _Pair:
    """One precision of one format: its towers' summed latency and size."""

    precision: str
    median: float
    low: float
    high: float
    bytes: int


def _pairs(artifacts: list[Artifact], fmt: str) -> list[_Pair]:
    """The precisions of `fmt` whose every image/text file is unflagged and timed, summed over the towers."""
    by_precision: dict[str, list[Artifact]] = {}
    for artifact in artifacts:
        if artifact.format == fmt and artifact.variant == "default" and artifact.tower in PAIR_TOWERS:
            by_precision.setdefault(artifact.precision, []).append(artifact)
    pairs = []
    for name, files in by_precision.items():
        timed = [a.extra.get(LATENCY_KEY) for a in files]
        if any(flag in FIDELITY_FLAGS for a in files for flag in a.flags) or not all(timed):
            continue
        pairs.append(_Pair(name, sum(t["median"] for t in timed), sum(t["low"] for t in timed),
                           sum(t["high"] for t in timed), sum(a.bytes for a in files)))
    return pairs


def fastest_faithful(artifacts: list[Artifact], fmt: str) -> tuple[str | None, list[str]]:
    """(the precision to run by default, the precisions tied with the fastest): None when no pair qualifies."""
    pairs = _pairs(artifacts, fmt)
    if not pairs:
        return None, []
    fastest = min(pairs, key=lambda p: p.median)
    tied = [p for p in pairs if latencies_tied(p.median, (p.low, p.high), fastest.median, (fastest.low, fastest.high))]
    chosen = min(tied, key=lambda p: (p.bytes, p.median))
    return chosen.precision, sorted(p.precision for p in tied if p is not chosen)


def choose_defaults(artifacts: list[Artifact], override: str | None = None) -> dict[str, Any]:
    """The manifest's `defaults` section: {"by_format": {fmt: {"cpu": precision, "gpu"?: precision}}, "rule",
    "tied"?}. `override` (export's --default-precision) wins wherever the format has that precision."""
    by_format: dict[str, dict[str, str]] = {}
    tied: dict[str, list[str]] = {}
    for fmt in dict.fromkeys(a.format for a in artifacts):
        listed = [a.precision for a in artifacts if a.format == fmt and a.variant == "default"
                  and a.tower in PAIR_TOWERS]
        if not listed:
            continue
        if override is not None and override in listed:
            cpu, ties = override, []
        else:
            cpu, ties = fastest_faithful(artifacts, fmt)
        by_format[fmt] = {"cpu": cpu or listed[0]}
        if ties:
            tied[fmt] = ties
        gpu = [a.precision for a in artifacts if a.format == fmt and a.variant == "gpu" and a.tower in PAIR_TOWERS]
        if gpu:
            by_format[fmt]["gpu"] = "fp32" if "fp32" in gpu else gpu[0]
    out: dict[str, Any] = {"by_format": by_format,
                           "rule": f"--default-precision {override}" if override is not None else RULE}
    if tied:
        out["tied"] = tied
    return out


def default_precision(manifest: Manifest, fmt: str, variant: str = "default") -> str | None:
    """The precision the bundle runs for `fmt` when none is asked for; None (the first listed) for a bundle written
    before export recorded one."""
    entry = (manifest.data.get("defaults") or {}).get("by_format", {}).get(fmt) or {}
    return entry.get("gpu" if variant == "gpu" else "cpu")


_warned: set[str] = set()


def warn_if_flagged(manifest: Manifest, artifacts: list[Artifact]) -> None:
    """Once per file and process: a file export's verification flagged is loaded (it runs; its results may be off)."""
    for artifact in artifacts:
        flags = [flag for flag in artifact.flags if flag in FIDELITY_FLAGS]
        key = str(manifest.directory / artifact.file)
        if flags and key not in _warned:
            _warned.add(key)
            cosine = artifact.fidelity.get("cosine_min")
            log.warning("%s was flagged %s by export's verification (min cosine %s to the float model): its "
                        "results may be off; `clipedge info %s` lists the others", artifact.file, ", ".join(flags),
                        "?" if cosine is None else f"{cosine:.4f}", manifest.directory)
