"""What `resolve_checkpoint` asks the hub for: safetensors first, and the pickled weights only when a repo has no
safetensors (many OpenCLIP repos ship only open_clip_pytorch_model.bin). huggingface_hub's snapshot_download is
replaced by a fake hub that applies allow_patterns with fnmatch, as the real one does."""

from __future__ import annotations

import fnmatch
import sys
import types
from pathlib import Path

import pytest

from clipedge.export.checkpoint.loader import resolve_checkpoint


def fake_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, repo_files: list[str]) -> list[list[str]]:
    calls: list[list[str]] = []

    def snapshot_download(repo_id: str, revision=None, allow_patterns=()):
        calls.append(list(allow_patterns))
        target = tmp_path / "snapshot" / repo_id.replace("/", "--")
        target.mkdir(parents=True, exist_ok=True)
        for name in repo_files:
            if any(fnmatch.fnmatch(name, pattern) for pattern in allow_patterns):
                (target / name).write_bytes(b"x")
        return str(target)

    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(snapshot_download=snapshot_download))
    return calls


def test_safetensors_repo_fetches_no_pickle(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = fake_hub(monkeypatch, tmp_path, ["open_clip_config.json", "open_clip_model.safetensors",
                                             "open_clip_pytorch_model.bin"])
    directory = resolve_checkpoint("org/model")
    assert (directory / "open_clip_model.safetensors").is_file()
    assert not (directory / "open_clip_pytorch_model.bin").exists()
    assert len(calls) == 1


def test_pickle_only_openclip_repo_is_fetched(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = fake_hub(monkeypatch, tmp_path, ["open_clip_config.json", "open_clip_pytorch_model.bin", "README.md"])
    directory = resolve_checkpoint("org/model")
    assert (directory / "open_clip_pytorch_model.bin").is_file()
    assert not (directory / "README.md").exists()
    assert len(calls) == 2
