"""Output written atomically, ending with the modes a plain write would give.

Atomic outputs start as `tempfile.mkstemp` files (mode 0600) and `tempfile.mkdtemp` directories (0700): private on
purpose while half-written. Renamed into place as they are, a bundle, an index or a web site would stay readable by
their owner alone, so a web server running as another user, a colleague or a container with another uid could not
read them. What `open(path, "w")` and `os.makedirs` give is the user's umask applied to 0666 and 0777; `publish`
gives exactly that before the rename, so a umask of 077 still keeps everything private.

The umask is read without changing it where the system allows (Linux: /proc/self/status, since kernel 4.7): the
`os.umask(0); os.umask(old)` round trip changes a process-wide setting, and a thread creating a file in between would
create it with no umask at all. Elsewhere that round trip is done once, at import (a single-threaded moment in
practice), and the value kept.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

__all__ = ["current_umask", "dir_mode", "file_mode", "publish", "write_atomically", "write_files_atomically"]


def _umask_from_proc() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        return None
    return None


def _umask_by_round_trip() -> int:
    old = os.umask(0o022)
    os.umask(old)
    return old


_UMASK_AT_IMPORT: int | None = None if _umask_from_proc() is not None else _umask_by_round_trip()


def current_umask() -> int:
    """The process's umask, read without changing it where possible (see the module's docstring)."""
    umask = _umask_from_proc()
    if umask is None:
        umask = _UMASK_AT_IMPORT if _UMASK_AT_IMPORT is not None else _umask_by_round_trip()
    return umask


def file_mode() -> int:
    """The mode `open(path, "w")` gives a new file: 0666 less the umask."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """The mode `os.mkdir` gives a new directory: 0777 less the umask."""
    return 0o777 & ~current_umask()


def publish(path: str | Path) -> None:
    """Give `path` (a file, or a directory and everything in it) the modes a plain write would have given them,
    before it is renamed into place. Symbolic links are left alone (their mode means nothing on Linux)."""
    path = Path(path)
    files, dirs = file_mode(), dir_mode()
    if path.is_symlink():
        return
    if not path.is_dir():
        os.chmod(path, files)
        return
    for root, dirnames, filenames in os.walk(path):
        for name in filenames:
            entry = os.path.join(root, name)
            if not os.path.islink(entry):
                os.chmod(entry, files)
        for name in dirnames:
            entry = os.path.join(root, name)
            if not os.path.islink(entry):
                os.chmod(entry, dirs)
    os.chmod(path, dirs)


def write_atomically(path: str | Path, data: bytes | Callable[[BinaryIO], None],
                     prefix: str = ".clipedge-tmp-") -> Path:
    """Write `data` to `path` through a temporary file beside it, synced, then renamed over it: a reader sees the old
    file or the new one, never a part; a failure leaves no temporary file. The file ends with `file_mode()`.
    `data`: the bytes, or a function that writes them to the open file (a large matrix need not be copied first)."""
    return write_files_atomically([(Path(path), data)], prefix)[0]


def write_files_atomically(files: Sequence[tuple[str | Path, bytes | Callable[[BinaryIO], None]]],
                           prefix: str = ".clipedge-tmp-") -> list[Path]:
    """`write_atomically` for files that belong together (a matrix and the file that describes its rows): every
    temporary file is written and synced before the first rename, so a failure while writing (a full disk) leaves
    all the old files as they were and no temporary file behind. The renames follow in the order given; a rename can
    fail too (ENOSPC when the directory needs a block, EIO), and then the files already renamed are put back from
    hard links taken before the first rename (issue #33: a new matrix beside the old rows' description)."""
    targets = [Path(path) for path, _ in files]
    temps: list[str] = []
    try:
        for path, (_, data) in zip(targets, files, strict=True):
            fd, tmp = tempfile.mkstemp(prefix=prefix, dir=path.parent)
            temps.append(tmp)
            with os.fdopen(fd, "wb") as f:
                if callable(data):
                    data(f)
                else:
                    f.write(data)
                f.flush()
                os.fsync(f.fileno())
            publish(tmp)
        if len(targets) == 1:
            os.replace(temps[0], targets[0])
        else:
            _replace_together(targets, temps, prefix)
    except BaseException:
        for tmp in temps:
            Path(tmp).unlink(missing_ok=True)
        raise
    return targets


def _keep_old(path: Path, prefix: str) -> str | None:
    """A second name for `path`'s current file (a hard link, or a copy where the file system has none), or None
    when there is no such file."""
    if not path.exists():
        return None
    fd, keep = tempfile.mkstemp(prefix=prefix, dir=path.parent)
    os.close(fd)
    os.unlink(keep)
    try:
        os.link(path, keep)
    except OSError:  # FAT, some network file systems
        import shutil

        shutil.copy2(path, keep)
    return keep


def _put_back(old: str, path: Path) -> None:
    """`old`'s file back at `path`: a rename, or, where renames keep failing (the error that stopped the renames),
    the new file's name removed and the old file linked in its place."""
    try:
        os.replace(old, path)
    except OSError:
        path.unlink(missing_ok=True)
        os.link(old, path)


def _replace_together(targets: list[Path], temps: list[str], prefix: str) -> None:
    """Rename every temporary onto its target; if one rename fails, the targets renamed so far get their old
    files back (or are removed, where there was none), so the set stays as it was."""
    kept: list[str | None] = []
    try:
        for path in targets:
            kept.append(_keep_old(path, prefix))
        done = 0
        try:
            for path, tmp in zip(targets, temps, strict=True):
                os.replace(tmp, path)
                done += 1
        except BaseException:
            for path, old in zip(targets[:done], kept[:done], strict=True):
                if old is None:
                    path.unlink(missing_ok=True)
                else:
                    _put_back(old, path)
            raise
    finally:
        for old in kept:
            if old is not None:
                Path(old).unlink(missing_ok=True)
