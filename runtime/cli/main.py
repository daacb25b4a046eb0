"""The `clipedge` command's parser and process setup (what each subcommand does is clipedge.runtime.cli.commands):
on-device subcommands (classify, embed, index, search, info, bench) that need only the
runtime; `report`, which needs only the runtime too (plus matplotlib for its PNG, torch for its baseline); and the
commands other packages register (clipedge.runtime.cli.registry): the exporter's `export` and `demo train`, which
need the `export` extra (TensorFlow) and say how to get it when missing.

Interpreters (LiteRT's C++ core, TensorFlow) write INFO lines straight to file descriptor 2. Unless -v is given
(anywhere: before or after the subcommand; -vv for debug, -q for errors only), that descriptor is redirected to a
temporary file for the duration of the command while Python's own stderr (progress bars, warnings, errors) keeps
the terminal; if the command fails, the captured native log's tail is shown with the error.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import clipedge
from clipedge.runtime.cli.arg_types import non_negative_int, positive_int
from clipedge.runtime.cli.batches import ON_ERROR_OPTION
from clipedge.runtime.cli.commands import (
    DEFAULT_BUNDLE,
    cmd_bench,
    cmd_classify,
    cmd_embed,
    cmd_info,
    cmd_report,
    cmd_web,
)
from clipedge.runtime.cli.index_commands import add_index_parsers
from clipedge.runtime.cli.registry import CommandParents, add_registered_commands
from clipedge.runtime.cli.serve_command import add_serve_parser
from clipedge.runtime.errors import BackendError, ClipEdgeError
from clipedge.runtime.logs import recent_native_lines, set_log_level
from clipedge.runtime.manifest import ARTIFACT_TOWERS, FORMATS
from clipedge.runtime.precisions import PRECISION_NAMES
from clipedge.runtime.prompts import DEFAULT_TEMPLATE

__all__ = ["main", "build_parser"]

VERBOSE_HELP = "-v: info logs, the interpreters' native logs and why one was skipped; -vv: debug"
QUIET_HELP = "errors only"
PRECISION_HELP = (f"{', '.join(PRECISION_NAMES)} (default: the bundle's default, chosen at export: the fastest "
                  "that passed its fidelity floor; `clipedge info` shows it)")

log = logging.getLogger("clipedge")


# ---- helpers ----------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def native_stderr_captured(enabled: bool) -> Iterator[Any]:
    """Send fd 2 to a temp file; keep sys.stderr on the real terminal. The file has no name from the start
    (`TemporaryFile`): a command killed or crashed mid-way leaves nothing in the temp directory."""
    if not enabled:
        yield None
        return
    sys.stderr.flush()
    saved = os.dup(2)
    capture = tempfile.TemporaryFile(prefix="clipedge-native-", suffix=".log")
    os.dup2(capture.fileno(), 2)
    original_stderr = sys.stderr
    sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1, encoding=original_stderr.encoding or "utf-8",
                           errors="backslashreplace")
    try:
        yield capture
    finally:
        # fd 2 stays on the capture file: interpreters log again when they are torn down at process exit.
        # Python's sys.stderr goes back to the terminal through the saved descriptor.
        sys.stderr.flush()
        sys.stderr = os.fdopen(saved, "w", buffering=1, encoding=original_stderr.encoding or "utf-8",
                               errors="backslashreplace")
        capture.close()


def native_log_tail(capture: Any, lines: int = 8) -> str:
    if capture is None:
        return ""
    try:  # pread: fd 2 shares this file's offset, and must keep appending where it was
        data = os.pread(capture.fileno(), max(os.fstat(capture.fileno()).st_size, 1), 0)
    except (OSError, ValueError):
        data = b""
    # what the runtime captured around the failing call (clipedge.runtime.logs), then this command's own capture
    text = recent_native_lines(lines * 4) + data.decode(errors="replace").strip().splitlines()
    interesting = [line for line in text if not line.startswith("INFO:")]
    return "\n".join(interesting[-lines:])


def _int_list(text: str) -> list[int]:
    """'1,4,8' -> [1, 4, 8]: positive integers, comma-separated."""
    parts = [part.strip() for part in text.split(",")]
    try:
        values = [int(part) for part in parts]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"must be comma-separated positive integers such as 1,4,8, got {text!r}")
    return list(dict.fromkeys(values))


def _batch_size(text: str) -> int:
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"is the larger batch timed besides batch 1: must be >= 2, got {text!r}")
    return value


# ---- parser -----------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clipedge", description="CLIP on the edge: export bundles, run them.")
    parser.add_argument("--version", action="version", version=f"clipedge {clipedge.__version__}")
    parser.add_argument("--verbose", "-v", action="count", default=0, help=VERBOSE_HELP)
    parser.add_argument("--quiet", "-q", action="store_true", help=QUIET_HELP)
    # -v/-q after the subcommand too: the subparser's own dests, so they never reset what came before it
    verbosity = argparse.ArgumentParser(add_help=False)
    verbosity.add_argument("--verbose", "-v", dest="verbose_after", action="count", default=argparse.SUPPRESS,
                           help=VERBOSE_HELP)
    verbosity.add_argument("--quiet", "-q", dest="quiet_after", action="store_true", default=argparse.SUPPRESS,
                           help=QUIET_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    common = argparse.ArgumentParser(add_help=False, parents=[verbosity])
    common.add_argument("--json", action="store_true", help="machine-readable output")
    run = argparse.ArgumentParser(add_help=False, parents=[common])
    run.add_argument("--bundle", default=DEFAULT_BUNDLE, help=f"bundle directory (default: ./{DEFAULT_BUNDLE})")
    run.add_argument("--precision", help=PRECISION_HELP)
    run.add_argument("--format", choices=FORMATS, help="default: the bundle's first")
    run.add_argument("--accelerator", choices=("cpu", "gpu", "auto"), default="cpu")
    run.add_argument("--threads", type=int,  # checked by load(): 1..the usable cores, one line otherwise
                     help="interpreter threads, 1 to the usable cores (default: the interpreter's choice)")
    run.add_argument("--decode", choices=("fast", "exact"), default="fast",
                     help="how image files are read: fast (default) shrinks large photos while decoding (JPEG DCT "
                          "scaling), exact equals HF CLIPImageProcessor bit for bit (docs/speed.md)")
    run.add_argument("--decode-threads", type=non_negative_int, metavar="N",
                     help="threads decoding images ahead of the model (default: the usable cores, at most 4; "
                          "0: decode in the main thread)")

    p = sub.add_parser("classify", parents=[run], help="zero-shot classify images against labels")
    p.add_argument("images", nargs="+", help="image files or directories")
    p.add_argument("--labels", nargs="+", help="labels, space- or comma-separated")
    p.add_argument("--labels-file", help="a file with one label per line")
    p.add_argument("--template", default=DEFAULT_TEMPLATE, help="prompt template, {} is the label")
    p.add_argument("--top", type=positive_int, default=3, help="labels to show per image (at least 1)")
    p.add_argument("--on-error", **ON_ERROR_OPTION)
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("embed", parents=[run], help="write L2-normalized embeddings and their rows' order")
    p.add_argument("images", nargs="*", help="image files or directories")
    p.add_argument("--text", nargs="+", help="texts to embed instead of images")
    p.add_argument("-o", "--output", required=True,
                   help="NAME.npy (+ NAME.json: one path or text per row) or NAME.npz (both)")
    p.add_argument("--on-error", **ON_ERROR_OPTION)
    p.set_defaults(func=cmd_embed)

    add_index_parsers(sub, run, verbosity)  # index build/update/dupes, search

    p = sub.add_parser("info", parents=[common], help="show a bundle's models, sizes and fidelity")
    p.add_argument("bundle", nargs="?", default=DEFAULT_BUNDLE)
    p.add_argument("--verify", action="store_true",
                   help="check every file the manifest names: inside the bundle, sha256 as recorded (exit 2 if not)")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("bench", parents=[common], help="latency and throughput of one model across batches and threads")
    p.add_argument("target", help="a bundle directory (pick the model with --tower/--format/--precision) or one "
                                  ".tflite/.onnx file")
    p.add_argument("--tower", choices=ARTIFACT_TOWERS, help="default: image")
    p.add_argument("--format", choices=FORMATS, help="default: the bundle's first")
    p.add_argument("--precision", help=PRECISION_HELP)
    p.add_argument("--variant", default="default",
                   help="'gpu' for the GPU variant (timed on LiteRT's GPU accelerator when there is one)")
    p.add_argument("--accelerator", choices=("cpu", "gpu", "auto"),
                   help="default: auto for the gpu variant, cpu for the others")
    p.add_argument("--batch", type=_int_list, default=[1, 8], help="comma-separated batch sizes (default: 1,8)")
    p.add_argument("--threads", type=_int_list, default=None,
                   help="comma-separated thread counts (default: the usable cores)")
    p.add_argument("--repeats", type=positive_int, default=20, help="timed runs per measurement (default: 20)")
    p.add_argument("--warmup", type=non_negative_int, default=2, help="untimed runs first (default: 2)")
    p.add_argument("--photos", metavar="DIR",
                   help="time real image files end to end (decode included, as index build runs them) beside the "
                        "model alone; TARGET must be a bundle; --repeats counts passes over all the photos")
    p.add_argument("--decode", default="fast,exact", help="with --photos: decode modes to time (default: fast,exact)")
    p.add_argument("--decode-threads", type=non_negative_int, metavar="N",
                   help="with --photos: threads decoding ahead of the model (default: the usable cores, at most 4)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("report", parents=[common],
                       help="measure every model of a bundle: size, speed, memory, fidelity, accuracy (md/json/png)")
    p.add_argument("bundle", help="bundle directory")
    p.add_argument("--eval", help="labelled images, one subfolder per class named after the label (red_circle/); "
                                  "default: the shipped calibration_data/eval when installed")
    p.add_argument("--pairs", help="TSV of image path<TAB>caption for text-to-image recall@1/@5")
    p.add_argument("--threads", type=positive_int, help="threads for every model and PyTorch (default: usable cores)")
    p.add_argument("--batch", type=_batch_size, default=8, help="the larger batch timed besides 1 (default: 8)")
    p.add_argument("--repeats", type=positive_int, default=20, help="timed runs per latency (default: 20)")
    p.add_argument("--warmup", type=non_negative_int, default=2, help="untimed runs first (default: 2)")
    p.add_argument("--out", help="output directory (default: ./BUNDLENAME-report; never inside the bundle unless "
                                 "given)")
    p.add_argument("--precisions", help="only these precisions, plus fp32 as the reference (not recommended); "
                                        f"comma-separated, from {', '.join(PRECISION_NAMES)} (default: all)")
    p.add_argument("--formats", help=f"only these formats; comma-separated, from {', '.join(FORMATS)} (default: all)")
    p.add_argument("--baseline-checkpoint", help="HF checkpoint directory for the PyTorch baseline (default: the "
                                                 "manifest's model source when it is a local directory)")
    p.add_argument("--no-baseline", action="store_true", help="skip the PyTorch baseline")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--template", default=DEFAULT_TEMPLATE, help="zero-shot prompt template, {} is the label")
    p.add_argument("--note", help="a line shown at the top of report.md (e.g. 'random weights')")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("web", parents=[common],
                       help="a static demo site running the bundle's models in the browser, free-text search included "
                            "(docs/web.md)")
    p.add_argument("bundle", nargs="?", default=DEFAULT_BUNDLE, help=f"bundle directory (default: ./{DEFAULT_BUNDLE})")
    p.add_argument("--out", required=True, help="site directory to write (must not exist)")
    p.add_argument("--precision", help="of the models the page runs (default: dynamic-int8 when the bundle has it)")
    p.add_argument("--mediapipe", metavar="DIR",
                   help="an npm install (node_modules) of @mediapipe/tasks-vision and @litertjs/core (default: "
                        "./node_modules, then the clone's runtime/web_page/node_modules)")
    p.add_argument("--gallery", help="images to search: a directory, or a TSV of image path<TAB>caption "
                                     "(default: one shipped eval image per demo class)")
    p.add_argument("--queries", metavar="FILE", help="more search texts, one per line (labels and captions are in)")
    p.add_argument("--server", metavar="URL",
                   help="a `clipedge serve` of the same model that the page's search asks first (docs/serve.md)")
    p.set_defaults(func=cmd_web)

    add_serve_parser(sub, [run])

    add_registered_commands(sub, CommandParents(verbosity=verbosity, common=common))  # export, demo train

    return parser


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


@contextlib.contextmanager
def _bars_keep_logs_apart(progress: bool) -> Iterator[None]:
    """While a tqdm bar may be on screen, log lines (warnings) are written above it, not into it."""
    if not progress:
        yield
        return
    try:
        from tqdm.contrib.logging import logging_redirect_tqdm
    except ImportError:  # a runtime-only install: the plain counter, which ends its line before anything else
        yield
        return
    with logging_redirect_tqdm():
        yield


def _stdout_gone() -> None:
    """The reader closed the pipe: end quietly, as `head` expects; what Python would flush at exit goes nowhere."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    # SystemExit unwinds `with` blocks, so an export being stopped removes its temporary bundle directory.
    raise SystemExit(128 + signum)


