"""argparse types shared by every `clipedge` command, the exporter's included (clipedge.export.options): each one
names the bad text in its message. Standard library only: `clipedge --help` stays cheap."""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["int_at_least", "positive_int", "non_negative_int"]


def int_at_least(minimum: int, what: str) -> Callable[[str], int]:
    """An argparse type: an integer >= minimum, with the bad text in the message."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    return parse


positive_int = int_at_least(1, "a positive integer")
non_negative_int = int_at_least(0, "an integer >= 0")
