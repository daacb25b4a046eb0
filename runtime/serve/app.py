"""The `clipedge serve` HTTP API: a Starlette app over one loaded `CLIPRuntime` (and optionally one index).

JSON in and out, as immich's machine-learning service and clip-retrieval do: `GET /health`, `POST /embed/text`,
`POST /embed/image`, `POST /classify`, `POST /search`, `GET /openapi.json`, `GET /docs` (docs/serve.md). Every
refusal is `{"error": "..."}` with its status (400 bad input, 404, 405, 413 over a limit, 415 wrong Content-Type,
422 not an image, 503 no index loaded, 500 a model failure), and the server goes on serving.

Concurrency: the handlers are async; everything that touches numpy, Pillow or a model runs in worker threads under
one `anyio.CapacityLimiter` (`workers`), so requests decode images and tokenize texts in parallel. The runtime is
shared: its towers open once under a lock, and each model's calls run one at a time inside its backend (LiteRT
reuses its tensor buffers between calls; docs/python-api.md "Threads"), so no request ever sees another's tensors.
The limiter bounds how many requests hold memory at once (each one decoded image), whatever the number of clients.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import anyio
import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from clipedge.runtime.errors import ClipEdgeError, ImageError, InputError
from clipedge.runtime.prompts import DEFAULT_TEMPLATE, fill_template
from clipedge.runtime.scoring import zero_shot_probabilities
from clipedge.runtime.serve.limits import Limits
from clipedge.runtime.serve.openapi import docs_page, openapi_document
from clipedge.runtime.serve.requests import (
    ApiError,
    check_image,
    form_or_query,
    media_type,
    read_image_request,
    read_json,
)

__all__ = ["create_app", "ApiError"]

log = logging.getLogger("clipedge.serve")
LABEL_CACHE = 256  # label sets whose prompt embeddings are kept: bounded, unlike the runtime's own (a server's
# clients send any labels, forever)


class Service:
    """What the routes share: the runtime, the index, the limits, the worker limiter and a bounded label cache."""

    def __init__(self, runtime: Any, index: Any, limits: Limits, workers: int) -> None:
        self.runtime = runtime
        self.index = index
        self.limits = limits
        self.limiter = anyio.CapacityLimiter(workers)
        self._labels: OrderedDict[tuple[str, ...], np.ndarray] = OrderedDict()
        self._labels_lock = threading.Lock()
        model = runtime.manifest.data.get("model", {})
        self.model = {"name": model.get("name", ""), "sha256": model.get("sha256", ""), "format": runtime.format,
                      "precision": runtime.precision, "embed_dim": runtime.manifest.embed_dim}

    async def work(self, fn: Callable[[], Any]) -> Any:
        """`fn` in a worker thread, at most `workers` at once."""
        return await anyio.to_thread.run_sync(fn, limiter=self.limiter)

    def label_embeddings(self, labels: list[str], template: str) -> np.ndarray:
        key = (template, *labels)
        with self._labels_lock:
            if key in self._labels:
                self._labels.move_to_end(key)
                return self._labels[key]
        embeds = self.runtime.encode_texts([fill_template(template, label) for label in labels])
        with self._labels_lock:
            self._labels[key] = embeds
            while len(self._labels) > LABEL_CACHE:
                self._labels.popitem(last=False)
        return embeds

    def classify(self, image: bytes, labels: list[str], template: str) -> np.ndarray:
        """CLIPRuntime.classify's probabilities for one image (a baked classifier when the bundle has one for these
        labels), with the label embeddings from this bounded cache instead of the runtime's unbounded one."""
        if self.runtime.baked_classifier(labels, template) is not None:
            return self.runtime.classify(image, labels, template)[0].probabilities
        image_embeds = self.runtime.encode_images(image)
        return zero_shot_probabilities(image_embeds, self.label_embeddings(labels, template),
                                       self.runtime.logit_scale)[0]


