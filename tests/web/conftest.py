"""What the `clipedge web` tests share: the demo bundle with MediaPipe models, the demo bundle without them (what
README's quick start exports, at two precisions), the browser tools (or why they are missing), stand-ins for the npm
packages, and a loopback static server for a site.

The browser test needs Debian's chromium, Node.js >= 20 and `npm ci --prefix runtime/web_page`
(`bash .ci/web-setup.sh`). On a developer's machine without them it skips and says what is missing; in CI
(CI=true) a missing tool fails the test, since a browser test that silently skips there proves nothing.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import missing_tool as skip_or_fail
from tests.conftest import node_major

REPO = Path(__file__).resolve().parents[2]
WEB = REPO / "runtime" / "web_page"
NODE_MODULES = WEB / "node_modules"
MEDIAPIPE_NPM = NODE_MODULES / "@mediapipe" / "tasks-vision"
LABELS_FILE = REPO / "calibration_data" / "demo_labels.txt"
EVAL_DIR = REPO / "calibration_data" / "eval"
SERVER_LIFETIME_S = 600  # the static server stops itself after this, whatever happens to the test


def missing_tool(reason: str) -> None:
    """Skip on a developer's machine; fail in CI, where .ci/web-setup.sh must have installed everything."""
    skip_or_fail(f"{reason} (bash .ci/web-setup.sh installs what the browser test needs)")


@dataclass(frozen=True)
class BrowserTools:
    chromium: Path
    node: Path


@pytest.fixture(scope="session")
def browser_tools() -> BrowserTools:
    chromium = os.environ.get("CLIPEDGE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).is_file():
        missing_tool("Debian's chromium is not installed (apt-get install chromium)")
    node = shutil.which("node")
    if node is None or node_major(node) < 20:
        missing_tool("Node.js >= 20 is not on PATH (playwright-core 1.65 needs it)")
    for package in ("playwright-core", "@mediapipe/tasks-vision", "@litertjs/core", "@litertjs/wasm-utils"):
        if not (NODE_MODULES / package / "package.json").is_file():
            missing_tool(f"{package} is not installed in runtime/web_page/node_modules "
                         "(npm ci --prefix runtime/web_page)")
    return BrowserTools(Path(chromium), Path(node))


def demo_labels() -> list[str]:
    return [line.strip() for line in LABELS_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="session")
def web_bundle(tmp_path_factory) -> Path:
    """The shipped demo CLIP as `clipedge export --formats tflite --precisions fp32,dynamic-int8 --labels
    calibration_data/demo_labels.txt --mobile --no-gpu` makes it (about 20 s on 2 cores)."""
    try:
        import mediapipe  # noqa: F401  (the mobile models' metadata schema)
    except ImportError:
        missing_tool("mediapipe is not installed (pip install '.[mobile]'): the mobile export needs it")
    from clipedge.export.pipeline.export_bundle import export_bundle

    out = tmp_path_factory.mktemp("web") / "bundle"
    export_bundle(out, formats=("tflite",), precisions=("fp32", "dynamic-int8"), labels=demo_labels(), gpu=False,
                  mobile=True, samples=16, progress=False)
    return out


@pytest.fixture(scope="session")
def plain_bundle(tmp_path_factory) -> Path:
    """The shipped demo CLIP as README's quick start exports it, no --mobile and no --labels, but TFLite only and
    at fp32 and dynamic-int8 (`clipedge export --formats tflite --precisions fp32,dynamic-int8 --no-gpu`; about
    20 s on 2 cores): the page runs its plain image model on LiteRT.js."""
    from clipedge.export.pipeline.export_bundle import export_bundle

    out = tmp_path_factory.mktemp("web-plain") / "bundle"
    export_bundle(out, formats=("tflite",), precisions=("fp32", "dynamic-int8"), gpu=False, samples=16,
                  progress=False)
    return out


def _fake_package(package: Path, name: str, version: str, files: dict[str, str]) -> Path:
    for file in files:
        (package / file).parent.mkdir(parents=True, exist_ok=True)
        (package / file).write_text(f"// stand-in for {file}\n", encoding="utf-8")
    (package / "package.json").write_text(json.dumps({"name": name, "version": version}), encoding="utf-8")
    return package


def fake_litert(root: Path, version: str = "2.5.3") -> Path:
    """Stand-ins for @litertjs/core and @litertjs/wasm-utils in root/node_modules; the core package's directory."""
    from clipedge.runtime.web_npm import LITERT_FILES, LITERT_UTILS_FILES

    modules = root / "node_modules" / "@litertjs"
    _fake_package(modules / "wasm-utils", "@litertjs/wasm-utils", version, LITERT_UTILS_FILES)
    return _fake_package(modules / "core", "@litertjs/core", version, LITERT_FILES)


def fake_mediapipe(root: Path, version: str = "1.1.0") -> Path:
    """A stand-in @mediapipe/tasks-vision package with the file names `clipedge web` copies, and LiteRT.js's beside
    it (fake_litert): lets the site's Python side be tested where npm was never run."""
    from clipedge.runtime.web import MEDIAPIPE_FILES

    fake_litert(root)
    return _fake_package(root / "node_modules" / "@mediapipe" / "tasks-vision", "@mediapipe/tasks-vision", version,
                         MEDIAPIPE_FILES)


class _Handler(SimpleHTTPRequestHandler):
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".wasm": "application/wasm",
                      ".js": "text/javascript", ".tflite": "application/octet-stream",
                      ".f32": "application/octet-stream"}

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        pass


@contextlib.contextmanager
def serve(site: Path) -> Iterator[str]:
    """http://127.0.0.1:PORT/ serving `site` from a thread; stopped on exit, or after SERVER_LIFETIME_S."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    watchdog = threading.Timer(SERVER_LIFETIME_S, server.shutdown)
    watchdog.daemon = True
    watchdog.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        watchdog.cancel()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
