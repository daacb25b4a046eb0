"""Start the `clipedge serve` app on uvicorn, in this process, until SIGINT or SIGTERM.

The socket is bound here, before the server starts, so the URL printed is the one actually listening (`--port 0`
asks the system for a free port: tests and scripts read it from the first line on stdout). uvicorn installs its own
SIGINT/SIGTERM handlers while it runs: a signal stops accepting connections, lets the requests in flight finish (at
most `GRACE_SECONDS`), and returns; the caller's handlers come back afterwards.
"""

from __future__ import annotations

import errno
import logging
import socket
import sys
from typing import Any, TextIO

from clipedge.runtime.errors import ClipEdgeError
from clipedge.runtime.serve.limits import Limits, exposure_warning

__all__ = ["serve", "bind", "url_of", "GRACE_SECONDS"]

GRACE_SECONDS = 5
log = logging.getLogger("clipedge.serve")


def url_of(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{port}"


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (IPv4 or IPv6 as the host says), or ClipEdgeError in one line: uvicorn's own
    binding logs the OSError and exits the process, which would skip the CLI's message and exit status."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as err:
        raise ClipEdgeError(f"--host {host!r} is not an address this machine can listen on ({err})") from err
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart right after a stop gets its port back
    try:
        sock.bind(address)
    except OSError as err:
        sock.close()
        hint = ": another program listens there; choose another --port (0: any free one)" \
            if err.errno == errno.EADDRINUSE else ""
        raise ClipEdgeError(f"cannot listen on {url_of(host, port)}: {err.strerror or err}{hint}") from err
    return sock


def serve(runtime: Any, index: Any = None, host: str = "127.0.0.1", port: int = 8000, limits: Limits | None = None,
          cors_origins: tuple[str, ...] = (), workers: int = 4, log_level: str = "warning",
          out: TextIO | None = None) -> None:
    """Serve until stopped. Prints the exposure warning (stderr) for a non-loopback `host`, then one line with the
    URL (on `out`, default stdout) once the socket is bound."""
    import uvicorn

    from clipedge.runtime.serve.app import create_app

    out = out or sys.stdout
    warning = exposure_warning(host)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    app = create_app(runtime, index=index, limits=limits, cors_origins=cors_origins, workers=workers)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=log_level in ("info", "debug"),
                            lifespan="off", timeout_graceful_shutdown=GRACE_SECONDS, server_header=False,
                            timeout_keep_alive=30)
    sock = bind(host, port)  # a port in use or a bad address: one line, before anything else is said
    bound = sock.getsockname()[1]
    print(f"clipedge serve: listening on {url_of(host, bound)} (API docs: {url_of(host, bound)}/docs); "
          "Ctrl-C stops it", file=out, flush=True)
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])  # uvicorn raises the stopping signal again once stopped: the caller's handler
    finally:                        # then exits as it would (clipedge: 128 + SIGTERM, 130 for Ctrl-C)
        sock.close()
        print("clipedge serve: stopped", file=out, flush=True)
