"""Subcommands that other packages add to `clipedge`, found through the `clipedge.commands` entry point group.

The runtime never imports the exporter (docs/architecture.md): `clipedge export` and `clipedge demo train` are
registered by `clipedge.export.commands:register`, declared in pyproject.toml. Each entry point names a function
`register(subparsers, parents)`. An entry point that cannot be loaded (its package removed, a broken install) is
logged at info and its commands are missing; `KNOWN_EXTRAS` says what to install for the names users try.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from importlib import metadata

__all__ = ["GROUP", "KNOWN_EXTRAS", "CommandParents", "add_registered_commands"]

GROUP = "clipedge.commands"
# Commands that live in an extra, for the message when their entry point cannot be loaded.
KNOWN_EXTRAS = {"export": "export", "demo": "export"}

log = logging.getLogger("clipedge")


@dataclass(frozen=True)
class CommandParents:
    """The shared option groups a registered command builds on: -v/-q after the subcommand (`verbosity`), and
    those plus --json (`common`)."""

    verbosity: argparse.ArgumentParser
    common: argparse.ArgumentParser


def add_registered_commands(sub: argparse._SubParsersAction, parents: CommandParents) -> None:
    """Call every `clipedge.commands` entry point's register function; stand-ins for known commands whose
    package could not be loaded, so `clipedge export` says what to install instead of 'invalid choice'."""
    missing = set(KNOWN_EXTRAS)
    for entry in sorted(metadata.entry_points(group=GROUP), key=lambda e: e.name):
        try:
            register = entry.load()
        except ImportError as err:
            log.info("clipedge command group %r not loaded: %s", entry.name, err)
            continue
        register(sub, parents)
        missing -= set(sub.choices)
    for name in sorted(missing):
        stand_in = sub.add_parser(name, parents=[parents.common], add_help=True,
                                  help=f"(needs the '{KNOWN_EXTRAS[name]}' extra)")
        stand_in.set_defaults(func=_needs_extra(name), stand_in=True)  # main() lets it take any arguments


def _needs_extra(name: str):
    def run(args: argparse.Namespace) -> int:
        from clipedge.runtime.errors import ClipEdgeError

        raise ClipEdgeError(f"`clipedge {name}` is not in this install: pip install 'clipedge[{KNOWN_EXTRAS[name]}]'")

    return run
