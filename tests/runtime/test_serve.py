"""`clipedge serve` (issue #35): a real server in a subprocess, called over real HTTP (httpx): every endpoint's answer
equal to the in-process runtime's, the CLI's and the index's; every bad request refused with one JSON error while the
server keeps serving; concurrent clients; the exposure warning; a clean stop on SIGTERM/SIGINT.

The servers are started with `--port 0` (the first stdout line says the port) and always stopped by their fixture's
finalizer; on Linux they also get SIGTERM if pytest itself dies (PR_SET_PDEATHSIG), so nothing outlives the run.
"""

from __future__ import annotations

import io
import json
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from clipedge.runtime.clip_runtime import load  # noqa: E402
from clipedge.runtime.library import open_index  # noqa: E402
from clipedge.runtime.serve.limits import Limits, exposure_warning, is_loopback  # noqa: E402

LABELS = ["red circle", "blue square", "green triangle"]
CORS_ORIGIN = "http://127.0.0.1:9"
URL_LINE = re.compile(r"listening on (http://\S+?) ")


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent (pytest) dies, however it dies (Linux only)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    stderr: list[str] = field(default_factory=list)
    stdout: list[str] = field(default_factory=list)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        return self.process.returncode


def start_server(*args: str, timeout: float = 120) -> Server:
    """`clipedge serve ARGS --port 0`, returned once its URL line is printed (the socket is bound by then)."""
    process = subprocess.Popen([sys.executable, "-m", "clipedge.runtime.cli", "serve", "--port", "0", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_die_with_parent)
    lines: queue.Queue[str | None] = queue.Queue()
    server = Server(process, "")

    def pump(stream, sink: list[str], announce: bool) -> None:
        for line in stream:
            sink.append(line)
            if announce:
                lines.put(line)
        if announce:
            lines.put(None)

    threading.Thread(target=pump, args=(process.stdout, server.stdout, True), daemon=True).start()
    threading.Thread(target=pump, args=(process.stderr, server.stderr, False), daemon=True).start()
    try:
        line = lines.get(timeout=timeout)
    except queue.Empty:
        line = None
    match = URL_LINE.search(line or "")
    if not match:
        server.stop()
        raise AssertionError(f"the server did not start: {line!r}; stderr: {''.join(server.stderr)[-2000:]}")
    server.url = match.group(1)
    return server


def png(width: int = 60, height: int = 50, seed: int = 0, solid: bool = False) -> bytes:
    """Random pixels, or one colour (a small file of many pixels)."""
    buffer = io.BytesIO()
    if solid:
        Image.new("RGB", (width, height), (seed % 256, 90, 200)).save(buffer, "PNG")
    else:
        pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def cosines(a, b) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("serve-photos")
    for i in range(12):
        (root / f"{i:02d}.png").write_bytes(png(48 + i, 40, seed=i))
    return root


@pytest.fixture(scope="module")
def index_dir(small_bundle, photos, tmp_path_factory) -> Path:
    """A catalogue, as `clipedge index build` writes it (the server reads it through open_index, like search)."""
    out = tmp_path_factory.mktemp("serve-index") / "index"
    built = subprocess.run([sys.executable, "-m", "clipedge.runtime.cli", "index", "build", str(photos), "-o", str(out),
                            "--bundle", str(small_bundle)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    return out


@pytest.fixture(scope="module")
def server(small_bundle, index_dir) -> Iterator[Server]:
    running = start_server("--bundle", str(small_bundle), "--index", str(index_dir), "--max-upload-mb", "1",
                           "--max-pixels", "1000000", "--max-text-chars", "200", "--max-texts", "8", "--max-k", "10",
                           "--cors-origin", CORS_ORIGIN)
    try:
        yield running
    finally:
        # SIGTERM: the requests in flight end, then the exit; 128 + 15 as every clipedge command (uvicorn >= 0.29
        # raises the signal again once it has stopped), 0 with uvicorns that do not
        assert running.stop(signal.SIGTERM) in (0, 128 + signal.SIGTERM)
        assert "stopped" in "".join(running.stdout)


@pytest.fixture(scope="module")
def client(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http


@pytest.fixture(scope="module")
def runtime(client, small_bundle):
    """The server's own format and precision (the index's), loaded in this process."""
    model = client.get("/health").json()["model"]
    return load(small_bundle, precision=model["precision"], format=model["format"])


# ---- the endpoints, against the runtime, the CLI and the index ------------------------------------------------------
def test_health_ping_openapi_docs(client, index_dir):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["index"]["items"] == 12
    assert health["limits"]["max_upload_bytes"] == 1024 * 1024 and health["limits"]["max_k"] == 10
    assert client.get("/ping").text == "pong"
    document = client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.") and {"/embed/text", "/embed/image", "/classify", "/search",
                                                     "/health"} <= set(document["paths"])
    page = client.get("/docs")
    assert page.headers["content-type"].startswith("text/html") and "/openapi.json" in page.text
    assert "<script" not in page.text  # nothing fetched from a CDN


def test_embed_text_equals_the_runtime(client, runtime):
    texts = ["a photo of a cat", "red circle", "ünïcödé and emoji 🚲", "x" * 200]
    response = client.post("/embed/text", json={"texts": texts})
    assert response.status_code == 200, response.text
    got = np.asarray(response.json()["embeddings"])
    assert got.shape == (4, runtime.manifest.embed_dim) and response.json()["dim"] == runtime.manifest.embed_dim
    assert cosines(got, runtime.encode_texts(texts)).min() >= 0.99999


def test_embed_image_equals_the_runtime_multipart_and_raw(client, runtime, photos):
    path = photos / "03.png"
    expected = runtime.encode_images([str(path)])[0]
    multipart = client.post("/embed/image", files={"image": ("x.png", path.read_bytes(), "image/png")})
    raw = client.post("/embed/image", content=path.read_bytes(), headers={"Content-Type": "image/png"})
    for response in (multipart, raw):
        assert response.status_code == 200, response.text
        assert cosines(response.json()["embedding"], expected) >= 0.99999


def test_classify_equals_the_cli(client, small_bundle, photos, runtime):
    path = photos / "05.png"
    cli = subprocess.run([sys.executable, "-m", "clipedge.runtime.cli", "classify", str(path), "--labels", *LABELS,
                          "--top", "3", "--json", "--bundle", str(small_bundle), "--precision", runtime.precision,
                          "--format", runtime.format], capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr
    expected = {t["label"]: t["probability"] for t in json.loads(cli.stdout)[0]["top"]}
    response = client.post("/classify", files={"image": ("p.png", path.read_bytes(), "image/png")},
                           data={"labels": LABELS})
    assert response.status_code == 200, response.text
    got = {t["label"]: t["probability"] for t in response.json()["labels"]}
    assert got.keys() == expected.keys() and all(abs(got[k] - expected[k]) <= 2e-6 for k in got)
    ranked = [t["probability"] for t in response.json()["labels"]]
    assert ranked == sorted(ranked, reverse=True)
    # a raw body with the labels in the query string, one comma-separated value: the same answer
    raw = client.post("/classify", params={"labels": ",".join(LABELS), "top": "1"}, content=path.read_bytes(),
                      headers={"Content-Type": "image/png"})
    assert raw.status_code == 200 and len(raw.json()["labels"]) == 1
    assert raw.json()["labels"][0]["label"] == max(expected, key=expected.get)


def test_search_equals_the_index(client, runtime, index_dir, photos):
    index = open_index(index_dir)
    expected = index.search(runtime, "a red circle", 4)
    response = client.post("/search", json={"text": "a red circle", "k": 4})
    assert response.status_code == 200, response.text
    hits = response.json()["hits"]
    assert [h["item"] for h in hits] == [h.item for h in expected]
    assert np.allclose([h["score"] for h in hits], [h.score for h in expected], atol=1e-5)
    query = (photos / "07.png").read_bytes()
    expected = index.search(runtime, query, 3)
    response = client.post("/search", files={"image": ("q.png", query, "image/png")}, data={"k": "3"})
    assert response.status_code == 200, response.text
    assert [h["item"] for h in response.json()["hits"]] == [h.item for h in expected]
    assert response.json()["hits"][0]["item"].endswith("07.png")


def test_cors_lets_the_named_origin_only(client):
    allowed = client.options("/embed/text", headers={"Origin": CORS_ORIGIN, "Access-Control-Request-Method": "POST",
                                                     "Access-Control-Request-Headers": "content-type"})
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == CORS_ORIGIN
    other = client.post("/embed/text", json={"texts": ["a"]}, headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in other.headers


# ---- bad requests: one clear JSON error each, and the server goes on ------------------------------------------------
def _chunks(total: int) -> Iterator[bytes]:
    for _ in range(total // 65536 + 1):
        yield b"\0" * 65536


BAD_REQUESTS = {
    "oversize body": (dict(method="POST", url="/embed/image", content=b"\0" * (1024 * 1024 + 1),
                           headers={"Content-Type": "image/png"}), 413, "over the server's limit of 1048576 bytes"),
    "oversize chunked body": (dict(method="POST", url="/embed/image", content=_chunks(3 * 1024 * 1024),
                                   headers={"Content-Type": "image/png"}), 413, "over the server's limit"),
    "not an image": (dict(method="POST", url="/embed/image",
                          files={"image": ("a.png", b"this is text, not a PNG", "image/png")}), 422, "not an image"),
    "truncated image": (dict(method="POST", url="/embed/image", content=png()[:200],
                             headers={"Content-Type": "image/png"}), 422, ""),
    "too many pixels": (dict(method="POST", url="/embed/image", content=png(1100, 1000, solid=True),
                             headers={"Content-Type": "image/png"}), 413, "over the server's limit of 1000000"),
    "image as JSON": (dict(method="POST", url="/embed/image", json={"image": "x"}), 415, "multipart/form-data"),
    "text as plain text": (dict(method="POST", url="/embed/text", content=b"a cat",
                                headers={"Content-Type": "text/plain"}), 415, "application/json"),
    "bad JSON": (dict(method="POST", url="/embed/text", content=b'{"texts": [', headers={
        "Content-Type": "application/json"}), 400, "not valid JSON"),
    "JSON not an object": (dict(method="POST", url="/embed/text", json=["a cat"]), 400, "JSON object"),
    "no texts": (dict(method="POST", url="/embed/text", json={"texts": []}), 400, "non-empty list"),
    "a text not a string": (dict(method="POST", url="/embed/text", json={"texts": ["a", 3]}), 400, "texts[1]"),
    "text too long": (dict(method="POST", url="/embed/text", json={"texts": ["x" * 201]}), 413, "201 characters"),
    "too many texts": (dict(method="POST", url="/embed/text", json={"texts": ["a"] * 9}), 413, "9 texts"),
    "no image field": (dict(method="POST", url="/embed/image", files={"photo": ("a.png", png(), "image/png")}), 400,
                       "no file field 'image'"),
    "classify without labels": (dict(method="POST", url="/classify", files={"image": ("a.png", png(), "image/png")}),
                                400, "needs labels"),
    "duplicate labels": (dict(method="POST", url="/classify", files={"image": ("a.png", png(), "image/png")},
                              data={"labels": ["cat", "Cat"]}), 400, "duplicate labels"),
    "template without slot": (dict(method="POST", url="/classify", files={"image": ("a.png", png(), "image/png")},
                                   data={"labels": ["cat", "dog"], "template": "a photo"}), 400, "{}"),
    "search as plain text": (dict(method="POST", url="/search", content=b"a cat", headers={
        "Content-Type": "text/plain"}), 415, "search takes JSON"),
    "k too large": (dict(method="POST", url="/search", json={"text": "a", "k": 11}), 413, "k=11"),
    "k not positive": (dict(method="POST", url="/search", json={"text": "a", "k": 0}), 400, "positive integer"),
    "unknown route": (dict(method="GET", url="/nope"), 404, "GET /docs lists them"),
    "wrong method": (dict(method="GET", url="/embed/text"), 405, "not allowed"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_a_bad_request_gets_one_json_error_and_the_server_goes_on(server, case):
    request, status, words = BAD_REQUESTS[case]
    with httpx.Client(base_url=server.url, timeout=60) as http:  # its own connection: a 413 may close it
        response = http.request(**request)
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/json"
        error = response.json()["error"]
        assert isinstance(error, str) and words in error and "\n" not in error
    with httpx.Client(base_url=server.url, timeout=60) as http:
        assert http.post("/embed/text", json={"texts": ["still here"]}).status_code == 200
    assert server.process.poll() is None
    assert "Traceback" not in "".join(server.stderr)


# ---- concurrency ----------------------------------------------------------------------------------------------------
def test_concurrent_clients_all_get_their_own_answers(server, runtime, photos):
    texts = [f"photo number {i} of a {LABELS[i % 3]}" for i in range(48)]
    expected_texts = runtime.encode_texts(texts)
    images = sorted(photos.iterdir())
    expected_images = runtime.encode_images([str(p) for p in images])

    def call(i: int) -> float:
        with httpx.Client(base_url=server.url, timeout=120) as http:
            if i % 3 == 2:
                k = i % len(images)
                got = http.post("/embed/image", content=images[k].read_bytes(), headers={"Content-Type": "image/png"})
                assert got.status_code == 200, got.text
                return float(cosines(got.json()["embedding"], expected_images[k]))
            got = http.post("/embed/text", json={"texts": [texts[i]]})
            assert got.status_code == 200, got.text
            return float(cosines(got.json()["embeddings"][0], expected_texts[i]))

    with ThreadPoolExecutor(16) as pool:
        assert min(pool.map(call, range(len(texts)))) >= 0.99999


# ---- exposure, the missing extra, stopping -----------------------------------------------------------------------
def test_loopback_hosts_and_the_warning():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.5", "example.com"))
    assert exposure_warning("127.0.0.1") is None
    assert "no authentication" in exposure_warning("0.0.0.0")
    with pytest.raises(ValueError, match="max_k"):
        Limits(max_k=0)


def test_any_address_warns_and_without_an_index_search_is_503(small_bundle):
    running = start_server("--bundle", str(small_bundle), "--host", "0.0.0.0")
    try:
        assert any("reachable from other machines" in line and "no authentication" in line
                   for line in running.stderr), running.stderr
        url = running.url.replace("0.0.0.0", "127.0.0.1")
        with httpx.Client(base_url=url, timeout=60) as http:
            response = http.post("/search", json={"text": "a cat"})
            assert response.status_code == 503 and "--index" in response.json()["error"]
            assert http.get("/health").json()["index"] is None
        assert running.stop(signal.SIGINT) in (0, 130)  # Ctrl-C: a clean stop (130: "clipedge: interrupted")
        assert "stopped" in "".join(running.stdout)
    finally:
        running.stop()


def test_the_web_page_server_url_is_checked():
    from clipedge.runtime.errors import InputError
    from clipedge.runtime.web import server_url

    assert server_url(None) is None
    assert server_url(" http://127.0.0.1:8000/ ") == "http://127.0.0.1:8000"
    assert server_url("https://clip.example/api") == "https://clip.example/api"
    for bad in ("127.0.0.1:8000", "ftp://x", "http://", "http://x/?a=1", "javascript:alert(1)"):
        with pytest.raises(InputError, match="--server"):
            server_url(bad)


def test_a_port_in_use_is_one_line(small_bundle):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "clipedge.runtime.cli", "serve", "--bundle", str(small_bundle),
                                 "--port", str(port)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"clipedge: error: cannot listen on http://127.0.0.1:{port}: Address already in use: another program listens "
        "there; choose another --port (0: any free one)"]


def test_missing_extra_is_one_line(small_bundle):
    code = ("import sys; sys.modules['uvicorn'] = None; from clipedge.runtime.cli.main import main; "
            f"sys.exit(main(['serve', '--bundle', {str(small_bundle)!r}]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == ("clipedge: error: clipedge serve needs starlette and uvicorn: pip install "
                                     "'clipedge[serve]'")


def test_the_cli_parser_does_not_import_the_server():
    code = ("import sys; from clipedge.runtime.cli.main import build_parser; build_parser(); "
            "print(sorted(m for m in ('starlette', 'uvicorn', 'anyio') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr
