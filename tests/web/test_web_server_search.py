"""`clipedge web --server URL` in headless Chromium against a real `clipedge serve` (docs/serve.md, "The web page
against the server"): the page's free-text search embeds the typed text on the server (`POST {server}/embed/text`,
across origins: the server allows the site's with `--cors-origin`), ranks its gallery by cosine to the answer and
says so; once the server is stopped, the same search falls back to the page's own text model (LiteRT.js) and says
that too. Both rankings are checked against clipedge's Python runtime.

The site is built from README's quick-start bundle (`plain_bundle`: no MediaPipe models) at fp32, where the page's
text model equals the runtime's to cosine 0.9999 (tests/web/test_web_page_plain.py), so the fallback ranks as the
server does. tests/web/drive_server_search.mjs drives the page one command at a time, so that the test can stop the
server between two searches. The static server, the `clipedge serve` process and the driver (with its Chromium) are
stopped by the fixtures' finalizers whatever happens; the two child processes also get SIGTERM if pytest dies.
"""

from __future__ import annotations

import importlib.util
import json
import queue
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from clipedge.runtime.clip_runtime import load
from tests.web.conftest import NODE_MODULES, REPO, missing_tool, serve
from tests.web.test_web_page import check_search, report
from tests.web.test_web_site import run_cli

DRIVER = Path(__file__).with_name("drive_server_search.mjs")
DRIVER_TIMEOUT_S = 120
PRECISION = "fp32"  # the page's text model equals the server's to cosine 0.9999: the fallback ranks alike
TEXT = "a blue star"  # no label prompt, caption or --queries text: embedded on demand, as anything typed


@pytest.fixture
def site_host(tmp_path) -> Iterator[tuple[Path, str]]:
    """(where the site will be, the URL it is served at): the static server starts first, so that its origin can be
    given to `clipedge serve --cors-origin` before the site is built with that server's URL."""
    site = tmp_path / "site"
    with serve(site) as url:  # the handler reads the directory per request: it may appear later
        yield site, url


@pytest.fixture
def api(plain_bundle, site_host):
    """`clipedge serve` of the site's bundle, precision and format, letting the site's origin call it."""
    for module in ("starlette", "uvicorn", "httpx"):
        if importlib.util.find_spec(module) is None:
            missing_tool(f"{module} is not installed (pip install '.[serve]' httpx): clipedge serve needs it")
    from tests.runtime.test_serve import start_server

    server = start_server("--bundle", str(plain_bundle), "--precision", PRECISION, "--format", "tflite",
                          "--cors-origin", site_host[1].rstrip("/"), "--workers", "2")
    try:
        yield server
    finally:
        server.stop()


class Driver:
    """tests/web/drive_server_search.mjs in a child process: one JSON command a line in, one JSON answer a line out."""

    def __init__(self, tools, url: str, tmp_path: Path) -> None:
        from tests.runtime.test_serve import _die_with_parent

        config = {"url": url, "chromium": str(tools.chromium), "nodeModules": str(NODE_MODULES),
                  "timeoutMs": DRIVER_TIMEOUT_S * 1000}
        (tmp_path / "driver.json").write_text(json.dumps(config), encoding="utf-8")
        self.process = subprocess.Popen([str(tools.node), str(DRIVER), str(tmp_path / "driver.json")],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, preexec_fn=_die_with_parent)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._pump, args=(self.process.stdout, self.lines.put), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.process.stderr, self.stderr.append), daemon=True).start()

    @staticmethod
    def _pump(stream, sink) -> None:
        for line in stream:
            sink(line)
        sink(None)

    def read(self, timeout: float = DRIVER_TIMEOUT_S) -> dict:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            line = None
        if not line:
            self.close()
            raise AssertionError(f"the driver said nothing: {''.join(s for s in self.stderr if s)[-4000:]}")
        return json.loads(line)

    def send(self, command: dict) -> dict:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self.read()

    def close(self) -> None:
        """quit (or stdin closed: the driver closes its browser), then SIGTERM, then SIGKILL."""
        if self.process.poll() is None:
            try:
                self.process.stdin.write(json.dumps({"quit": True}) + "\n")
                self.process.stdin.close()
            except OSError:
                pass
            for stop in (None, signal.SIGTERM, signal.SIGKILL):
                if stop is not None:
                    self.process.send_signal(stop)
                try:
                    self.process.wait(timeout=15)
                    break
                except subprocess.TimeoutExpired:
                    continue


@pytest.fixture
def driver_factory(browser_tools, tmp_path) -> Iterator:
    drivers: list[Driver] = []

    def start(url: str) -> Driver:
        drivers.append(Driver(browser_tools, url, tmp_path))
        return drivers[-1]

    yield start
    for driver in drivers:
        driver.close()


def _requests(log: dict, url: str) -> list[dict]:
    return [r for r in log["requests"] if r["url"] == url]


