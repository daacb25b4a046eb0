"""Quiet by default: the interpreters' and TensorFlow's native logs stay off the terminal unless the user asks.

LiteRT writes dozens of INFO/WARNING lines from C++ straight to file descriptor 2 each time a model is opened, first
run and torn down (environment creation, NPU and OpenVINO plugins not found, accelerators registered and destroyed),
and its GPU setup prints to fd 1; TensorFlow's converters write absl lines the same way. No Python-level switch
reaches them (`TF_CPP_MIN_LOG_LEVEL` silences TensorFlow's own C++ logs, not LiteRT's). So the calls that log run
inside `native_logs_hidden`: fds 1 and 2 point at a capture file while Python's own `sys.stdout` / `sys.stderr`
(and logging handlers that write to them) keep the terminal through duplicates of the old descriptors. What was
captured is kept for error messages (`recent_native_lines`), never printed. The descriptors are the process's: a
C-level write from another thread during such a call is captured too (Python-level prints are not: they go through
the duplicates).

The level: `set_log_level` (the CLI's -q / -v / -vv call it), else `$CLIPEDGE_LOG`, else "warning". At "info" or
"debug" nothing is captured (native lines go to stderr, still never stdout) and clipedge's own logger shows that
level (why an interpreter was skipped is "info"). Standard library only: `import clipedge.runtime` stays cheap.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import functools
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from clipedge.runtime.errors import InputError

__all__ = ["LOG_ENV", "LEVELS", "set_log_level", "log_level", "native_logs_shown", "native_logs_hidden",
           "quiet_first_call", "release_quietly", "recent_native_lines", "quiet_tensorflow"]

LOG_ENV = "CLIPEDGE_LOG"
LEVELS = {"quiet": logging.ERROR, "error": logging.ERROR, "warning": logging.WARNING, "info": logging.INFO,
          "debug": logging.DEBUG}

F = TypeVar("F", bound=Callable[..., Any])

_explicit: int | None = None  # set_log_level's level; None: read $CLIPEDGE_LOG
_lock = threading.RLock()
_depth = 0
_saved_fds: dict[int, int] = {}  # 1, 2 -> a duplicate of what they were before the outermost block
_swapped: list[tuple[str, Any]] = []  # ("stdout" | "stderr", the stream object it replaced)
_repointed: list[tuple[logging.StreamHandler, Any]] = []
_capture: Any = None
_recent: collections.deque[str] = collections.deque(maxlen=200)
_atexit_registered = False


def _parse(level: str | int) -> int:
    if isinstance(level, bool) or not isinstance(level, (str, int)):
        raise InputError(f"log level {level!r}: expected one of {sorted(LEVELS)} or a logging level number")
    if isinstance(level, int):
        return level
    text = level.strip().lower()
    if text.isdigit():
        return int(text)
    if text not in LEVELS:
        raise InputError(f"log level {level!r}: expected one of {sorted(LEVELS)} (or a logging level number)")
    return LEVELS[text]


def log_level() -> int:
    """The level in force: set_log_level's, else $CLIPEDGE_LOG's (an unreadable value counts as "warning")."""
    if _explicit is not None:
        return _explicit
    try:
        return _parse(os.environ.get(LOG_ENV, "warning") or "warning")
    except InputError:
        return logging.WARNING


def set_log_level(level: str | int) -> None:
    """"quiet" (errors only), "warning" (the default), "info" (+ the interpreters' native logs, + which interpreter
    runs each model and why others were skipped) or "debug"; or a `logging` level number. Applies to clipedge's
    logger and to every model opened afterwards; TensorFlow's C++ logs only follow if it is not imported yet."""
    global _explicit
    _explicit = _parse(level)
    logger = logging.getLogger("clipedge")
    logger.setLevel(_explicit)
    if _explicit < logging.WARNING and not logger.handlers and not logging.getLogger().handlers:
        # Python's last-resort handler shows warnings only: give info/debug a place to go.
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("clipedge %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
    if "tensorflow" not in sys.modules:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0" if native_logs_shown() else "2"


_env_applied = False


def _env_level_once() -> None:
    """$CLIPEDGE_LOG=info|debug also needs clipedge's logger at that level, with somewhere to write."""
    global _env_applied
    if _env_applied or _explicit is not None:
        return
    _env_applied = True
    if os.environ.get(LOG_ENV) and log_level() < logging.WARNING:
        set_log_level(log_level())


def native_logs_shown() -> bool:
    return log_level() <= logging.INFO


def quiet_tensorflow() -> None:
    """Before TensorFlow is imported: its C++ banner and INFO/WARNING lines off unless logs were asked for (an
    explicit TF_CPP_MIN_LOG_LEVEL wins)."""
    if not native_logs_shown():
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.getLogger("tensorflow").setLevel(logging.ERROR if log_level() > logging.INFO else log_level())


def recent_native_lines(count: int = 8) -> list[str]:
    """The last native log lines captured (newest last): what an error message can quote."""
    return list(_recent)[-count:]


def _on_fd(stream: Any, fd: int) -> bool:
    try:
        return stream is not None and stream.fileno() == fd
    except (AttributeError, OSError, ValueError):  # replaced by a non-file (pytest, IDEs): not ours to move
        return False


def _enter(hide: bool) -> None:
    """Outermost block: fd 2 into the capture file when hiding; fd 1 always away from stdout (LiteRT's GPU setup
    prints there: a `--json` reader must get JSON only). Python's own streams, and logging handlers writing to them,
    keep where they were through duplicates of the old descriptors."""
    global _capture, _atexit_registered
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    if hide and _capture is None:
        _capture = tempfile.TemporaryFile(prefix="clipedge-native-")
    if hide:
        _capture.seek(0)
        _capture.truncate()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    _saved_fds.update(saved)
    if hide:
        os.dup2(_capture.fileno(), 2)
        os.dup2(_capture.fileno(), 1)
    else:
        os.dup2(saved[2], 1)  # shown, on stderr, never on stdout
    for name, fd in (("stdout", 1), ("stderr", 2)):
        old = getattr(sys, name)
        if (fd == 1 or hide) and _on_fd(old, fd):
            new = os.fdopen(os.dup(saved[fd]), "w", buffering=1, encoding=old.encoding or "utf-8",
                            errors="backslashreplace")
            setattr(sys, name, new)
            _swapped.append((name, old))
            _repoint_handlers(old, new)
    if not _atexit_registered:
        atexit.register(_silence_at_exit)
        _atexit_registered = True


def _repoint_handlers(old: Any, new: Any) -> None:
    """Handlers made before the block (logging.basicConfig) hold the old stream object, which writes to the fd."""
    loggers = [logging.getLogger(), *(v for v in logging.Logger.manager.loggerDict.values()
                                      if isinstance(v, logging.Logger))]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) is old:
                handler.setStream(new)
                _repointed.append((handler, old))


