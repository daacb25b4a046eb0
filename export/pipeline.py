"""`export_bundle`: checkpoint -> verified bundle, the product's main job (also `clipedge export`).

The steps: plan the jobs from the settings; check what can be checked before slow work; open the bundle's temporary
directory; load the model and prepare the shared samples and float reference (clipedge.export.build); convert each
tower's fp32 ONNX first (the memory peak); build, write and verify every job; write the manifest and rename the
bundle into place. A failure anywhere leaves no bundle and an existing one untouched (clipedge.export.bundle).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipedge.export.bundle import BundleWriter
from clipedge.export.plan import plan_jobs
from clipedge.export.settings import ExportSettings
from clipedge.runtime.datasets import LabelledImages, read_eval_folder, shipped_data_dir
from clipedge.runtime.errors import ExportError, InputError

__all__ = ["ExportResult", "export_bundle", "default_checkpoint"]

log = logging.getLogger(__name__)


@dataclass
class ExportResult:
    bundle: Path
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per artifact: the final table
    peak_rss: dict[str, int] = field(default_factory=dict)  # MiB: this process, the largest conversion process

    def table(self) -> str:
        header = f"{'artifact':<34} {'size':>10} {'cos mean':>9} {'cos min':>9} {'time':>7}  flags"
        lines = [header, "-" * len(header)]
        for r in self.rows:
            lines.append(f"{r['file']:<34} {r['bytes'] / 1e6:>8.2f}MB {r['cosine_mean']:>9.6f} "
                         f"{r['cosine_min']:>9.6f} {r['seconds']:>6.1f}s  {','.join(r['flags']) or '-'}")
        if self.peak_rss:
            lines.append("peak memory (RSS): " + ", ".join(f"{k.replace('_', ' ')} {v / 1024:.1f} GiB"
                                                        for k, v in self.peak_rss.items()))
        return "\n".join(lines)


def default_checkpoint() -> Path:
    """The demo CLIP shipped inside clipedge.export (trained by `clipedge demo train`)."""
    from importlib import resources

    path = Path(str(resources.files("clipedge.export") / "demo_checkpoint"))
    if not (path / "config.json").is_file():
        raise ExportError("no --checkpoint given and the shipped demo checkpoint is missing from this install")
    return path


def export_bundle(settings: ExportSettings | str | Path, *, progress: bool = True, **fields: Any) -> ExportResult:
    """Convert, verify against the float TF model on held-out samples, and write the bundle atomically.

    `export_bundle(ExportSettings(...))`, or `export_bundle(out, **fields)` with ExportSettings' fields as keywords.
    Every artifact is judged by the runtime's own runner; one below its precision's floor is kept and flagged."""
    from tqdm.auto import tqdm

    from clipedge.export.build import ExportRun

    if not isinstance(settings, ExportSettings):
        settings = ExportSettings(out=settings, **fields)
    elif fields:
        settings = settings.replace(**fields)
    jobs = plan_jobs(settings)
    labelled = _labelled_folder(settings.eval_dir) if settings.has_auto and settings.target_top1_drop is not None \
        else None
    if settings.mobile:  # the metadata schema comes with the `mobile` extra: say so before any slow work
        from clipedge.export.mobile import metadata_schema

        metadata_schema()
    with BundleWriter(settings.out, force=settings.force) as writer:  # refuses an existing bundle before slow work
        run = ExportRun.start(settings, writer, settings.checkpoint or default_checkpoint(), labelled)
        bar = tqdm(jobs, desc="export", unit="model", disable=not progress)
        run.convert_onnx_fp32_first(jobs, bar.set_postfix_str)
        result = ExportResult(settings.out)
        for job in bar:
            bar.set_postfix_str(job.file)
            artifact = run.build(job, bar.set_postfix_str)
            writer.add_artifact(artifact)
            result.rows.append({"file": job.file, "bytes": artifact.bytes, **artifact.fidelity,
                                "seconds": artifact.fidelity["export_seconds"], "flags": artifact.flags})
        fields = run.manifest_fields()
        result.peak_rss = fields["export"]["peak_rss_mib"]
        shutil.rmtree(writer.path(".work"))
        result.bundle = writer.finish(fields)
    return result


def _labelled_folder(eval_dir: Path | None) -> LabelledImages:
    """auto's labelled folder for a top-1 target: the given one, else the shipped calibration_data/eval."""
    if eval_dir is None:
        shipped = shipped_data_dir()
        if shipped is None or not (shipped / "eval").is_dir():
            raise ExportError("--target-top1-drop needs a labelled folder: pass --eval DIR (one subfolder of images "
                              "per class, named after the label)")
        eval_dir = shipped / "eval"
    try:
        return read_eval_folder(eval_dir)
    except InputError as err:
        raise ExportError(str(err)) from err