# ---- checks on request values -------------------------------------------------------------------------------------
def _text(value: Any, what: str, limits: Limits) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, f"{what} must be a non-empty string, got {value!r:.80}")
    if len(value) > limits.max_text_chars:
        raise ApiError(413, f"{what} has {len(value)} characters, over the server's limit of "
                            f"{limits.max_text_chars} (--max-text-chars)")
    return value


def _int(value: Any, what: str, default: int, most: int, flag: str) -> int:
    if value is None or value == "":
        return min(default, most)
    try:
        number = int(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    except ValueError:
        number = None
    if number is None or number < 1:
        raise ApiError(400, f"{what} must be a positive integer, got {value!r:.40}")
    if number > most:
        raise ApiError(413, f"{what}={number} is over the server's limit of {most} ({flag})")
    return number


def _labels(values: list[str], limits: Limits) -> list[str]:
    """Repeated `labels` fields, or one comma-separated field: the CLI's rules (parse_labels), duplicates refused."""
    from argparse import Namespace

    from clipedge.runtime.cli.commands import parse_labels

    if not values:
        raise ApiError(400, "classify needs labels: form field 'labels' repeated (-F labels=cat -F labels=dog) or "
                            "one comma-separated ('cat,dog')")
    labels = parse_labels(Namespace(labels=values, labels_file=None))
    if len(labels) > limits.max_labels:
        raise ApiError(413, f"{len(labels)} labels is over the server's limit of {limits.max_labels}")
    for label in labels:
        _text(label, "a label", limits)
    return labels


def index_size(index: Any) -> int:
    """Rows in the index: `.count` (the catalogue's interface), else the length of `.items` (a version-2 index)."""
    count = getattr(index, "count", None)
    return int(count) if isinstance(count, int) else len(getattr(index, "items", ()) or ())


def _floats(matrix: np.ndarray) -> list[list[float]]:
    return np.asarray(matrix, np.float32).tolist()


# ---- routes -------------------------------------------------------------------------------------------------------
def _service(request: Request) -> Service:
    return request.app.state.service


async def health(request: Request) -> JSONResponse:
    service = _service(request)
    index = None if service.index is None else {"items": index_size(service.index), "model": service.index.model}
    return JSONResponse({"status": "ok", "model": service.model, "index": index, "limits": service.limits.to_dict()})


async def ping(request: Request) -> PlainTextResponse:
    return PlainTextResponse("pong")  # immich's machine-learning health check


async def embed_text(request: Request) -> JSONResponse:
    service = _service(request)
    data = await read_json(request, service.limits)
    texts = data.get("texts")
    if isinstance(data.get("text"), str) and texts is None:
        texts = [data["text"]]
    if not isinstance(texts, list) or not texts:
        raise ApiError(400, 'send {"texts": ["a photo of a cat", ...]}: a non-empty list of strings')
    if len(texts) > service.limits.max_texts:
        raise ApiError(413, f"{len(texts)} texts is over the server's limit of {service.limits.max_texts} per "
                            "request (--max-texts)")
    texts = [_text(text, f"texts[{i}]", service.limits) for i, text in enumerate(texts)]
    embeddings = await service.work(lambda: service.runtime.encode_texts(texts))
    return JSONResponse({"embeddings": _floats(embeddings), "dim": int(embeddings.shape[1]), "model": service.model})


async def embed_image(request: Request) -> JSONResponse:
    service = _service(request)
    image, _ = await read_image_request(request, service.limits)
    check_image(image, service.limits)
    embedding = await service.work(lambda: service.runtime.encode_images(image))
    return JSONResponse({"embedding": _floats(embedding)[0], "dim": int(embedding.shape[1]), "model": service.model})


async def classify(request: Request) -> JSONResponse:
    service = _service(request)
    image, fields = await read_image_request(request, service.limits, fields=service.limits.max_labels + 4)
    labels = _labels(form_or_query(request, fields, "labels"), service.limits)
    template = _text((form_or_query(request, fields, "template") or [DEFAULT_TEMPLATE])[0], "template",
                     service.limits)
    fill_template(template, "x")  # a template without {} is refused before the model runs
    top = _int((form_or_query(request, fields, "top") or [None])[0], "top", len(labels), len(labels), "the labels")
    check_image(image, service.limits)
    probabilities = await service.work(lambda: service.classify(image, labels, template))
    order = np.argsort(-probabilities, kind="stable")[:top]
    return JSONResponse({"labels": [{"label": labels[i], "probability": float(probabilities[i])} for i in order],
                         "template": template, "model": service.model})


async def search(request: Request) -> JSONResponse:
    service = _service(request)
    if service.index is None:
        raise ApiError(503, "no index is loaded: start the server with --index DIR (clipedge index build)")
    limits = service.limits
    kind = media_type(request)
    if kind != "application/json" and not kind.startswith(("image/", "multipart/form-data")):
        raise ApiError(415, 'search takes JSON {"text": "...", "k": 5} (Content-Type: application/json) or an image '
                            f"(multipart field 'image', or a raw image/* body), got {kind or 'no Content-Type'}")
    if kind == "application/json":
        data = await read_json(request, limits)
        query: Any = _text(data.get("text"), "text", limits)
        k = _int(data.get("k"), "k", 5, limits.max_k, "--max-k")
    else:
        query, fields = await read_image_request(request, limits)
        k = _int((form_or_query(request, fields, "k") or [None])[0], "k", 5, limits.max_k, "--max-k")
        check_image(query, limits)
    hits = await service.work(lambda: service.index.search(service.runtime, query, k))
    return JSONResponse({"hits": [{"rank": h.rank, "item": h.item, "score": float(h.score)} for h in hits],
                         "query": "text" if isinstance(query, str) else "image", "model": service.model})


async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(openapi_document(_service(request)))


async def docs(request: Request) -> HTMLResponse:
    return HTMLResponse(docs_page(_service(request)))


# ---- errors -------------------------------------------------------------------------------------------------------
def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return _error(exc.status, exc.message, {"Connection": "close"} if exc.close else None)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"no endpoint {request.url.path}: GET /docs lists them"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}: GET /docs says which method it takes"
    else:
        message = str(exc.detail)
    return _error(exc.status_code, message, dict(exc.headers or {}))


