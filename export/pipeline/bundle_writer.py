"""Writing a bundle atomically: everything goes into a temporary directory beside the target, which is renamed into
place only when complete. An interrupted or failed export leaves no bundle behind and never touches an existing one
(with --force the old one is swapped out only after the new one is whole).

--force replaces only what an export could have written: an empty directory or a clipedge bundle (a manifest.json
with a format_version and artifacts) whose every file its manifest lists; a user's notes or an index put inside a
bundle make --force refuse, naming them, since an export deletes only what it can prove it wrote. Anything else (a
folder of photos, a web app with its own manifest.json) is refused before any slow work, and checked again just
before the swap, because the export may run for an hour.

The temporary directory is mkdtemp's (mode 0700, private while half-written); before the rename the bundle is given
the modes a plain `mkdir`/`open` would have given it under the user's umask (clipedge.runtime.atomic.publish), so a
web server or another user can read it unless the umask says otherwise."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

from clipedge.runtime.atomic import publish
from clipedge.runtime.errors import ExportError
from clipedge.runtime.manifest import FORMAT_VERSION, MANIFEST_NAME, Artifact, sha256_file

__all__ = ["BundleWriter", "check_replaceable", "pid_alive", "remove_stale_partials"]


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists: tells a killed export's leftovers (named with its pid) from a running one's."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_partials(out: Path) -> None:
    """Delete temporary bundle directories left by exports that were killed (SIGKILL, power loss)."""
    for candidate in out.parent.glob(f".{out.name}.partial-*"):
        parts = candidate.name.split(".partial-", 1)[1].split("-")
        if parts and parts[0].isdigit() and not pid_alive(int(parts[0])) and candidate.is_dir():
            shutil.rmtree(candidate, ignore_errors=True)


def check_replaceable(out: Path, force: bool) -> None:
    """Raise ExportError unless `out` is free, or (with force) an empty directory or a clipedge bundle."""
    if not out.exists() and not out.is_symlink():
        return
    if not force:
        raise ExportError(f"{out} already exists; pass --force (force=True) to replace it")
    if out.is_symlink() or not out.is_dir():
        raise ExportError(f"{out} exists and is not a directory; --force replaces only a bundle directory")
    try:
        empty = next(out.iterdir(), None) is None
    except OSError as err:
        raise ExportError(f"cannot read {out} ({err.strerror or err}); --force replaces only a bundle") from err
    if empty:
        return
    if _is_bundle(out):
        foreign = _foreign_files(out)
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise ExportError(f"{out} is a clipedge bundle holding files its manifest does not list ({shown}): "
                              "--force replaces only what an export wrote; move them out first, or choose another "
                              "--out")
        return
    raise ExportError(f"{out} is not a clipedge bundle (no {MANIFEST_NAME} with a format_version and artifacts) and "
                      "not empty: --force replaces only a bundle or an empty directory, never other files; "
                      "choose another --out or move the folder away")


def _is_bundle(directory: Path) -> bool:
    try:
        data = json.loads((directory / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and isinstance(data.get("format_version"), int) and \
        isinstance(data.get("artifacts"), list)


def _written_names(data: dict[str, Any]) -> set[str]:
    """Every file name an export writes into a bundle, as its manifest records them."""
    names = {MANIFEST_NAME, *(data.get("files") or {}), *((data.get("tokenizer") or {}).get("files") or [])}
    for artifact in data.get("artifacts") or []:
        if not isinstance(artifact, dict):
            continue
        names.add(str(artifact.get("file")))
        for value in (artifact.get("extra") or {}).values():
            if isinstance(value, dict) and isinstance(value.get("file"), str):
                names.add(value["file"])  # companions: the gpu text variant's token table
        if isinstance((artifact.get("extra") or {}).get("sensitivity_table"), str):
            names.add(artifact["extra"]["sensitivity_table"])
    return names


def _foreign_files(directory: Path) -> list[str]:
    """The files (and links) in an existing bundle that its manifest does not list: a user's notes, an index built
    inside it, an old report. --force must not delete what the export cannot prove it wrote (issue #33)."""
    data = json.loads((directory / MANIFEST_NAME).read_text(encoding="utf-8"))
    written = _written_names(data)
    foreign = []
    for root, dirs, files in os.walk(directory):
        here = Path(root).relative_to(directory)
        for name in sorted(files) + sorted(d for d in dirs if (Path(root) / d).is_symlink()):
            relative = (here / name).as_posix()
            if relative not in written:
                foreign.append(relative)
    return sorted(foreign)


class BundleWriter:
    """`with BundleWriter(out, force) as w: w.add_artifact(...); w.finish(manifest_fields)`."""

    def __init__(self, out: str | Path, force: bool = False) -> None:
        self.out = Path(out).resolve()
        check_replaceable(self.out, force)
        self.force = force
        self.out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(self.out)
        # The pid in the name lets a later export tell a killed export's leftovers from a running one's.
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.partial-{os.getpid()}-", dir=self.out.parent))
        self.artifacts: list[Artifact] = []
        self._done = False

    def __enter__(self) -> BundleWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if not self._done:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def path(self, name: str) -> Path:
        return self.tmp / name

    def write_bytes(self, name: str, data: bytes) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def add_artifact(self, artifact: Artifact) -> None:
        self.artifacts.append(artifact)

    @staticmethod
    def describe_file(path: Path) -> dict[str, Any]:
        return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}

    def finish(self, fields: dict[str, Any]) -> Path:
        """Write manifest.json, with the sha256 of every file that is not a model file (`files`), and move the bundle
        into place."""
        for artifact in self.artifacts:
            if not (self.tmp / artifact.file).is_file():
                raise ExportError(f"internal error: artifact {artifact.file} was listed but not written")
        models = {a.file for a in self.artifacts}
        names = sorted(p.relative_to(self.tmp).as_posix() for p in self.tmp.rglob("*") if p.is_file())
        files = {name: self.describe_file(self.tmp / name) for name in names
                 if name != MANIFEST_NAME and name not in models and not name.startswith(".work/")}
        manifest = {"format_version": FORMAT_VERSION, **fields, "files": files,
                    "artifacts": [vars(a) for a in self.artifacts]}
        (self.tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        check_replaceable(self.out, self.force)  # what --force would remove may have changed during the export
        publish(self.tmp)  # mkdtemp's 0700 -> the umask's modes, for the whole tree
        old = None
        if self.out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.old-", dir=self.out.parent))
            os.replace(self.out, old / "bundle")
        os.replace(self.tmp, self.out)
        self._done = True
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.out
