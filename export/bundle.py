"""Writing a bundle atomically: everything goes into a temporary directory beside the target, which is renamed into
place only when complete. An interrupted or failed export leaves no bundle behind and never touches an existing one
(with --force the old one is swapped out only after the new one is whole)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

from clipedge.runtime.errors import ExportError
from clipedge.runtime.manifest import FORMAT_VERSION, MANIFEST_NAME, Artifact, sha256_file

__all__ = ["BundleWriter", "remove_stale_partials"]


def _pid_alive(pid: int) -> bool:
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
        if parts and parts[0].isdigit() and not _pid_alive(int(parts[0])) and candidate.is_dir():
            shutil.rmtree(candidate, ignore_errors=True)


class BundleWriter:
    """`with BundleWriter(out, force) as w: w.add_artifact(...); w.finish(manifest_fields)`."""

    def __init__(self, out: str | Path, force: bool = False) -> None:
        self.out = Path(out).resolve()
        if self.out.exists() and not force:
            raise ExportError(f"{self.out} already exists; pass --force (force=True) to replace it")
        if self.out.exists() and not self.out.is_dir():
            raise ExportError(f"{self.out} exists and is not a directory")
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
        """Write manifest.json and move the bundle into place."""
        manifest = {"format_version": FORMAT_VERSION, **fields,
                    "artifacts": [vars(a) for a in self.artifacts]}
        for artifact in self.artifacts:
            if not (self.tmp / artifact.file).is_file():
                raise ExportError(f"internal error: artifact {artifact.file} was listed but not written")
        (self.tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        old = None
        if self.out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.old-", dir=self.out.parent))
            os.replace(self.out, old / "bundle")
        os.replace(self.tmp, self.out)
        self._done = True
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.out
