"""Quiet by default (issue #20): the README's Python snippet prints its result and at most one line on stderr, where
LiteRT alone used to write 47; the interpreters' logs come back with CLIPEDGE_LOG / set_log_level, never on stdout."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
PHOTOS = Path(__file__).resolve().parents[2] / "calibration_data" / "eval"


def readme_snippet() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture
def snippet_dir(tmp_path, small_bundle):
    """The files the snippet names, beside it: `clipedge-bundle`, a.jpg, b.png."""
    from PIL import Image

    (tmp_path / "clipedge-bundle").symlink_to(small_bundle, target_is_directory=True)
    Image.open(PHOTOS / "blue_star" / "00.jpg").save(tmp_path / "a.jpg")
    Image.open(PHOTOS / "red_circle" / "00.jpg").save(tmp_path / "b.png")
    # the test bundle has dynamic-int8 where the README's demo bundle has int8: the same code path
    (tmp_path / "snippet.py").write_text(readme_snippet().replace('precision="int8"', 'precision="dynamic-int8"'))
    return tmp_path


def run_snippet(directory: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("CLIPEDGE_LOG", "TF_CPP_MIN_LOG_LEVEL")}
    return subprocess.run([sys.executable, "snippet.py"], cwd=directory, capture_output=True, text=True,
                          timeout=300, env={**environment, **env})


def test_the_readme_snippet_prints_at_most_one_line_on_stderr(snippet_dir):
    result = run_snippet(snippet_dir)
    assert result.returncode == 0, result.stderr
    assert len(result.stderr.splitlines()) <= 1, result.stderr
    assert len(result.stdout.splitlines()) == 1 and "dog" in result.stdout  # the print, nothing of LiteRT's


def test_clipedge_log_info_shows_the_interpreters(snippet_dir):
    result = run_snippet(snippet_dir, CLIPEDGE_LOG="info")
    assert result.returncode == 0, result.stderr
    assert "clipedge INFO clipedge.runtime.clip_runtime: image tower:" in result.stderr
    assert len(result.stdout.splitlines()) == 1, result.stdout  # native logs go to stderr, never stdout


def test_set_log_level_names_a_bad_level():
    from clipedge.runtime import InputError, set_log_level

    with pytest.raises(InputError, match="'loud'.*expected one of"):
        set_log_level("loud")


def test_python_output_inside_a_hidden_block_keeps_the_terminal():
    code = ("import os, sys, logging\n"
            "logging.basicConfig(format='%(message)s')\n"
            "from clipedge.runtime.logs import native_logs_hidden\n"
            "with native_logs_hidden():\n"
            "    os.write(2, b'native line\\n'); os.write(1, b'native stdout line\\n')\n"
            "    print('python stderr', file=sys.stderr); print('python stdout')\n"
            "    logging.getLogger('app').warning('a warning')\n"
            "print('after', file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env={k: v for k, v in os.environ.items() if k != "CLIPEDGE_LOG"})
    assert result.stdout == "python stdout\n"
    assert result.stderr == "python stderr\na warning\nafter\n"