def test_search_embeds_on_the_server_then_falls_back_to_the_page(plain_bundle, site_host, api, driver_factory,
                                                                   monkeypatch, capsys):
    site, url = site_host
    origin, embed_url = url.rstrip("/"), f"{api.url}/embed/text"
    monkeypatch.chdir(REPO)  # README's commands run in the clone: the npm packages in runtime/web_page
    code, _, err = run_cli(["web", str(plain_bundle), "--out", str(site), "--precision", PRECISION,
                            "--server", api.url + "/"])
    assert code == 0, err
    data = json.loads((site / "site.json").read_text(encoding="utf-8"))
    assert data["server"] == api.url and data["image_runtime"] == "litert"
    assert TEXT not in [t["text"] for t in data["texts"]["items"]]  # nothing precomputed: embedded on demand

    driver = driver_factory(url)
    ready = driver.read()
    assert ready["event"] == "ready" and ready["log"]["pageErrors"] == []
    assert _requests(ready["log"], embed_url) == []  # the page asks the server on a search, not before
    files = [g["file"] for g in ready["gallery"]]
    gallery = np.array([g["embedding"] for g in ready["gallery"]], dtype=np.float64)

    # (a) the server embeds the text: the page's cross-origin POST is answered, and its note says by whom
    served = driver.send({"search": TEXT})
    posts = [r for r in _requests(served["log"], embed_url) if r["method"] == "POST"]
    assert len(posts) == 1 and json.loads(posts[0]["body"]) == {"texts": [TEXT]}, served["log"]["requests"]
    answers = [r for r in served["log"]["responses"] if r["url"] == embed_url and r["method"] == "POST"]
    assert [(r["status"], r["allowOrigin"]) for r in answers] == [(200, origin)], served["log"]
    assert served["search"]["where"] == f"by {api.url} ({PRECISION})", served["note"]
    assert served["note"].startswith(f'"{TEXT}": embedded by {api.url} ({PRECISION}) in '), served["note"]
    assert served["textRuns"] == ready["textRuns"] == 0  # the page's text model did not run

    # (b) what the page ranked with is the runtime's embedding of the text (the server's), and its ranking is that
    # embedding's against the page's own gallery embeddings, and the runtime's against the runtime's images
    runtime = load(plain_bundle, precision=PRECISION, format="tflite")
    expected = runtime.encode_texts([TEXT])[0].astype(np.float64)
    assert np.abs(np.array(served["search"]["embedding"]) - expected).max() < 1e-6
    scores = gallery @ expected
    ranking = served["search"]["ranking"]
    assert [r["file"] for r in ranking] == [files[i] for i in np.argsort(-scores, kind="stable")]
    assert np.abs(np.array([r["cosine"] for r in ranking]) - np.sort(scores)[::-1]).max() < 1e-6
    check_search({"search": served["search"]}, site, runtime, TEXT)

    # (c) the server stopped: the same search is embedded in the page, which says why, and ranks alike
    assert api.stop() in (0, 128 + signal.SIGTERM) and "stopped" in "".join(api.stdout)
    fallback = driver.send({"search": TEXT})
    assert [r["method"] for r in _requests(fallback["log"], embed_url)] == ["POST"]  # it asked, and got no answer
    assert [f["url"] for f in fallback["log"]["failed"]] == [embed_url], fallback["log"]
    where = fallback["search"]["where"]
    assert where.startswith(f"in this page ({api.url}: ") and where.endswith(")"), where
    assert fallback["note"].startswith(f'"{TEXT}": embedded {where} in '), fallback["note"]
    in_page = np.array(fallback["search"]["embedding"], dtype=np.float64)
    assert fallback["textRuns"] == 1  # the page's own text model ran, once
    assert float(in_page @ expected) >= 0.9999  # and agrees with the runtime's (the server's)
    check_search({"search": fallback["search"]}, site, runtime, TEXT)
    page_scores = {r["file"]: r["cosine"] for r in fallback["search"]["ranking"]}
    assert fallback["search"]["ranking"][0]["file"] == ranking[0]["file"]
    assert max(abs(page_scores[r["file"]] - r["cosine"]) for r in ranking) < 1e-3

    top = [f"{r['caption']} {r['cosine']:.3f}" for r in ranking[:3]]
    report(f"{PRECISION}, search against clipedge serve",
           {"gallery": len(files), "server search ms": f"{served['search']['ms']:.1f}",
            "fallback search ms": f"{fallback['search']['ms']:.1f}",
            "in-page vs server text cosine": f"{float(in_page @ expected):.6f}", f"top 3 for {TEXT!r}": top,
            "fallback note": fallback["note"]}, capsys)

    bye = driver.send({"quit": True})
    assert bye["event"] == "bye"
    logs = [ready["log"], served["log"], fallback["log"], bye["log"]]
    assert [e for log in logs for e in log["pageErrors"]] == []
    # nothing but the site and the server was asked for
    assert [r["url"] for log in logs for r in log["requests"]
            if not r["url"].startswith((url, api.url + "/", "blob:", "data:"))] == []