def _unencodable_escaped() -> None:
    """A label or path the terminal's encoding lacks (`PYTHONIOENCODING=ascii`, a C locale) prints as `caf\\xe9`
    rather than ending the command with a UnicodeEncodeError traceback; stdout and stderr alike."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError, OSError):  # replaced by a caller, or closed
            stream.reconfigure(errors="backslashreplace")


def main(argv: Sequence[str] | None = None) -> int:
    _unencodable_escaped()
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "stand_in", False):  # a stand-in (registry) only says what to install
        parser.parse_args(argv)  # argparse's own error for the unknown arguments
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the exact command, for reports
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    verbose = args.verbose + getattr(args, "verbose_after", 0)
    level = logging.ERROR if args.quiet or getattr(args, "quiet_after", False) else \
        {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    # third-party loggers stop at info: -vv is clipedge's debug, not Pillow's chunk-by-chunk PNG trace
    logging.basicConfig(level=max(level, logging.INFO), format="%(levelname)s %(message)s")
    set_log_level(level)
    # a progress bar only for a person watching: not with -q or --json, not drawn into a log file or a pipe
    args.progress = level <= logging.WARNING and not getattr(args, "json", False) and _is_terminal(sys.stderr)
    with native_stderr_captured(level > logging.INFO) as native_log:
        for handler in logging.getLogger().handlers:  # the terminal, not the capture file
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.setStream(sys.stderr)
        with _bars_keep_logs_apart(args.progress):  # after the handlers point at the terminal: it swaps those
            return _run(args, native_log)


def _run(args: argparse.Namespace, native_log: Any) -> int:
    """The command, with every failure a user can cause turned into one line and an exit status."""
    try:
        status = args.func(args)
        sys.stdout.flush()  # here, not at exit: a reader that left (`| head -1`) is handled below
        return status
    except BrokenPipeError:
        _stdout_gone()
        return 128 + signal.SIGPIPE
    except ClipEdgeError as err:
        tail = native_log_tail(native_log) if isinstance(err, BackendError) else ""
        print(f"clipedge: error: {err}" + (f"\n(interpreter log:)\n{tail}" if tail else ""), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("clipedge: interrupted", file=sys.stderr)
        return 130
    except OSError as err:  # a full disk, a read-only or vanished path met where no command said it more precisely
        log.debug("the failing call", exc_info=True)  # -vv: the traceback
        where = f" ({err.filename})" if err.filename else ""
        print(f"clipedge: error: {err.strerror or err}{where} (-vv shows where it "
              "failed)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
