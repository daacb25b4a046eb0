"""Folder scanning for a photo library (issue #35): default and user excludes, symlinked folders (skipped and
reported, or followed with loop protection), no file twice, paths as the user gave them, unreadable folders, missing
sources, a sorted and stable order."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from clipedge.runtime.datasets import IMAGE_SUFFIXES, image_suffixes
from clipedge.runtime.errors import InputError
from clipedge.runtime.library.scan import DEFAULT_EXCLUDES, ScannedFile, default_suffixes, scan_images

needs_symlinks = pytest.mark.skipif(sys.platform == "win32", reason="directory symlinks need privileges on Windows")


def make(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(name.encode())  # a distinct size per file, so size is checked too


def paths(result) -> list[str]:
    return [f.path for f in result.files]


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_suffixes_agree_with_datasets_and_match_without_case(cwd):
    assert default_suffixes() == image_suffixes() and IMAGE_SUFFIXES <= default_suffixes()
    make(cwd, "p/a.JPG", "p/b.jpeg", "p/c.txt", "p/d.Png", "p/e")
    result = scan_images(["p"])
    assert paths(result) == ["p/a.JPG", "p/b.jpeg", "p/d.Png"]
    assert result.not_images == 2
    assert paths(scan_images(["p"], suffixes=[".TXT"])) == ["p/c.txt"]


def test_default_excludes_skip_caches_bins_and_hidden_files(cwd):
    kept = ["p/a.jpg", "p/2019/b.jpg", "p/thumbnails/visible.jpg"]
    skipped = ["p/.thumbnails/normal/x.png", "p/2019/@eaDir/b.jpg/SYNOPHOTO_THUMB_XL.jpg", "p/#recycle/old.jpg",
               "p/.git/objects/y.png", "p/web/node_modules/icons/z.png", "p/__MACOSX/2019/._b.jpg",
               "p/.Trash-1000/files/del.jpg", "p/lost+found/#1234.jpg", "p/._a.jpg", "p/.hidden.jpg",
               "p/$Recycle.Bin/S-1-5/old.jpg", "p/#snapshot/GMT+00/a.jpg"]
    make(cwd, *kept, *skipped)
    result = scan_images(["p"])
    assert paths(result) == sorted(kept, key=lambda p: p.split("/"))
    assert result.excluded == 12  # each excluded folder or file once; their contents are never read
    everything = scan_images(["p"], use_default_excludes=False)
    assert len(everything.files) == len(kept) + len(skipped) and everything.excluded == 0
    for name in (".*", ".thumbnails", "@eaDir", "#recycle", ".git", "node_modules", "__MACOSX", ".Trash-*",
                 "lost+found"):
        assert name in DEFAULT_EXCLUDES


def test_a_source_is_never_excluded_itself(cwd):
    make(cwd, ".photos/a.jpg", ".photos/.cache/b.jpg", "node_modules/c.jpg")
    assert paths(scan_images([".photos", "node_modules"])) == [".photos/a.jpg", "node_modules/c.jpg"]


def test_user_excludes_by_name_and_by_path(cwd):
    make(cwd, "p/2019/raw/a.jpg", "p/2019/raw/sub/b.jpg", "p/2019/c.jpg", "p/2020/raw/d.jpg", "p/e.tmp.jpg",
         "p/f.jpg", "p/raw.jpg")
    assert paths(scan_images(["p"], exclude=["2019/raw/*"])) == ["p/2019/c.jpg", "p/2020/raw/d.jpg", "p/e.tmp.jpg",
                                                                 "p/f.jpg", "p/raw.jpg"]
    assert paths(scan_images(["p"], exclude=["2019/raw"])) == paths(scan_images(["p"], exclude=["2019/raw/*"]))
    # a name pattern matches at any depth, without case; `raw/` only folders, so raw.jpg stays
    assert paths(scan_images(["p"], exclude=["RAW/", "*.tmp.*"])) == ["p/2019/c.jpg", "p/f.jpg", "p/raw.jpg"]
    assert paths(scan_images(["p"], exclude=["raw*"])) == ["p/2019/c.jpg", "p/e.tmp.jpg", "p/f.jpg"]
    # a path pattern may also name the path as given
    assert paths(scan_images(["p"], exclude=["p/2019/*"])) == ["p/2020/raw/d.jpg", "p/e.tmp.jpg", "p/f.jpg",
                                                               "p/raw.jpg"]
    excluded = scan_images(["p"], exclude=["2019"])
    assert excluded.excluded == 1 and "p/2019/c.jpg" not in paths(excluded)
    with pytest.raises(InputError, match="empty"):
        scan_images(["p"], exclude=[""])


def test_excluded_folders_are_not_read(cwd, monkeypatch):
    make(cwd, "p/a.jpg", "p/big/b.jpg", "p/big/deep/c.jpg")
    read: list[str] = []
    real = os.scandir

    def spy(path):
        read.append(os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", spy)
    assert paths(scan_images(["p"], exclude=["big"])) == ["p/a.jpg"]
    assert read == ["p"]


def test_paths_are_kept_as_given_relative_and_absolute(cwd):
    make(cwd, "photos/a/b.jpg")
    assert paths(scan_images(["photos"])) == ["photos/a/b.jpg"]
    assert paths(scan_images(["photos/"])) == ["photos/a/b.jpg"]
    assert paths(scan_images([str(cwd / "photos")])) == [str(cwd / "photos" / "a" / "b.jpg")]
    assert paths(scan_images(["./photos/a"])) == ["./photos/a/b.jpg"]
    [file] = scan_images(["photos"]).files
    st = os.stat("photos/a/b.jpg")
    assert file == ScannedFile("photos/a/b.jpg", st.st_size, st.st_mtime_ns) and file.size == len(b"photos/a/b.jpg")


def test_a_file_named_explicitly_is_kept_whatever_its_suffix(cwd):
    make(cwd, "notes.txt", ".hidden.jpg", "p/x.jpg")
    result = scan_images(["notes.txt", ".hidden.jpg", "p"], exclude=["*.txt"])
    assert paths(result) == [".hidden.jpg", "notes.txt", "p/x.jpg"]


def test_sources_given_twice_or_nested_give_each_file_once(cwd):
    make(cwd, "p/a.jpg", "p/sub/b.jpg")
    result = scan_images(["p", "p", "./p", "p/sub", "p/a.jpg", str(cwd / "p")])
    assert paths(result) == ["p/a.jpg", "p/sub/b.jpg"]  # the first path a file was reached by
    assert paths(scan_images(["./p/a.jpg", "p/a.jpg", "p"])) == ["./p/a.jpg", "p/sub/b.jpg"]


def test_order_is_sorted_by_path_components_and_stable(cwd):
    make(cwd, "p/a b.jpg", "p/a/b.jpg", "p/B.jpg", "p/a0.jpg", "q/0.jpg")
    expected = ["p/B.jpg", "p/a/b.jpg", "p/a b.jpg", "p/a0.jpg", "q/0.jpg"]
    assert paths(scan_images(["q", "p"])) == expected
    assert paths(scan_images(["p", "q"])) == expected


def test_missing_sources_fail_in_one_line(cwd):
    make(cwd, "p/a.jpg")
    with pytest.raises(InputError) as err:
        scan_images(["p", "nope", "gone/x.jpg"])
    assert str(err.value) == "no such file or folder: nope, gone/x.jpg" and "\n" not in str(err.value)
    with pytest.raises(InputError, match="list of paths"):
        scan_images("p")
    with pytest.raises(InputError, match="no folders"):
        scan_images([])


def test_an_unreadable_folder_is_reported_and_the_scan_goes_on(cwd, monkeypatch):
    make(cwd, "p/a.jpg", "p/locked/b.jpg", "p/z/c.jpg")
    real = os.scandir

    def deny(path):
        if os.fspath(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", deny)
    result = scan_images(["p"])
    assert paths(result) == ["p/a.jpg", "p/z/c.jpg"]
    assert result.unreadable == ["p/locked (Permission denied)"]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads folders without permissions")
def test_an_unreadable_folder_for_real(cwd):
    make(cwd, "p/a.jpg", "p/locked/b.jpg")
    os.chmod("p/locked", 0)
    try:
        result = scan_images(["p"])
    finally:
        os.chmod("p/locked", 0o755)
    assert paths(result) == ["p/a.jpg"] and result.unreadable[0].startswith("p/locked (")


@needs_symlinks
def test_symlinked_folders_are_skipped_and_reported_unless_followed(cwd):
    make(cwd, "elsewhere/x.jpg", "p/a.jpg")
    os.symlink(cwd / "elsewhere", "p/linked")
    skipped = scan_images(["p"])
    assert paths(skipped) == ["p/a.jpg"] and skipped.skipped_links == ["p/linked"]
    followed = scan_images(["p"], follow_symlinks=True)
    assert paths(followed) == ["p/a.jpg", "p/linked/x.jpg"] and followed.skipped_links == []
    # a source that is a link is what the user named: always walked, its path kept (not resolved)
    os.symlink(cwd / "elsewhere", "shortcut")
    assert paths(scan_images(["shortcut"])) == ["shortcut/x.jpg"]
    # an excluded link is excluded, not reported as skipped
    assert scan_images(["p"], exclude=["linked"]).skipped_links == []


@needs_symlinks
def test_a_symlink_loop_ends_and_is_reported(cwd):
    make(cwd, "p/a/x.jpg", "p/b.jpg")
    os.symlink("..", "p/a/loop")
    os.symlink(".", "p/a/self")
    result = scan_images(["p"], follow_symlinks=True)
    assert paths(result) == ["p/a/x.jpg", "p/b.jpg"]
    assert result.loops == ["p/a/loop", "p/a/self"]
    assert scan_images(["p"]).skipped_links == ["p/a/loop", "p/a/self"]


@needs_symlinks
def test_a_folder_reached_as_itself_and_through_a_link_keeps_its_real_paths(cwd):
    make(cwd, "p/originals/x.jpg", "p/z.jpg")
    os.symlink("originals", "p/a-link")  # sorts before originals/, still read as itself
    os.symlink("originals/x.jpg", "p/a-favourite.jpg")  # file links: the same file, kept once, by its real path
    os.symlink("originals/x.jpg", "p/zz-favourite.jpg")  # whether the link is reached before or after it
    os.symlink("missing.jpg", "p/broken.jpg")
    result = scan_images(["p"], follow_symlinks=True)
    assert paths(result) == ["p/originals/x.jpg", "p/z.jpg"]
    assert result.loops == [] and result.broken_links == ["p/broken.jpg"]
    # a link to a folder outside the sources, only way in: its files through the link
    make(cwd, "q/y.jpg")
    os.symlink(cwd / "q", "p/q-link")
    assert paths(scan_images(["p"], follow_symlinks=True)) == ["p/originals/x.jpg", "p/q-link/y.jpg", "p/z.jpg"]


def test_a_deep_tree_does_not_recurse(cwd):
    deep = Path("p", *["d"] * 150)  # deeper than a recursive walk would like, within PATH_MAX
    make(cwd, str(deep / "x.jpg"))
    assert paths(scan_images(["p"])) == [str(deep / "x.jpg")]


def test_importing_the_scanner_costs_no_numpy_or_pillow():
    """The CLI scans before it loads a model; the scanner's import stays standard library only."""
    code = ("import sys, clipedge.runtime.library.scan\n"
            "print(sorted(m for m in ('numpy', 'PIL', 'pillow_heif') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", (out.stdout, out.stderr)


def test_a_file_system_without_inodes_does_not_make_every_file_one(cwd, monkeypatch):
    """Some FUSE, SMB and Windows mounts report inode 0 for everything: identity falls back to the real path."""
    from clipedge.runtime.library import scan

    make(cwd, "p/a.jpg", "p/b.jpg", "p/sub/c.jpg")
    real = scan._identity
    monkeypatch.setattr(scan, "_identity", lambda st, path: real(os.stat_result((*st[:1], 0, *st[2:])), path))
    assert paths(scan_images(["p", "p"])) == ["p/a.jpg", "p/b.jpg", "p/sub/c.jpg"]
