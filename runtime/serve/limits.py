"""What one request to `clipedge serve` may ask for, and which hosts count as this machine only.

Standard library only: `clipedge serve --help` and the CLI's parser read the defaults from here without importing
starlette, numpy or Pillow.

Why each limit: the server holds one model for everyone, so one request must not be able to take the process's
memory (an upload of gigabytes, a decompression bomb of a PNG whose header claims 50,000 x 50,000 pixels) or hold the
model for long (thousands of texts in one call, `k` over the whole index). The tokenizer would truncate any text to
the model's context (77 tokens), so texts longer than a few hundred characters are a mistake or an attack either way.
"""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Limits", "is_loopback", "exposure_warning"]

MIB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Per-request limits; every one is a positive int, checked at construction (a 0 would refuse everything)."""

    max_upload_bytes: int = 20 * MIB  # one request body: a 12 MP phone JPEG is 3 to 8 MB, a PNG of it up to 36 MB
    max_pixels: int = 40_000_000  # width x height from the image header, refused before any pixel is decoded
    max_text_chars: int = 1000  # per text: CLIP reads 77 tokens, about 300 characters of English
    max_texts: int = 64  # texts per /embed/text request
    max_labels: int = 256  # labels per /classify request
    max_k: int = 100  # hits per /search request
    max_json_bytes: int = 1 * MIB  # a JSON body (texts): far above 64 x 1000 characters

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"limit {name} must be a positive integer, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_loopback(host: str) -> bool:
    """True when `host` only accepts connections from this machine: 127.0.0.0/8, ::1, or the name localhost.
    Anything else (0.0.0.0, ::, a LAN address, a host name that resolves elsewhere) is reachable from other
    machines; the server has no authentication, so that must be a choice, said out loud (`exposure_warning`)."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str) -> str | None:
    """The warning printed when the server binds a non-loopback host, or None for a loopback one."""
    if is_loopback(host):
        return None
    return (f"warning: clipedge serve is listening on {host}, reachable from other machines; it has no "
            "authentication and no TLS: anyone who can reach this port can use the model and read the index's "
            "file names. Put it behind a reverse proxy with authentication, or bind 127.0.0.1 (the default).")