def _exit() -> None:
    for handler, old in reversed(_repointed):
        handler.setStream(old)
    _repointed.clear()
    for name, old in reversed(_swapped):
        current = getattr(sys, name)
        with contextlib.suppress(OSError, ValueError):
            current.flush()
            current.close()
        setattr(sys, name, old)
    _swapped.clear()
    for stream in (sys.stdout, sys.stderr):  # what a stale handle buffered goes with the capture
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()
    for fd, saved in sorted(_saved_fds.items()):
        os.dup2(saved, fd)
        os.close(saved)
    _saved_fds.clear()
    if _capture is not None and _capture.tell():
        _capture.seek(0)
        text = _capture.read().decode("utf-8", errors="replace")
        _recent.extend(line for line in text.splitlines() if line.strip())
        _capture.seek(0)
        _capture.truncate()


def _silence_at_exit() -> None:
    """LiteRT destroys its accelerators, and logs it, while the interpreter shuts down, after this runs: fd 2 goes
    to /dev/null for good and Python's sys.stderr keeps the terminal, so late Python errors still show."""
    if native_logs_shown() or _depth:
        return
    with contextlib.suppress(OSError, ValueError, AttributeError):
        if sys.stderr is not None:
            sys.stderr.flush()
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        if _on_fd(sys.stderr, 2):
            sys.stderr = os.fdopen(saved, "w", buffering=1, errors="backslashreplace")
        else:
            os.close(saved)


@contextlib.contextmanager
def native_logs_hidden() -> Iterator[None]:
    """Native logs written inside the block are captured (kept for `recent_native_lines`), unless the level shows
    them; either way none reach stdout. Re-entrant and shared by threads (fds 1 and 2 are one per process: the
    outermost block sets and restores them). Usable as a decorator."""
    global _depth
    _env_level_once()
    with _lock:
        entered = False
        if _depth == 0:
            try:
                _enter(hide=not native_logs_shown())
                entered = True
            except (OSError, ValueError):  # no fd 1/2 (a daemon), no temp dir: logs stay where they are
                _rollback()
        else:
            entered = True
        if entered:
            _depth += 1
    try:
        yield
    finally:
        if entered:
            with _lock:
                _depth -= 1
                if _depth == 0:
                    _exit()


def _rollback() -> None:
    with contextlib.suppress(OSError, ValueError):
        _exit()


def quiet_first_call(method: F) -> F:
    """A method whose first call per object sets up native state, and logs it (LiteRT creates an environment on a
    model's first run): that call runs inside `native_logs_hidden`, later ones pay nothing."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if self.__dict__.get("_clipedge_first_call_done"):
            return method(self, *args, **kwargs)
        with native_logs_hidden():
            result = method(self, *args, **kwargs)
        self.__dict__["_clipedge_first_call_done"] = True
        return result

    return wrapper  # type: ignore[return-value]


def release_quietly(state: dict[str, Any]) -> None:
    """Drop an object's attributes inside `native_logs_hidden`: LiteRT logs when a model is destroyed. For __del__,
    which may run while the interpreter shuts down, so it never raises."""
    try:
        with native_logs_hidden():
            state.clear()
    except Exception:  # noqa: BLE001 - finalization: module globals may already be gone
        state.clear()
