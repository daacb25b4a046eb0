"""`export_bundle`: checkpoint -> verified bundle, the product's main job (also `clipedge export`).

The steps: plan the jobs from the settings; check what can be checked before slow work; open the bundle's temporary
directory; load the model and prepare the shared samples and float reference (clipedge.export.pipeline.build); convert
each tower's fp32 ONNX first (the memory peak); build, write and verify every job; write the manifest and rename the
bundle into place. A failure anywhere leaves no bundle and an existing one untouched
(clipedge.export.pipeline.bundle_writer), with one exception: when several formats were asked for and one of them cannot
be produced for this checkpoint (a converter or its runtime refuses the graph), that format's files are dropped, the
others are written, and the table, the log and the manifest (`export.skipped_formats`) say why. A user who asked for
that format alone gets the error.

The export leaves nothing in the temp directory: TensorFlow's autograph writes a `__autograph_generated_file*.py` for
every function it converts and deletes them only when the interpreter exits (never after a SIGKILL, a crash, or in a
notebook that lives on), and importing torch's dynamo (transformers does, for the preprocessing check) creates
`torchinductor_<user>/`. So the export, its conversion processes and every library in them work in a private
temporary directory (`private_tempdir`), removed when the export ends, fails or is stopped (SIGTERM and Ctrl-C unwind
through it); one left by a killed export is removed by the next.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipedge.export.pipeline.bundle_writer import BundleWriter, pid_alive
from clipedge.export.pipeline.plan import plan_jobs
from clipedge.export.settings import ExportSettings
from clipedge.runtime.datasets import LabelledImages, read_eval_folder, shipped_data_dir
from clipedge.runtime.defaults import choose_defaults
from clipedge.runtime.errors import BackendError, ExportError, InputError
from clipedge.runtime.logs import native_logs_hidden

__all__ = ["ExportResult", "export_bundle", "default_checkpoint", "private_tempdir"]

log = logging.getLogger(__name__)

TEMP_PREFIX = "clipedge-export-"
_private_dir: Path | None = None  # the private temp directory of the export running in this process


@dataclass
class ExportResult:
    bundle: Path
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per artifact: the final table
    peak_rss: dict[str, int] = field(default_factory=dict)  # MiB: this process, the largest conversion process
    skipped_formats: dict[str, str] = field(default_factory=dict)  # format -> why it could not be produced

    def table(self) -> str:
        header = f"{'artifact':<34} {'size':>10} {'cos mean':>9} {'cos min':>9} {'time':>7}  flags"
        lines = [header, "-" * len(header)]
        for r in self.rows:
            lines.append(f"{r['file']:<34} {r['bytes'] / 1e6:>8.2f}MB {r['cosine_mean']:>9.6f} "
                         f"{r['cosine_min']:>9.6f} {r['seconds']:>6.1f}s  {','.join(r['flags']) or '-'}")
        for fmt, reason in self.skipped_formats.items():
            lines.append(f"no {fmt} files: {reason}")
        if self.peak_rss:
            lines.append("peak memory (RSS): " + ", ".join(f"{k.replace('_', ' ')} {v / 1024:.1f} GiB"
                                                        for k, v in self.peak_rss.items()))
        return "\n".join(lines)


def default_checkpoint() -> Path:
    """The demo CLIP shipped inside clipedge.export (trained by `clipedge demo train`)."""
    from importlib import resources

    path = Path(str(resources.files("clipedge.export.demo") / "demo_checkpoint"))
    if not (path / "config.json").is_file():
        raise ExportError("no --checkpoint given and the shipped demo checkpoint is missing from this install")
    return path


@contextlib.contextmanager
def private_tempdir() -> Iterator[Path]:
    """A temporary directory of this export's own, inside the user's: `tempfile.tempdir` and $TMPDIR point at it
    (Python's tempfile, autograph and torch read them when they write; child processes inherit $TMPDIR) until the
    block ends, however it ends; then it is removed with whatever the libraries left in it. Re-entrant: a nested
    export shares the outer one's."""
    global _private_dir
    if _private_dir is not None:
        yield _private_dir
        return
    base = Path(tempfile.gettempdir())
    _remove_stale_tempdirs(base)
    # The pid in the name lets a later export tell a killed export's directory from a running one's.
    path = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", dir=base))
    saved_environ, saved_tempdir = dict(os.environ), tempfile.tempdir
    os.environ["TMPDIR"] = tempfile.tempdir = str(path)
    _private_dir = path
    try:
        yield path
    finally:
        _private_dir = None
        tempfile.tempdir = saved_tempdir
        _restore_environ(saved_environ, str(path))
        shutil.rmtree(path, ignore_errors=True)


def _restore_environ(saved: dict[str, str], private: str) -> None:
    """$TMPDIR as it was, and every variable a library pinned inside the private directory: torch sets
    TORCHINDUCTOR_CACHE_DIR to the torchinductor_<user>/ it made there, and would make it again, in a directory
    named after this export, on its next use in this process or in any child started later."""
    for key, value in list(os.environ.items()):
        if private in value:
            if key in saved:
                os.environ[key] = saved[key]
            else:
                del os.environ[key]


def _remove_stale_tempdirs(base: Path) -> None:
    """The private temp directories of this user's exports that were killed (SIGKILL, power loss)."""
    uid = getattr(os, "getuid", lambda: None)()  # None on Windows: no owners to compare
    for candidate in base.glob(f"{TEMP_PREFIX}*"):
        pid = candidate.name[len(TEMP_PREFIX):].split("-", 1)[0]
        with contextlib.suppress(OSError):
            if pid.isdigit() and not pid_alive(int(pid)) and candidate.is_dir() and not candidate.is_symlink() \
                    and uid in (None, candidate.stat().st_uid):
                shutil.rmtree(candidate, ignore_errors=True)


@native_logs_hidden()  # TensorFlow's converters and LiteRT's verification log on fd 2 (clipedge.runtime.logs)
@private_tempdir()  # nothing left in the user's temp directory (the module's docstring)
def export_bundle(settings: ExportSettings | str | Path, *, progress: bool = True, **fields: Any) -> ExportResult:
    """Convert, verify against the float TF model on held-out samples, and write the bundle atomically.

    `export_bundle(ExportSettings(...))`, or `export_bundle(out, **fields)` with ExportSettings' fields as keywords.
    Every artifact is judged by the runtime's own runner; one below its precision's floor is kept and flagged."""
    from tqdm.auto import tqdm

    from clipedge.export.pipeline.build import ExportRun
    from clipedge.export.pipeline.child_process import map_large_allocations

    map_large_allocations()
    if not isinstance(settings, ExportSettings):
        settings = ExportSettings(out=settings, **fields)
    elif fields:
        settings = settings.replace(**fields)
    jobs = plan_jobs(settings)
    labelled = _labelled_folder(settings.eval_dir) if settings.has_auto and settings.target_top1_drop is not None \
        else None
    if settings.mobile:  # the metadata schema comes with the `mobile` extra: say so before any slow work
        from clipedge.export.formats.tflite.mediapipe_metadata import metadata_schema

        metadata_schema()
    with BundleWriter(settings.out, force=settings.force) as writer:  # refuses an existing bundle before slow work
        run = ExportRun.start(settings, writer, settings.checkpoint or default_checkpoint(), labelled)
        bar = tqdm(jobs, desc="export", unit="model", disable=not progress)
        result = ExportResult(settings.out)
        skipped = _FormatFailures(settings.formats, result.skipped_formats)
        with skipped.guard("onnx"):
            run.convert_onnx_fp32_first(jobs, bar.set_postfix_str)
        built = []
        for job in bar:
            if job.format in skipped:
                continue
            bar.set_postfix_str(job.file)
            with skipped.guard(job.format):
                built.append(run.build(job, bar.set_postfix_str))
        for artifact in built:
            if artifact.format in skipped:
                continue
            writer.add_artifact(artifact)
            result.rows.append({"file": artifact.file, "bytes": artifact.bytes, **artifact.fidelity,
                                "seconds": artifact.fidelity["export_seconds"], "flags": artifact.flags})
        _remove_unlisted(writer, jobs, built)
        fields = run.manifest_fields()
        fields["export"]["skipped_formats"] = dict(result.skipped_formats)
        fields["defaults"] = choose_defaults(writer.artifacts, settings.default_precision)
        result.peak_rss = fields["export"]["peak_rss_mib"]
        shutil.rmtree(writer.path(".work"))
        result.bundle = writer.finish(fields)
    return result


class _FormatFailures:
    """The formats given up on, and why. A converter's or a runtime's refusal (ExportError, BackendError) inside
    `guard(fmt)` gives up `fmt` when another asked-for format is still standing; otherwise it propagates."""

    def __init__(self, formats: tuple[str, ...], reasons: dict[str, str]) -> None:
        self.formats, self.reasons = formats, reasons

    def __contains__(self, fmt: str) -> bool:
        return fmt in self.reasons

    @contextlib.contextmanager
    def guard(self, fmt: str) -> Iterator[None]:
        try:
            yield
        except (ExportError, BackendError) as err:
            if fmt not in self.formats or not [f for f in self.formats if f != fmt and f not in self.reasons]:
                raise
            self.reasons[fmt] = str(err).splitlines()[0] if str(err) else type(err).__name__
            log.warning("no %s files for this checkpoint, writing the other formats: %s", fmt, self.reasons[fmt])


def _remove_unlisted(writer, jobs: list, built: list) -> None:
    """Files of a given-up format (written before it failed, or by its failing job) leave the bundle: the manifest
    lists every file, and a file it does not describe would be a stray."""
    kept = {a.file for a in writer.artifacts}
    companions = {entry["file"] for a in writer.artifacts for entry in a.extra.values()
                  if isinstance(entry, dict) and "file" in entry}
    for name in {j.file for j in jobs} | {a.file for a in built}:
        if name not in kept:
            writer.path(name).unlink(missing_ok=True)
    for path in writer.tmp.glob("*"):
        if path.suffix == ".npy" and path.name not in companions:
            path.unlink()
    for path in writer.tmp.glob("auto_*_*.md"):
        fmt = path.stem.rsplit("_", 1)[-1]
        if not any(a.format == fmt and a.precision == "auto" for a in writer.artifacts):
            path.unlink()


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
