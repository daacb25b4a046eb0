"""Command-line options declared once, on the settings dataclass they fill.

A settings field that the CLI offers carries an `Option` in its metadata (`option(default, help=...)`); the CLI's
flag, choices, type, help and default all come from there (`add_options`), and the parsed flags go back into the
dataclass by name (`given_options`). Flags the user did not give are left out, so the dataclass's own default is the
only default: adding an option to `clipedge export` is one field in `ExportSettings`.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipedge.runtime.cli.arg_types import non_negative_int, positive_int  # re-exported for the settings

__all__ = ["Option", "option", "add_options", "given_options", "positive_int", "non_negative_int", "comma_list"]


@dataclass(frozen=True)
class Option:
    """How a settings field appears on the command line."""

    help: str
    flag: str | None = None  # default: --field-name
    metavar: str | None = None
    parse: Callable[[str], Any] | None = None  # argparse `type`: the text -> the field's value (or its raw form)
    choices: Sequence[str] | None = None  # shown and enforced (for single words)
    listing: Sequence[str] | None = None  # a comma-separated list of these: shown (the dataclass checks them)
    negate: bool = False  # a bool field defaulting to True: the flag turns it off (--no-gpu)
    default_text: str | None = None  # the default as help shows it, where the field's own value says too little


def option(default: Any, help: str, **cli: Any) -> Any:
    """A dataclass field with `default` that the CLI offers as described by Option(help, **cli)."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("mutable defaults are not allowed on settings fields")
    return dataclasses.field(default=default, metadata={"cli": Option(help, **cli)})


def _shown(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    if isinstance(value, Path):
        return f"./{value}" if not value.is_absolute() else str(value)
    return str(value)


def add_options(parser: argparse.ArgumentParser, settings: type) -> None:
    """One argparse option per field of the `settings` dataclass that carries an Option."""
    for field in dataclasses.fields(settings):
        spec: Option | None = field.metadata.get("cli")
        if spec is None:
            continue
        flag = spec.flag or "--" + field.name.replace("_", "-")
        help_text = spec.help
        if spec.listing is not None:
            help_text += f"; comma-separated, from {', '.join(spec.listing)}"
        if isinstance(field.default, bool):
            action = "store_false" if spec.negate else "store_true"
            parser.add_argument(flag, dest=field.name, action=action, default=argparse.SUPPRESS, help=help_text)
            continue
        if spec.default_text is not None or field.default is not None:
            help_text += f" (default: {spec.default_text or _shown(field.default)})"
        parser.add_argument(flag, dest=field.name, type=spec.parse, choices=spec.choices, metavar=spec.metavar,
                            default=argparse.SUPPRESS, help=help_text)


def given_options(args: argparse.Namespace, settings: type) -> dict[str, Any]:
    """The options the user gave, by field name, ready for `settings(**given)`."""
    return {field.name: getattr(args, field.name) for field in dataclasses.fields(settings)
            if "cli" in field.metadata and hasattr(args, field.name)}


def comma_list(text: str) -> tuple[str, ...]:
    """'a, b' -> ('a', 'b'); the settings dataclass checks the names and says which are allowed."""
    return tuple(part.strip() for part in text.split(",") if part.strip())
