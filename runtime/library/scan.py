"""Finding the photos of a library (issue #35): the folders a user names, walked the way tools they know (rclip,
find) walk them, for a catalogue that is rescanned often on a Raspberry Pi reading a NAS.

Why not `Path.rglob` (what `clipedge.runtime.datasets.list_images` does): it walks into hidden folders (a
`.thumbnails/` cache got embedded, every thumbnail a second copy of a photo), has no excludes, and silently skips
symlinked folders. Here:
- `os.scandir`, one directory read per folder and the file type from it (no stat for entries that are not images):
  50,000 files on a NAS are listed in seconds, and an excluded folder is never read at all.
- Exclude globs, with defaults for the caches and bins that file managers, NASes and OSes leave among photos.
- Symlinked folders are not followed unless asked (they are reported, so the caller can say how many and which flag
  follows them); when followed, a loop (`a/loop -> ..`) ends the descent and is reported, and a real folder reached
  twice (two sources, a link to a folder that is also scanned) is read once.
- Paths stay as the user gave them (`photos/a/b.jpg` for `photos`, never resolved through links), so the catalogue,
  search results and `dupes` print what the user typed.

Standard library only: the CLI imports this to scan before it loads a model.
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from clipedge.runtime.errors import InputError

__all__ = ["DEFAULT_EXCLUDES", "ScanResult", "ScannedFile", "default_suffixes", "scan_images"]

# Matched against every name below a source (never the source itself, which the user named on purpose), without
# case (`$Recycle.Bin` and `$RECYCLE.BIN` are both seen on FAT/NTFS disks). An excluded folder is not read at all.
DEFAULT_EXCLUDES: tuple[str, ...] = (
    ".*",  # hidden files and folders (Unix): caches, VCS, trash, macOS `._IMG.jpg` AppleDouble files that end in
    #        .jpg but hold resource forks, `.DS_Store`, Picasa's `.picasaoriginals`, Syncthing's `.stversions`
    ".thumbnails",  # freedesktop thumbnail cache (also hidden: named so the list reads as the reasons it exists)
    ".git",  # a repository's objects and checkouts of the same images
    ".Trash-*",  # per-user trash on removable and network drives (freedesktop), deleted photos
    "@eaDir",  # Synology DSM: a thumbnail folder per photo (SYNOPHOTO_THUMB_*.jpg), not hidden by a dot
    "#recycle",  # Synology shared-folder recycle bin
    "#snapshot",  # Synology Btrfs snapshots browsed in the share: every photo again per snapshot
    "@Recycle",  # QNAP recycle bin
    "@Recently-Snapshot",  # QNAP snapshots, as #snapshot
    "$RECYCLE.BIN",  # Windows recycle bin on an NTFS/exFAT disk moved to the Pi
    "System Volume Information",  # Windows restore points and indexer data on the same disks; unreadable anyway
    "lost+found",  # ext4 fsck's recovered fragments: root-only, unreadable, not photos
    "node_modules",  # JavaScript dependencies: thousands of icons and test images, never photos
    "__MACOSX",  # what unzipping a macOS zip leaves: AppleDouble `._` copies of every photo
)


@dataclass(frozen=True)
class ScannedFile:
    """One image file: `path` as the user gave its folder joined with the path below it (`photos/a/b.jpg`, never
    resolved through symlinks); `size` and `mtime_ns` (of the file a link points to) for the catalogue to tell
    what changed since the last scan without reading the file."""

    path: str
    size: int
    mtime_ns: int


@dataclass
class ScanResult:
    """What a scan found, and what it passed over, for the caller to report in a line each.
    `files`: sorted by path components, no file twice. `excluded`: entries matched by an exclude (a folder counts
    once, its contents are not read). `not_images`: files without an image suffix. `skipped_links`: symlinked
    folders not followed (`follow_symlinks=False`). `loops`: symlinked folders that lead back into their own
    ancestors, not entered. `unreadable`: folders that could not be listed (permissions, a NAS gone away), with the
    reason. `broken_links`: symlinks whose target does not exist."""

    files: list[ScannedFile] = field(default_factory=list)
    excluded: int = 0
    not_images: int = 0
    skipped_links: list[str] = field(default_factory=list)
    loops: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    broken_links: list[str] = field(default_factory=list)


def default_suffixes() -> frozenset[str]:
    """clipedge.runtime.datasets.IMAGE_SUFFIXES plus HEIC/HEIF (pillow-heif installed) and AVIF (Pillow built with
    it). The common set is repeated here rather than imported: datasets imports numpy, this module only the standard
    library; tests/runtime/test_library_scan.py checks the two agree."""
    from clipedge.runtime.heif import optional_suffixes

    return frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}) | optional_suffixes()


class _Excludes:
    """Exclude globs, fnmatch style and without case: a pattern without `/` matches one name (`.thumbnails`,
    `*.tmp`) at any depth; one with `/` matches the path below the source (`2019/raw/*`, `*/raw`) or the path as
    given (`photos/2019/raw`). A trailing `/` (`raw/`) matches folders only. `*` crosses `/` (fnmatch's rule), so
    `*/raw` is a `raw` folder at any depth below the top. Each kind is one compiled regex: a 50,000-file scan
    matches every name once, not once per pattern."""

    def __init__(self, patterns: Iterable[str]) -> None:
        kinds: dict[tuple[bool, bool], list[str]] = {}  # (has a /, folders only) -> fnmatch regexes
        for pattern in patterns:
            if not isinstance(pattern, str) or not pattern.strip("/"):
                raise InputError(f"exclude pattern {pattern!r} is empty; give a name (.thumbnails) or a glob (*.tmp)")
            body = pattern.rstrip("/").replace(os.sep, "/").lower()
            kinds.setdefault(("/" in body, pattern.endswith("/")), []).append(fnmatch.translate(body))
        self.kinds = {kind: re.compile("|".join(regexes)) for kind, regexes in kinds.items()}

    def match(self, name: str, rel: str, given: str, is_dir: bool) -> bool:
        for (has_slash, dirs_only), regex in self.kinds.items():
            if dirs_only and not is_dir:
                continue
            if not has_slash:
                if regex.match(name.lower()):
                    return True
            elif regex.match(rel.replace(os.sep, "/").lower()) or regex.match(given.replace(os.sep, "/").lower()):
                return True
        return False


def _identity(st: os.stat_result, path: str) -> tuple[object, ...]:
    """What makes a file or folder the same one however it is reached: (device, inode); or, where a file system
    reports no inode (0: some FUSE, SMB and Windows mounts), the real path, so such files are never all one."""
    return (st.st_dev, st.st_ino) if st.st_ino else ("path", os.path.realpath(path))


_Id = tuple[object, ...]  # see _identity
_Frame = tuple[str, str, frozenset[_Id], bool]  # folder, path below the source, ancestors, via a link


class _Scan:
    """One scan's state: the files found (by the identity of the file, so a file reached twice is kept once), the
    folders already read (so a folder reached twice is read once), the symlinked folders still to follow and the
    counts for ScanResult."""

    def __init__(self, excludes: _Excludes, follow: bool, suffixes: frozenset[str]) -> None:
        self.excludes, self.follow, self.suffixes = excludes, follow, suffixes
        self.found: dict[_Id, tuple[ScannedFile, bool]] = {}  # (st_dev, st_ino) -> (file, via a link)
        self.read: set[_Id] = set()
        self.links: list[tuple[_Frame, _Id]] = []  # symlinked folders, followed once the rest is read
        self.result = ScanResult()

    def add(self, path: str, st: os.stat_result, via_link: bool) -> None:
        """Keep a file once: reached as itself and through a link, the path without the link is kept (the copy
        in `originals/`, not the one in `favourites/`); reached twice alike, the first path seen is kept."""
        key = _identity(st, path)
        seen = self.found.get(key)
        if seen is None or (seen[1] and not via_link):
            self.found[key] = (ScannedFile(path, st.st_size, st.st_mtime_ns), via_link)

    def walk(self, top: str, top_id: _Id) -> None:
        """Walk one source, its symlinked folders left for `follow_links`."""
        if top_id in self.read:
            return  # the same real folder given twice, or inside a folder already scanned
        self.read.add(top_id)
        self._drain((top, "", frozenset({top_id}), False))

    def follow_links(self) -> None:
        """The symlinked folders, after every real folder of every source: a folder reached both ways is read as
        itself, so its files keep their real paths, and through the link only when that is the one way in."""
        while self.links:
            pending, self.links = self.links, []
            for (folder, rel, ancestors, _), key in pending:
                if key not in self.read:
                    self.read.add(key)
                    self._drain((folder, rel, ancestors | {key}, True))

    def _drain(self, first: _Frame) -> None:
        """Depth first with an explicit stack (a deep tree cannot reach Python's recursion limit); each folder
        carries the identities of its ancestors, the loop check."""
        stack = [first]
        while stack:
            subdirs = self._list(*stack.pop())
            stack.extend(reversed(subdirs))  # popped in name order: the walk's order does not depend on the disk

    def _list(self, folder: str, rel: str, ancestors: frozenset[_Id], via_link: bool) -> list[_Frame]:
        """Read one folder: files are kept, sub-folders returned to be walked."""
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as err:
            self.result.unreadable.append(f"{folder} ({err.strerror or err})")
            return []
        subdirs = []
        for entry in entries:
            frame = (entry.path, entry.name if not rel else f"{rel}/{entry.name}", ancestors, via_link)
            try:
                sub = self._entry(entry, frame)
            except OSError as err:  # the entry vanished or its target cannot be read: note it, go on
                self.result.unreadable.append(f"{entry.path} ({err.strerror or err})")
                continue
            if sub is not None:
                subdirs.append(sub)
        return subdirs

    def _entry(self, entry: os.DirEntry[str], frame: _Frame) -> _Frame | None:
        """One directory entry: a file is kept or counted, a folder returned to walk (or queued if a link)."""
        path, rel, ancestors, via_link = frame
        link = entry.is_symlink()
        is_dir = entry.is_dir()  # follows links: a link to a folder is a folder
        if self.excludes.match(entry.name, rel, path, is_dir):
            self.result.excluded += 1
            return None
        if not is_dir:
            self._file(entry, via_link or link)
            return None
        if link and not self.follow:
            self.result.skipped_links.append(path)
            return None
        key = _identity(entry.stat(), path)
        if key in ancestors:  # a link (or a bind mount) back up the path just walked down
            self.result.loops.append(path)
            return None
        if link:
            self.links.append((frame, key))
            return None
        if key in self.read:
            return None  # a real folder already read through another path: its files are in already
        self.read.add(key)
        return path, rel, ancestors | {key}, via_link

    def _file(self, entry: os.DirEntry[str], via_link: bool) -> None:
        if not entry.is_file():
            if entry.is_symlink() and not os.path.exists(entry.path):
                self.result.broken_links.append(entry.path)
            return  # FIFOs, sockets, devices: never images (preprocess refuses them too)
        if os.path.splitext(entry.name)[1].lower() not in self.suffixes:
            self.result.not_images += 1
            return
        self.add(entry.path, entry.stat(), via_link)


def _check_sources(sources: Sequence[str]) -> list[tuple[str, os.stat_result]]:
    """Every source stat'ed up front, so that one missing path fails the scan in one line before any work."""
    if isinstance(sources, (str, bytes)):
        raise InputError("sources must be a list of paths, not one string")
    if not sources:
        raise InputError("no folders or files to scan")
    out, missing = [], []
    for source in sources:
        source = os.fspath(source)
        try:
            out.append((source, os.stat(source)))  # follows links: a source that is a link to a folder is walked
        except (FileNotFoundError, NotADirectoryError):
            missing.append(source)
        except OSError as err:  # there, but not for us (a parent folder without permission, a dead share)
            raise InputError(f"cannot read {source} ({err.strerror or err})") from err
    if missing:
        raise InputError(f"no such file or folder: {', '.join(missing)}")
    return out


def _sort_key(file: ScannedFile) -> tuple[str, ...]:
    """By path components, as sorted Path objects order (a folder's files stay together: `a/b.jpg` before
    `a b.jpg`), so two scans of the same tree list the same order on every machine."""
    return tuple(file.path.replace(os.sep, "/").split("/"))


def scan_images(sources: Sequence[str], exclude: Sequence[str] = (), use_default_excludes: bool = True,
                follow_symlinks: bool = False, suffixes: Iterable[str] | None = None) -> ScanResult:
    """The image files of `sources` (folders, walked recursively, and files), as a ScanResult.

    - A file named in `sources` is kept whatever its suffix and whatever the excludes: the user asked for it (a
      decode error, if it is not an image, says so later). In folders, only files with an image suffix
      (`suffixes`, lower case with the dot; None: `default_suffixes()`), compared without case.
    - `exclude`: globs (see `_Excludes`), added to DEFAULT_EXCLUDES unless `use_default_excludes` is False.
      Excludes apply below each source, never to a source itself (`clipedge index build ~/.photos` scans it).
    - `follow_symlinks`: walk into symlinked folders; a source that is itself a link is always followed.
    Raises InputError, in one line, naming every source that does not exist."""
    checked = _check_sources(sources)
    patterns = (*DEFAULT_EXCLUDES, *exclude) if use_default_excludes else tuple(exclude)
    wanted = default_suffixes() if suffixes is None else frozenset(s.lower() for s in suffixes)
    scan = _Scan(_Excludes(patterns), follow_symlinks, wanted)
    for source, st in checked:
        if stat.S_ISDIR(st.st_mode):
            scan.walk(source, _identity(st, source))
        elif stat.S_ISREG(st.st_mode):
            scan.add(source, st, via_link=False)
        else:
            raise InputError(f"{source} is neither a file nor a folder (a FIFO, socket or device); give image files "
                             "or folders of them")
    scan.follow_links()
    scan.result.files = sorted((file for file, _ in scan.found.values()), key=_sort_key)
    return scan.result
