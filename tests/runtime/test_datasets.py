"""The shared folder and caption readers (eval folders and pairs are tested with the report that uses them)."""

from __future__ import annotations

import pytest

from clipedge.runtime.datasets import IMAGE_SUFFIXES, list_images, read_captions, shipped_data_dir
from clipedge.runtime.errors import InputError


def test_list_images_is_recursive_sorted_and_images_only(tmp_path):
    for name in ("b.jpg", "a/c.PNG", "a/z/d.webp", "notes.txt", "a/.DS_Store"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "folder.jpg").mkdir()  # an image suffix on a directory is not an image
    assert list_images(tmp_path) == [tmp_path / "a/c.PNG", tmp_path / "a/z/d.webp", tmp_path / "b.jpg"]
    with pytest.raises(InputError, match=f"{tmp_path / 'missing'} does not exist"):
        list_images(tmp_path / "missing")
    assert ".jpg" in IMAGE_SUFFIXES and ".txt" not in IMAGE_SUFFIXES


def test_read_captions_skips_blanks_and_comments(tmp_path):
    path = tmp_path / "captions.txt"
    path.write_text("# where these come from\n\n  a dog  \na cat\n", encoding="utf-8")
    assert read_captions(path) == ["a dog", "a cat"]
    path.write_text("# only a comment\n", encoding="utf-8")
    with pytest.raises(InputError, match="no captions"):
        read_captions(path)
    with pytest.raises(InputError, match="does not exist"):
        read_captions(tmp_path / "missing.txt")


def test_the_shipped_data_is_found_without_export():
    root = shipped_data_dir()
    assert root is not None and list_images(root / "photos") and read_captions(root / "captions.txt")
