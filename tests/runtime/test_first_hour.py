"""A new user's first hour (issue #34): `--version`, `python -m clipedge`, what `dir(clipedge.runtime)` shows, the
missing-bundle error naming `--bundle`, and progress bars only for a person watching (never with -q or into a log
file; warnings printed above the bar, not inside it)."""

from __future__ import annotations

import fcntl
import os
import pty
import shutil
import struct
import subprocess
import sys
import termios
import tty
from importlib.metadata import version
from pathlib import Path

import pytest

import clipedge.runtime

EVAL_IMAGE = Path(__file__).resolve().parents[2] / "calibration_data" / "eval" / "blue_star" / "00.jpg"


def run_clipedge(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clipedge", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd)


def on_a_terminal(*args: str) -> str:
    """stderr+stdout of `python -m clipedge ARGS` run on a pseudo-terminal (raw: no \\n -> \\r\\n translation), as a
    person at a shell sees it."""
    master, slave = pty.openpty()
    tty.setraw(slave)
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))  # a 100-column window: tqdm's width
    process = subprocess.Popen([sys.executable, "-m", "clipedge", *args], stdout=slave, stderr=slave,
                               stdin=subprocess.DEVNULL)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 1 << 16)
        except OSError:  # the child closed its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert process.wait(timeout=120) == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode(errors="replace")


def test_version_and_python_dash_m():
    done = run_clipedge("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"clipedge {version('clipedge')}", done
    import clipedge as package

    assert package.__version__ == version("clipedge")
    helped = run_clipedge("--help")
    assert helped.returncode == 0 and "classify" in helped.stdout


def test_dir_lists_the_lazy_public_names():
    names = dir(clipedge.runtime)
    assert {"load", "EmbeddingIndex", "Tokenizer", "CLIPRuntime", "BundleError"} <= set(names)
    assert "load" in clipedge.runtime.__all__


def test_a_missing_bundle_names_the_option(tmp_path):
    done = run_clipedge("classify", str(EVAL_IMAGE), "--labels", "a", "b", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "--bundle DIR" in done.stderr and "clipedge export" in done.stderr, \
        done.stderr
    done = run_clipedge("info", cwd=tmp_path)
    assert done.returncode == 2 and "clipedge info DIR" in done.stderr, done.stderr


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Ten images and one that cannot be read (a warning while the bar runs, with --on-error skip)."""
    folder = tmp_path_factory.mktemp("photos")
    for i in range(10):
        shutil.copy(EVAL_IMAGE, folder / f"{i:02d}.jpg")
    (folder / "05b.jpg").write_bytes(b"not an image")
    return folder


@pytest.mark.slow
def test_the_bar_is_drawn_for_a_person_and_warnings_go_above_it(small_bundle, photos):
    shown = on_a_terminal("classify", str(photos), "--labels", "a", "b", "--bundle", str(small_bundle),
                          "--on-error", "skip")
    assert "classify:" in shown and "11/11" in shown, shown
    warning = next(line for line in shown.split("\n") if "skipped" in line and "05b.jpg" in line)
    assert warning.split("\r")[-1].startswith("WARNING"), repr(warning)  # the bar cleared, then the warning


@pytest.mark.slow
def test_no_bar_with_quiet_or_into_a_log_file(small_bundle, photos, tmp_path):
    quiet = on_a_terminal("classify", str(photos), "--labels", "a", "b", "--bundle", str(small_bundle), "-q",
                          "--on-error", "skip")
    assert "classify:" not in quiet and "WARNING" not in quiet, quiet
    log = tmp_path / "log.txt"
    with log.open("w") as stderr:
        subprocess.run([sys.executable, "-m", "clipedge", "classify", str(photos), "--labels", "a", "b", "--bundle",
                        str(small_bundle), "--on-error", "skip"], stderr=stderr, stdout=subprocess.DEVNULL,
                       check=True, timeout=120)
    text = log.read_text()
    assert "\r" not in text and "classify:" not in text and "WARNING skipped" in text, repr(text)


def test_a_full_disk_anywhere_is_one_line():
    """An OSError no command turned into its own message (ENOSPC during an export's write, issue #33 case 13) is one
    line and exit 2, not a traceback; the command is run as a user would, with its failing step replaced."""
    program = (
        "import errno, sys\n"
        "import clipedge.runtime.cli.main as cli\n"
        "def full_disk(args):\n"
        "    raise OSError(errno.ENOSPC, 'No space left on device', '/data/bundle/image_fp32.tflite')\n"
        "cli.cmd_info = full_disk\n"
        "sys.exit(cli.main(['info', 'x']))\n")
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr == ("clipedge: error: No space left on device (/data/bundle/image_fp32.tflite) (-vv shows "
                           "where it failed)\n"), done.stderr