async def _clipedge_error(request: Request, exc: Exception) -> Response:
    """The runtime's own refusals: an image it cannot decode is 422, other bad input 400; anything else it raises
    on purpose (a model gave NaN, an interpreter failed) is the server's fault, 500, with the runtime's sentence."""
    if isinstance(exc, ImageError):
        return _error(422, str(exc))
    if isinstance(exc, InputError):
        return _error(400, str(exc))
    log.error("%s on %s: %s", type(exc).__name__, request.url.path, exc)
    return _error(500, f"{type(exc).__name__}: {exc}")


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s", request.url.path)
    return _error(500, f"internal error ({type(exc).__name__}); the server log has the details")


def create_app(runtime: Any, index: Any = None, limits: Limits | None = None, cors_origins: tuple[str, ...] = (),
               workers: int = 4) -> Starlette:
    """The ASGI app over `runtime` (a loaded CLIPRuntime) and `index` (what clipedge.runtime.library.open_index
    returned, or None: /search then answers 503). `cors_origins`: origins whose pages may call the API from a
    browser (the `clipedge web` page served elsewhere); none by default, so other sites' pages cannot."""
    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/ping", ping, methods=["GET"]),
        Route("/embed/text", embed_text, methods=["POST"]),
        Route("/embed/image", embed_image, methods=["POST"]),
        Route("/classify", classify, methods=["POST"]),
        Route("/search", search, methods=["POST"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
    ]
    middleware = [Middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                             allow_headers=["Content-Type"], max_age=600)] if cors_origins else []
    handlers: dict[Any, Any] = {ApiError: _api_error, HTTPException: _http_error, ClipEdgeError: _clipedge_error,
                                Exception: _unexpected}
    app = Starlette(routes=routes, middleware=middleware, exception_handlers=handlers)
    app.state.service = Service(runtime, index, limits or Limits(), workers)
    return app
