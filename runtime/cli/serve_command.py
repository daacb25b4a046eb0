"""`clipedge serve`: the local HTTP API (clipedge.runtime.serve; docs/serve.md).

Standard library only at module level: `clipedge --help` builds this parser without importing starlette or uvicorn,
which are the `serve` extra's and may not be installed; `cmd_serve` says how to get them in one line.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from clipedge.runtime.cli.arg_types import positive_int
from clipedge.runtime.errors import ClipEdgeError
from clipedge.runtime.serve.limits import MIB, Limits

__all__ = ["add_serve_parser", "cmd_serve", "MISSING_EXTRA"]

MISSING_EXTRA = "clipedge serve needs starlette and uvicorn: pip install 'clipedge[serve]'"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 0..65535 (0: any free port), got {text!r}")
    return value


def _megabytes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of MiB, got {text!r}")
    return value


def add_serve_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    """`clipedge serve`; `parents` give --bundle, --precision, --format, --accelerator, --threads, --decode."""
    d = Limits()
    p = sub.add_parser("serve", parents=parents,
                       help="a local HTTP API: embed texts and images, classify, search an index (docs/serve.md)")
    p.add_argument("--index", metavar="DIR", help="an index directory to search (clipedge index build); its model "
                                                  "picks --precision/--format when neither is given")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to listen on (default: {DEFAULT_HOST}, this machine only; any other is reachable "
                        "from the network, has no authentication, and is warned about)")
    p.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"default: {DEFAULT_PORT}; 0: any free port")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="an origin whose web pages may call the API (e.g. http://127.0.0.1:8080, where `clipedge "
                        "web`'s site is served); repeatable; default: none")
    p.add_argument("--workers", type=positive_int, default=4,
                   help="requests decoding or running a model at once (default: 4); model calls still run one at a "
                        "time per model")
    p.add_argument("--max-upload-mb", type=_megabytes, default=d.max_upload_bytes / MIB,
                   help=f"largest request body in MiB (default: {d.max_upload_bytes // MIB})")
    p.add_argument("--max-pixels", type=positive_int, default=d.max_pixels,
                   help=f"largest image, width x height, read from its header (default: {d.max_pixels})")
    p.add_argument("--max-text-chars", type=positive_int, default=d.max_text_chars,
                   help=f"longest text or label in characters (default: {d.max_text_chars})")
    p.add_argument("--max-texts", type=positive_int, default=d.max_texts,
                   help=f"texts per /embed/text request (default: {d.max_texts})")
    p.add_argument("--max-k", type=positive_int, default=d.max_k, help=f"hits per /search (default: {d.max_k})")
    p.set_defaults(func=cmd_serve)


def _limits(args: argparse.Namespace) -> Limits:
    return Limits(max_upload_bytes=int(args.max_upload_mb * MIB), max_pixels=args.max_pixels,
                  max_text_chars=args.max_text_chars, max_texts=args.max_texts, max_k=args.max_k)


def _open_index(args: argparse.Namespace):
    """The index, with --bundle, --precision and --format taken from it when not given (its own scores), as
    `search`."""
    if not args.index:
        return None
    from clipedge.runtime.cli.index_commands import index_defaults, recorded_bundle
    from clipedge.runtime.library import open_index

    if not Path(args.index).is_dir():
        raise ClipEdgeError(f"index directory {args.index} does not exist (clipedge index build IMAGES -o DIR)")
    index = open_index(args.index)
    index_defaults(args, index.model, recorded_bundle(index))
    return index


def _check_same_model(index, runtime) -> None:
    """Refuse at start, not at every search, an index whose rows another checkpoint made."""
    made_by = (index.model or {}).get("sha256")
    loaded = runtime.manifest.data.get("model", {}).get("sha256")
    if made_by and loaded and made_by != loaded:
        raise ClipEdgeError(f"index {made_by[:12]} was built with another model than the bundle's ({loaded[:12]}): "
                            "rebuild it with this bundle, or serve the bundle it was built with")


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as err:
        raise ClipEdgeError(MISSING_EXTRA) from err
    from clipedge.runtime.cli.commands import load_runtime
    from clipedge.runtime.errors import BundleError
    from clipedge.runtime.serve.run import serve

    limits = _limits(args)
    index = _open_index(args)
    runtime = load_runtime(args)
    if index is not None:
        _check_same_model(index, runtime)
    for tower in ("text", "image"):  # opened now: the first request is not the one that waits, and a broken file
        try:                         # stops the start rather than a request
            runtime.runner(tower)
        except BundleError:
            pass  # a bundle without that tower: its endpoints answer with the runtime's error
    verbose = args.verbose + getattr(args, "verbose_after", 0)
    serve(runtime, index=index, host=args.host, port=args.port, limits=limits,
          cors_origins=tuple(args.cors_origin), workers=args.workers,
          log_level="debug" if verbose > 1 else "info" if verbose == 1 else "warning")
    return 0
