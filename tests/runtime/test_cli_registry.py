"""The `clipedge` command finds the exporter's commands through the `clipedge.commands` entry point
(clipedge.runtime.cli.registry), never by importing clipedge.export; a command whose package cannot be loaded is a
stand-in that names the extra to install."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

import pytest

from clipedge.runtime.cli import main as cli
from clipedge.runtime.cli import registry


def test_the_installed_entry_point_registers_export_and_demo():
    names = {entry.name: entry.value for entry in metadata.entry_points(group=registry.GROUP)}
    assert names == {"export": "clipedge.export.commands:register"}
    choices = cli.build_parser()._subparsers._group_actions[0].choices  # noqa: SLF001
    assert {"export", "demo"} <= set(choices)
    assert "--precisions" in choices["export"].format_help()


@pytest.mark.parametrize("argv", [["export", "--out", "x"], ["demo", "train"]])
def test_without_the_exporters_entry_point_a_stand_in_names_the_extra(argv):
    """As on an install whose export package is gone: no `clipedge.commands` entry point at all."""
    code = ("import sys; from importlib import metadata; metadata.entry_points = lambda **kw: []; "
            "from clipedge.runtime.cli.main import main; sys.exit(main(sys.argv[1:]))")
    result = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"clipedge: error: `clipedge {argv[0]}` is not in this install: "
                                     "pip install 'clipedge[export]'")


@pytest.mark.parametrize("argv", [["export", "--samples", "0"], ["export", "--isolate", "maybe"],
                                  ["export", "--batch", "-1"], ["demo", "train", "--out", "x", "--steps", "0"]])
def test_bad_export_flags_are_refused_by_the_parser(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert "error: argument" in capsys.readouterr().err
